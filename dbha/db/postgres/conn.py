"""PostgreSQL driver plumbing: settings, bounded sessions, tools, error mapping.

Shared by ``dbha.db.postgres.driver`` (the SQL verbs) and ``dbha.db.postgres.rejoin`` (the
verbs that rewrite a data directory). Everything that can raise a foreign
exception (psycopg, OSError, subprocess) is funnelled through ``map_error``.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerr
from psycopg.rows import dict_row

from dbha.db.base import DbCommandFailed, DbError, DbTimeout, DbUnreachable
from dbha.db.kept import KeptSession
from dbha.errors import CommandFailed, CommandTimeout

ENGINE = "postgresql"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# libpq (and psycopg) never wait less than this for a connection to open.
CONNECT_FLOOR = 2.0
# After the deadline, a watchdog cuts a session's socket; this is its grace.
CUT_GRACE = 0.5
POLL = 0.02

Row = dict[str, Any]
Conn = psycopg.Connection[Row]
_T = TypeVar("_T")

_SLOT_RE = re.compile(r"^[a-z0-9_]{1,63}$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def setpriv_prefix(os_user: str) -> tuple[str, ...]:
    """How to run a server-side tool as ``os_user`` (the production default)."""
    return ("setpriv", "--reuid", os_user, "--regid", os_user, "--init-groups", "--")


@dataclass(frozen=True, slots=True)
class PgSettings:
    """Everything the PostgreSQL driver needs to know about ONE local server.

    ``host`` is a host name/address or a unix socket directory; the driver logs in
    as ``user`` (a superuser) with the password read from ``password_file`` (the
    password alone on its first line). Server-side tools run as
    ``tool_prefix + argv`` with exactly ``tool_env``. ``start_argv`` starts the
    server and must wait until it accepts connections (``pg_ctl start -w``);
    ``stop_argv`` stops it, with ``{mode}`` replaced by fast or immediate.
    A replica follows its upstream as ``replication_user`` with the pgpass-format
    ``replication_passfile`` (readable by ``os_user``), through the physical slot
    named ``node_name`` on the upstream (also its application_name).
    ``work_dir`` (default: the data directory's parent, writable by ``os_user``)
    holds short-lived passfiles and the directories a rejoin sets aside.
    ``rejoin_copy_before_rewind`` keeps a full copy of the data directory before
    pg_rewind (otherwise only the diverged WAL is kept aside).
    ``peer_name`` is the other node's ``node_name`` (its application_name as a
    standby): synchronous commit waits for it (``set_synchronous``).
    """

    node_name: str
    data_dir: Path
    host: str
    password_file: Path
    replication_passfile: Path
    port: int = 5432
    user: str = "dbha"
    dbname: str = "postgres"
    bin_dir: Path = PG_BIN
    os_user: str = "postgres"
    tool_prefix: tuple[str, ...] = setpriv_prefix("postgres")
    tool_env: Mapping[str, str] = field(
        default_factory=lambda: {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    )
    start_argv: tuple[str, ...] | None = None
    stop_argv: tuple[str, ...] | None = None
    log_file: Path | None = None  # pg_ctl -l for the default start_argv
    replication_user: str = "replicator"
    replication_connect_timeout: int = 2
    work_dir: Path | None = None
    rejoin_copy_before_rewind: bool = False
    peer_name: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not _SLOT_RE.match(self.node_name):
            problems.append(
                f"node_name {self.node_name!r} must be a valid slot name: 1-63 of [a-z0-9_]"
            )
        if not 0 < self.port < 65536:
            problems.append(f"port {self.port} is out of range")
        for name in ("data_dir", "password_file", "replication_passfile", "bin_dir"):
            if not Path(getattr(self, name)).is_absolute():
                problems.append(f"{name} must be an absolute path")
        if self.peer_name is not None and not _SLOT_RE.match(self.peer_name):
            problems.append(
                f"peer_name {self.peer_name!r} must be a valid slot name: 1-63 of [a-z0-9_]"
            )
        if self.peer_name == self.node_name:
            problems.append("peer_name must differ from node_name")
        if not self.host:
            problems.append("host must not be empty")
        if self.stop_argv is not None and not any("{mode}" in a for a in self.stop_argv):
            problems.append("stop_argv must contain {mode}")
        if self.replication_connect_timeout < 1:
            problems.append("replication_connect_timeout must be >= 1")
        if problems:
            raise ValueError("invalid PostgreSQL settings: " + "; ".join(problems))

    @property
    def slot(self) -> str:
        return self.node_name

    def sync_standby_names(self) -> str | None:
        """The ``synchronous_standby_names`` that makes commits wait for the peer:
        both node names, sorted, so that the value is the same on both nodes (it
        travels in postgresql.auto.conf with pg_rewind and pg_basebackup) and right
        whichever one is primary: a primary is never its own standby. None without
        ``peer_name``."""
        if self.peer_name is None:
            return None
        names = ", ".join(f'"{n}"' for n in sorted({self.node_name, self.peer_name}))
        return f"FIRST 1 ({names})"

    def workdir(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.data_dir.parent

    def start_command(self, timeout: float) -> list[str]:
        if self.start_argv is not None:
            return list(self.start_argv)
        log = self.log_file or self.workdir() / "postgresql-dbha.log"
        return [
            str(self.bin_dir / "pg_ctl"),
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(log),
            "-w",
            "-t",
            str(max(1, math.ceil(timeout))),
        ]

    def stop_command(self, mode: str, timeout: float) -> list[str]:
        if self.stop_argv is not None:
            return [a.replace("{mode}", mode) for a in self.stop_argv]
        return [
            str(self.bin_dir / "pg_ctl"),
            "stop",
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            str(max(1, math.ceil(timeout))),
        ]


# ------------------------------------------------------------------ positions


def parse_lsn(text: object) -> int | None:
    """``'16/B374D848'`` -> int; None for None or anything that is not an LSN."""
    if not isinstance(text, str):
        return None
    m = _LSN_RE.match(text.strip())
    if m is None:
        return None
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def walfile_timeline(name: object) -> int | None:
    """The timeline of a WAL segment or history file name; None if it is neither."""
    if not isinstance(name, str):
        return None
    if re.fullmatch(r"[0-9A-F]{24}", name) or re.fullmatch(r"[0-9A-F]{8}\.history", name):
        return int(name[:8], 16)
    return None


def walfile_segno(name: str, segment_size: int) -> int | None:
    """The segment number of a WAL segment file name (None for other names)."""
    if not re.fullmatch(r"[0-9A-F]{24}", name) or segment_size <= 0:
        return None
    return int(name[8:16], 16) * (0x100000000 // segment_size) + int(name[16:24], 16)


# ---------------------------------------------------------------------- errors


def _last_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def map_error(exc: BaseException, what: str, timed_out: bool = False) -> DbError:
    """Translate a foreign exception into the ``DbError`` family (never raises)."""
    if isinstance(exc, DbError):
        return exc
    detail = f"{what}: {_last_line(exc)}"
    if timed_out:
        return DbTimeout(f"{what}: no answer before the deadline ({_last_line(exc)})")
    if isinstance(
        exc,
        (
            pgerr.ConnectionTimeout,
            pgerr.CancellationTimeout,
            pgerr.QueryCanceled,
            pgerr.LockNotAvailable,
            CommandTimeout,
            TimeoutError,
            subprocess.TimeoutExpired,
        ),
    ):
        return DbTimeout(detail)
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, ConnectionError)):
        return DbUnreachable(detail)
    if isinstance(exc, (CommandFailed, subprocess.SubprocessError)):
        return DbCommandFailed(detail)
    return DbError(detail)


# -------------------------------------------------------------------- deadline


class Deadline:
    """A verb's time budget, started when the verb starts."""

    def __init__(self, timeout: float, what: str) -> None:
        if not timeout > 0:
            raise DbError(f"{what}: timeout must be positive, not {timeout!r}")
        self.what = what
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def left(self, minimum: float = 0.05) -> float:
        """Seconds left; DbTimeout when less than ``minimum`` is left."""
        rest = self.remaining()
        if rest < minimum:
            raise DbTimeout(f"{self.what}: not done within {self.timeout:g} s")
        return rest


# --------------------------------------------------------------------- session


def read_password(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as exc:
        raise DbError(f"cannot read password file {path}: {exc.strerror or exc}") from exc


class _Watchdog:
    """Cuts a session's socket if it is still open at the deadline, so a frozen
    server (which never answers and never times out a statement itself) cannot hold
    a verb past its bound."""

    def __init__(self, conn: Conn, after: float) -> None:
        self.conn = conn
        self.fired = False
        self._lock = threading.Lock()
        self._closed = False
        self._timer = threading.Timer(max(0.0, after), self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                fd = self.conn.pgconn.socket
                with socket.socket(fileno=os.dup(fd)) as s:
                    s.shutdown(socket.SHUT_RDWR)
                self.fired = True
            except (OSError, psycopg.Error):
                pass

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            self.conn.close()


@contextmanager
def session(s: PgSettings, deadline: Deadline, dbname: str | None = None) -> Iterator[Conn]:
    """A fresh autocommit session to the local server, bounded by ``deadline``:
    connect_timeout, statement_timeout and lock_timeout come from what is left, and
    a watchdog cuts the socket at the deadline. Errors come out as ``DbError``."""
    rest = deadline.left()
    ms = max(1, int(rest * 1000))
    watchdog: _Watchdog | None = None
    try:
        conn: Conn = psycopg.connect(
            host=s.host,
            port=s.port,
            user=s.user,
            password=read_password(s.password_file),
            dbname=dbname or s.dbname,
            connect_timeout=max(int(CONNECT_FLOOR), math.ceil(rest)),
            application_name="dbha",
            options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
            autocommit=True,
            row_factory=dict_row,
        )
        watchdog = _Watchdog(conn, deadline.remaining() + CUT_GRACE)
        yield conn
    except (psycopg.Error, OSError) as exc:
        fired = watchdog is not None and watchdog.fired
        raise map_error(exc, deadline.what, timed_out=fired) from exc
    finally:
        if watchdog is not None:
            watchdog.close()


def _cut(conn: Conn) -> bool:
    """Shut a session's socket down (both ways); True if it was done."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as s:
            s.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        return False
    return True


class _Cutter:
    """``_Watchdog`` for the probe's kept session, as one long-lived thread.

    ``arm`` before a use, ``disarm`` after it; a use still armed at its time has
    its socket cut. Neither call wakes the thread: it sleeps until the time it
    last saw and then looks at the current arming (later uses only move the time
    later), so while probes run it wakes about once per probe timeout, where a
    timer thread per probe would cost a thread start and a wake-up each time. A
    cut happens under the lock that ``disarm`` takes, so a session is never
    closed (and its descriptor reused) while it is being cut.
    """

    IDLE = 60.0  # bound on one wait while nothing is armed

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: tuple[int, Conn, float] | None = None  # (use, session, cut at)
        self._uses = 0
        self._fired = 0  # the last use whose socket was cut
        self._until: float | None = None  # what the thread sleeps until (None: idle)
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, conn: Conn, at: float) -> int:
        """Cut ``conn`` at ``at`` (monotonic) unless disarmed first; the use's number."""
        with self._cond:
            self._uses += 1
            self._armed = (self._uses, conn, at)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dbha-db-cut", daemon=True)
                self._thread.start()
            elif self._until is None or at < self._until:
                self._cond.notify()
            return self._uses

    def disarm(self, use: int) -> bool:
        """Stand down for ``use``; True if its socket was cut."""
        with self._cond:
            if self._armed is not None and self._armed[0] == use:
                self._armed = None
            return self._fired == use

    def close(self) -> None:
        """Let the thread end once nothing is armed (a use in flight keeps its bound)."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not (self._closed and self._armed is None):
                armed = self._armed
                if armed is None:
                    self._until = None
                    self._cond.wait(self.IDLE)
                    continue
                use, conn, at = armed
                left = at - time.monotonic()
                if left > 0:
                    self._until = at
                    self._cond.wait(left)
                    continue
                if _cut(conn):
                    self._fired = use
                self._armed = None


class ProbeLink(KeptSession[Conn, Deadline]):
    """The probe's one long-lived session to the local server.

    A new authenticated session per probe costs a SCRAM login (most of a probe's
    CPU); this keeps one session and runs every probe on it. Only ``run`` (called
    by ``PostgresDriver.probe`` with its read-only queries) ever sees it: no other
    verb uses it. Every use is bounded like a fresh session: the server's
    statement and lock timeouts (the probe's budget, set when it connects) and a
    watchdog that cuts the socket at the deadline, so a frozen server cannot hold
    a probe past its timeout (plus ``CUT_GRACE``). Any error drops the session
    (closed, never used again); the next use connects anew, and a use whose
    reused session turns out to be gone (DbUnreachable: a restarted server, or a
    fence that ended it) connects anew at once, within the same budget.

    Settings are read per statement: a server-wide change (ALTER SYSTEM + reload,
    as the soft fence does) reaches a long-lived backend before it runs its next
    command, so ``current_setting`` on this session says what a new session
    would. Thread-safe (one use at a time); ``close`` ends the session (the
    protocol is :class:`dbha.db.kept.KeptSession`'s).
    """

    def __init__(self, s: PgSettings) -> None:
        super().__init__()
        self._s = s
        self._cutter: _Cutter | None = None

    def run(self, deadline: Deadline, observe: Callable[[Conn], _T]) -> _T:
        """``observe(conn)`` on the kept session (connecting if there is none), within
        ``deadline``. Errors come out as ``DbError``; after one, no session is kept."""
        return self._run(deadline, deadline.what, observe)

    def _open(self, deadline: Deadline, what: str) -> Conn:
        rest = deadline.left()
        ms = max(1, int(deadline.timeout * 1000))
        try:
            conn: Conn = psycopg.connect(
                host=self._s.host,
                port=self._s.port,
                user=self._s.user,
                password=read_password(self._s.password_file),
                dbname=self._s.dbname,
                connect_timeout=max(int(CONNECT_FLOOR), math.ceil(rest)),
                application_name="dbha-probe",
                options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
                autocommit=True,
                row_factory=dict_row,
            )
        except (psycopg.Error, OSError) as exc:
            raise map_error(exc, what) from exc
        return conn

    def _use(
        self, conn: Conn, deadline: Deadline, observe: Callable[[Conn], _T]
    ) -> tuple[_T, bool]:
        if self._cutter is None:
            self._cutter = _Cutter()
        cutter = self._cutter
        use = cutter.arm(conn, deadline.end + CUT_GRACE)
        try:
            out = observe(conn)
        except BaseException as exc:
            fired = cutter.disarm(use)
            self._discard(conn)
            if isinstance(exc, (psycopg.Error, OSError)):
                raise map_error(exc, deadline.what, timed_out=fired) from exc
            raise
        fired = cutter.disarm(use)
        return out, not (fired or conn.closed or conn.broken)

    def _discard(self, conn: Conn) -> None:
        with suppress(psycopg.Error, OSError):
            conn.close()

    def _detach(self) -> Callable[[], None] | None:
        cutter, self._cutter = self._cutter, None
        return None if cutter is None else cutter.close


def one(conn: Conn, query: Any, params: Sequence[Any] | None = None) -> Row:
    """Run a query that returns exactly one row."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise DbError(f"query returned no row: {str(query)[:60]}")
    return row
