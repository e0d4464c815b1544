"""The MySQL/MariaDB driver's boundary: settings, bounded sessions, and the one
place where PyMySQL, OS and subprocess exceptions become dbha's.

Every wait is bounded by the verb's :class:`Deadline`: the connect timeout, the
socket read/write timeouts (re-armed before each statement to what is left),
the server's own statement and lock timeouts (and, in :mod:`dbha.db.mysql.tools`,
the tools' run time). Passwords are read from files when needed and sent only
over the SQL connection or in a 0600 option file; never on a command line,
never in the environment, never in a message (:func:`redact`).
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pymysql
import pymysql.connections
import pymysql.cursors

from dbha.db.base import DbCommandFailed, DbError, DbTimeout, DbUnreachable
from dbha.db.kept import KeptSession
from dbha.db.mysql.flavour import Flavour, detect
from dbha.db.mysql.rows import ReplicaRow
from dbha.errors import CommandFailed, CommandTimeout

ENGINES = ("mariadb", "mysql")
_T = TypeVar("_T")


# Seconds a replica's receiver waits between reconnection attempts, as dbha sets it.
CONNECT_RETRY = 1


@dataclass(frozen=True, slots=True)
class MysqlSettings:
    """How to reach and act on one MySQL/MariaDB server. Validated on construction.

    ``host`` or ``socket`` (exactly one) reach the local server; ``user`` with the
    password in ``password_file`` is the supervisor's account (all privileges;
    the same account on the peer, which rejoin reads). ``repl_user`` and its
    password file go into CHANGE MASTER. ``tool_prefix`` is prepended to every
    client tool's argv (e.g. ``["ip", "netns", "exec", NS]``); ``stop_argv`` and
    ``start_argv`` stop/start the server (hard fence; empty: SQL ``SHUTDOWN``,
    and no start). Rejoin keeps what it sets aside under ``aside_dir``.
    """

    name: str
    engine: str = "mariadb"
    host: str | None = None
    socket: str | None = None
    port: int = 3306
    user: str = "dbha"
    password_file: str | None = None
    database: str | None = None
    repl_user: str = "repl"
    repl_password_file: str | None = None
    tool_prefix: tuple[str, ...] = ()
    stop_argv: tuple[str, ...] = ()
    start_argv: tuple[str, ...] = ()
    aside_dir: str = "/var/lib/dbha/aside"
    connect_timeout: float = 2.0  # cap on connecting, within each verb's own timeout
    connect_retry: int = CONNECT_RETRY  # MASTER_CONNECT_RETRY / SOURCE_CONNECT_RETRY
    heartbeat_period: float = 1.0  # replication heartbeat, seconds

    def __post_init__(self) -> None:
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if (self.host is None) == (self.socket is None):
            problems.append("exactly one of host and socket must be given")
        if not 0 < self.port < 65536:
            problems.append(f"port {self.port} is out of range")
        for label, path in (
            ("password_file", self.password_file),
            ("repl_password_file", self.repl_password_file),
            ("socket", self.socket),
            ("aside_dir", self.aside_dir),
        ):
            if path is not None and not os.path.isabs(path):
                problems.append(f"{label} must be an absolute path: {path!r}")
        if self.connect_timeout <= 0 or self.heartbeat_period <= 0 or self.connect_retry < 1:
            problems.append("connect_timeout, heartbeat_period and connect_retry must be > 0")
        if problems:
            raise ValueError(f"MySQL driver settings for {self.name!r}: " + "; ".join(problems))


class Deadline:
    """The end of one verb's time budget (monotonic)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def left(self, what: str) -> float:
        """Seconds left; raises DbTimeout when there are none."""
        left = self.remaining()
        if left <= 0:
            raise DbTimeout(f"{what}: out of time (budget {self.timeout:g} s)")
        return left


# ----------------------------------------------------------------- error mapping

TIMEOUT_CODES = frozenset({1205, 1969, 3024})  # lock wait, max_statement_time, max_execution_time
UNREACHABLE_CODES = frozenset(
    {1040, 1045, 1053, 1129, 1130, 1251, 1927, 2002, 2003, 2005, 2006, 2013, 2055, 4031}
)
# What the boundary translates. Anything else is a bug in dbha and propagates.
MAPPED: tuple[type[BaseException], ...] = (
    pymysql.MySQLError,
    OSError,
    subprocess.SubprocessError,
    CommandFailed,
    CommandTimeout,
    struct.error,  # PyMySQL reading a malformed packet
    EOFError,
    UnicodeError,
)


LOST_CODES = frozenset({2006, 2013})


def error_code(exc: BaseException) -> int:
    """The server's or client library's error number of a PyMySQL error (0 if none)."""
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0


def redact(message: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def _timed_out(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError | subprocess.TimeoutExpired):
            return True
        original = getattr(seen, "original_exception", None)
        if isinstance(original, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def map_error(exc: BaseException, what: str, secrets: Sequence[str] = ()) -> DbError:
    """dbha's error for a library exception; the message never holds a secret."""
    if isinstance(exc, DbError):
        return exc
    if isinstance(exc, pymysql.MySQLError):
        code = error_code(exc)
        detail = exc.args[1] if len(exc.args) > 1 else (exc.args[0] if exc.args else "")
        msg = redact(f"{what}: ({code}) {detail}", secrets)
        if code in TIMEOUT_CODES or (code in (2003, 2013) and _timed_out(exc)):
            return DbTimeout(msg)
        if code in UNREACHABLE_CODES or isinstance(exc, pymysql.err.InterfaceError):
            return DbUnreachable(msg)
        return DbError(msg)
    if isinstance(exc, CommandTimeout | subprocess.TimeoutExpired | TimeoutError):
        return DbTimeout(redact(f"{what}: {exc}", secrets))
    if isinstance(exc, CommandFailed | subprocess.SubprocessError):
        return DbCommandFailed(redact(f"{what}: {exc}", secrets))
    if isinstance(exc, ConnectionError):
        return DbUnreachable(redact(f"{what}: {exc.strerror or exc}", secrets))
    if isinstance(exc, OSError):
        return DbError(redact(f"{what}: {exc.strerror or exc}", secrets))
    return DbError(redact(f"{what}: unexpected answer ({type(exc).__name__}: {exc})", secrets))


@contextlib.contextmanager
def boundary(what: str, secrets: Sequence[str] = ()) -> Iterator[None]:
    """Translate every library exception raised inside into a DbError."""
    try:
        yield
    except MAPPED as exc:
        raise map_error(exc, what, secrets) from exc


class ReplicationStopped(DbError):
    """Replication was started and stopped on an error (``row`` says which)."""

    def __init__(self, message: str, row: ReplicaRow) -> None:
        super().__init__(message)
        self.row = row


def read_secret(path: str | None, what: str) -> str:
    """The password in ``path`` (trailing newline removed); "" when there is no file."""
    if path is None:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except (OSError, UnicodeError) as exc:
        raise DbError(f"{what}: cannot read password file {path}: {exc}") from exc


# --------------------------------------------------------------------- sessions


if TYPE_CHECKING:  # generic only in the type stubs
    _Base = pymysql.connections.Connection[pymysql.cursors.DictCursor]
else:
    _Base = pymysql.connections.Connection


class _Connection(_Base):
    def bound(self, seconds: float) -> None:
        """Bound the next socket reads and writes (PyMySQL re-arms them per packet)."""
        self._read_timeout = seconds
        self._write_timeout = seconds

    def version_text(self) -> str:
        """The version from the server's greeting (no round trip)."""
        return str(getattr(self, "server_version", "") or "")

    def connection_id(self) -> int | None:
        tid = getattr(self, "server_thread_id", None)
        return int(tid[0]) if isinstance(tid, tuple) and tid else None


class Session:
    """One connection for one verb; every statement is bounded by the deadline."""

    def __init__(self, settings: MysqlSettings, deadline: Deadline, what: str) -> None:
        self.what, self.deadline = what, deadline
        password = read_secret(settings.password_file, what)
        left = deadline.left(what)
        with boundary(f"{what}: connect", (password,)):
            self.conn = _Connection(
                host=settings.host,
                unix_socket=settings.socket,
                port=settings.port,
                user=settings.user,
                password=password,
                database=settings.database,
                connect_timeout=max(0.001, min(left, settings.connect_timeout)),
                read_timeout=left,
                write_timeout=left,
                autocommit=True,
                charset="utf8mb4",
                # The driver talks to its local server (socket or loopback); TLS there
                # buys nothing and PyMySQL's opportunistic TLS costs ~20 ms a connect.
                ssl_disabled=True,
                cursorclass=pymysql.cursors.DictCursor,
            )
        try:
            version = self.conn.version_text()
            flavour = detect(version)
            if flavour is None:
                raise DbError(f"{what}: unsupported server version {version!r}")
            self.flavour: Flavour = flavour
            self.version = version.removeprefix("5.5.5-")
            self.id = self.conn.connection_id()
            self.run(flavour.timeouts_sql(deadline.left(what)))
        except BaseException:
            self.close()
            raise

    def rows(
        self,
        sql: str,
        args: tuple[Any, ...] | None = None,
        secrets: Sequence[str] = (),
        ignore: Sequence[int] = (),
        ignore_lost: bool = False,
    ) -> list[dict[str, Any]]:
        """Run one statement, bounded by what is left of the deadline. Server errors
        whose code is in ``ignore`` (and, with ``ignore_lost``, a connection the
        statement itself ended) give no rows instead of an error."""
        self.conn.bound(self.deadline.left(self.what))
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.MySQLError as exc:
            code = error_code(exc)
            if code in ignore or (ignore_lost and code in LOST_CODES):
                return []
            raise map_error(exc, self.what, secrets) from exc
        except MAPPED as exc:
            raise map_error(exc, self.what, secrets) from exc

    def one(self, sql: str, args: tuple[Any, ...] | None = None) -> dict[str, Any] | None:
        rows = self.rows(sql, args)
        return rows[0] if rows else None

    def run(
        self,
        sql: str,
        args: tuple[Any, ...] | None = None,
        secrets: Sequence[str] = (),
        ignore: Sequence[int] = (),
        ignore_lost: bool = False,
    ) -> None:
        self.rows(sql, args, secrets, ignore, ignore_lost)

    def close(self) -> None:
        with contextlib.suppress(*MAPPED):
            self.conn.close()

    def renew(self, deadline: Deadline) -> None:
        """Bound the next statements by ``deadline`` (a kept session's next use)."""
        self.deadline = deadline

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProbeLink(KeptSession[Session, Deadline]):
    """The probe's one long-lived session to the local server.

    A new session per probe costs a login each time; this keeps one and runs every
    probe on it. Only ``MysqlDriver.probe`` uses it (no other verb sees it). Every
    use is bounded like a fresh session: socket read/write timeouts re-armed per
    statement to what is left of the probe's deadline (they hold on a frozen
    server), and the server's statement and lock timeouts (set from the budget
    when it connects). Any error drops the session (closed, never used again);
    the next use connects anew, and a use whose reused session turns out to be
    gone (DbUnreachable: a restarted server, or a fence that ended it) connects
    anew at once, within the same budget. The probe reads global variables and
    status only, which a long-lived session sees as they are now. Thread-safe (one
    use at a time); ``close`` ends the session (the protocol is
    :class:`dbha.db.kept.KeptSession`'s).
    """

    def __init__(self, settings: MysqlSettings) -> None:
        super().__init__()
        self._settings = settings

    def run(self, deadline: Deadline, what: str, observe: Callable[[Session], _T]) -> _T:
        """``observe(session)`` on the kept session (connecting if there is none),
        within ``deadline``. After an error no session is kept."""
        return self._run(deadline, what, observe)

    def _open(self, deadline: Deadline, what: str) -> Session:
        return Session(self._settings, deadline, what)

    def _use(
        self, s: Session, deadline: Deadline, observe: Callable[[Session], _T]
    ) -> tuple[_T, bool]:
        s.renew(deadline)
        try:
            out = observe(s)
        except BaseException:
            s.close()
            raise
        return out, bool(s.conn.open)

    def _discard(self, s: Session) -> None:
        s.close()
