"""A client for fault tests: it writes through a service's VIP and records every
acknowledged commit, and a verifier that checks them afterwards.

Run inside the client host::

    ip netns exec PREFIX-c python -m dbha.lab.client --service pg \\
        --password-file /var/lib/dbha-lab/PREFIX/secrets/pg-app.password \\
        --out /tmp/pg.jsonl --duration 30 [--address 198.18.0.11]

It connects as the application user (the password is read from the file
whose PATH it is given, never passed as a value), and writes one row per
transaction in a tight loop: a run id, a client-side sequence number and a
random token. Every connect and every transaction is bounded; on any failure
it drops the connection and connects again. It appends one JSON line per
event to ``--out``, with a ``time.monotonic()`` timestamp (comparable with
the monotonic clock of any process on the machine, the test's included):

- ``start``: run id, engine, address, port; ``connect``: which node answered;
- ``ack``: seq, token, node: the commit returned OK (an acknowledged write);
- ``fail``: seq (None for a connect), phase (connect, write or commit), error.
  A failed ``commit`` has an unknown outcome: the row may or may not exist;
- ``stop``: why (duration or signal), counts.

It ends after ``--duration`` seconds or at SIGTERM/SIGINT. The verifier
(:func:`verify`) then checks that every acknowledged row is on the current
primary and, once they caught up, on the replicas; the pure helpers
(:func:`pauses`, :func:`recovery`, :func:`outage`, :func:`missing_rows`)
compute the longest write pause and the time from a fault's injection to the
first write acknowledged after it took effect. They live in
:mod:`dbha.lab.clientlog` and are re-exported here, so that a test needs
this one module.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from dbha.lab import topology as topo
from dbha.lab.clientlog import (
    TABLE,
    Ack,
    ClientLog,
    ClientVerdict,
    Failure,
    Pause,
    effect_at,
    first_ack_after,
    longest_pause,
    missing_rows,
    node_changes,
    outage,
    parse_log,
    pauses,
    read_log,
    recovery,
    rows_on,
    verify,
    wait_for,
)

# MariaDB server ids -> node (dbha.lab.maria.SERVER_IDS; a unit test keeps them equal)
_SERVER_NODES = {1: "a", 2: "b"}

if TYPE_CHECKING:
    from dbha.lab.core import Lab

__all__ = [
    "TABLE",
    "Ack",
    "ClientError",
    "ClientLog",
    "ClientVerdict",
    "Failure",
    "Pause",
    "Recorder",
    "Target",
    "effect_at",
    "first_ack_after",
    "longest_pause",
    "missing_rows",
    "node_changes",
    "outage",
    "parse_log",
    "pauses",
    "read_log",
    "recovery",
    "rows_on",
    "start_client",
    "stop_client",
    "verify",
    "wait_for",
    "write_loop",
]

CONNECT_TIMEOUT = 0.5  # TCP connect; PostgreSQL's own handshake bound is 2 s at least
STATEMENT_TIMEOUT = 1.0  # one insert + commit
RETRY_PAUSE = 0.05  # after a failure, so that a refused connect does not spin
MAX_DURATION = 3600.0
ERROR_CHARS = 300

# ------------------------------------------------------------------- writer


class ClientError(Exception):
    def __init__(self, phase: str, error: BaseException | str) -> None:
        text = str(error).strip().replace("\n", " ")
        if isinstance(error, BaseException) and not text:
            text = type(error).__name__
        super().__init__(text[:ERROR_CHARS])
        self.phase = phase


@dataclass(frozen=True, slots=True)
class Target:
    engine: str  # postgresql | mariadb
    address: str
    port: int
    database: str
    user: str
    password_file: Path
    connect_timeout: float = CONNECT_TIMEOUT
    statement_timeout: float = STATEMENT_TIMEOUT


class Session(Protocol):
    node: str

    def write(self, run: str, seq: int, token: str) -> str | None:
        """Insert one row and commit; the server's notice, if any. Raises ClientError."""

    def close(self) -> None: ...


def _password(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as exc:
        raise ClientError("connect", f"cannot read {path}: {exc.strerror or exc}") from exc


def _tcp_probe(address: str, port: int, timeout: float) -> None:
    """A bounded TCP connect first: a VIP that nobody answers fails fast here."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ClientError("connect", f"{address}:{port}: {exc.strerror or exc}") from exc


class _Watchdog:
    """Cuts the connection's socket when a transaction outlives its bound: a frozen
    server never answers and never times out by itself. One thread per
    connection; arming costs a lock, not a thread."""

    def __init__(self, fileno: Callable[[], int]) -> None:
        self._fileno = fileno
        self._deadline: float | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.fired = False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def arm(self, seconds: float) -> None:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=1.0)

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._deadline is None:
                    self._cond.wait(1.0)
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._deadline = None
                with contextlib.suppress(OSError, ValueError):
                    with socket.socket(fileno=os.dup(self._fileno())) as s:
                        s.shutdown(socket.SHUT_RDWR)
                    self.fired = True


class _PgSession:
    def __init__(self, t: Target, create_table: bool) -> None:
        import psycopg

        self._psycopg = psycopg
        _tcp_probe(t.address, t.port, t.connect_timeout)
        self.statement_timeout = t.statement_timeout
        self._notices: list[str] = []
        try:
            self.conn = psycopg.connect(
                host=t.address,
                port=t.port,
                user=t.user,
                password=_password(t.password_file),
                dbname=t.database,
                connect_timeout=max(2, math.ceil(t.connect_timeout)),
                application_name="dbha-lab-client",
                autocommit=True,
            )
        except psycopg.Error as exc:
            raise ClientError("connect", exc) from exc
        self.watchdog = _Watchdog(self._fileno)
        try:
            self.watchdog.arm(t.statement_timeout + t.connect_timeout)
            row = self.conn.execute(
                "SELECT coalesce(current_setting('dbha_lab.node', true), "
                "current_setting('cluster_name'))"
            ).fetchone()
            self.node = str(row[0]) if row else "?"
            if create_table:
                self.conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (run text NOT NULL, seq bigint NOT NULL, "
                    "token text NOT NULL, written_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (run, seq))"
                )
            self.watchdog.disarm()
            self.conn.autocommit = False
        except psycopg.Error as exc:
            self.close()
            raise ClientError("connect", exc) from exc
        self.conn.add_notice_handler(lambda d: self._notices.append(str(d.message_primary)))

    def _fileno(self) -> int:
        try:
            return int(self.conn.pgconn.socket)
        except self._psycopg.Error:
            return -1  # closed already: nothing to cut

    def write(self, run: str, seq: int, token: str) -> str | None:
        psycopg = self._psycopg
        phase = "write"
        self._notices.clear()
        self.watchdog.arm(self.statement_timeout)
        try:
            self.conn.execute(
                f"INSERT INTO {TABLE} (run, seq, token) VALUES (%s, %s, %s)", (run, seq, token)
            )
            phase = "commit"
            self.conn.commit()
        except psycopg.Error as exc:
            if self.watchdog.fired:
                raise ClientError(phase, f"no answer within {self.statement_timeout:g} s") from exc
            raise ClientError(phase, exc) from exc
        finally:
            self.watchdog.disarm()
        return "; ".join(self._notices) or None

    def close(self) -> None:
        self.watchdog.close()
        with contextlib.suppress(Exception):
            self.conn.close()


class _MariaSession:
    def __init__(self, t: Target, create_table: bool) -> None:
        import pymysql

        self._pymysql = pymysql
        try:
            # PyMySQL's socket timeouts bound every read and write of a transaction.
            self.conn = pymysql.connect(
                host=t.address,
                port=t.port,
                user=t.user,
                password=_password(t.password_file),
                database=t.database,
                connect_timeout=t.connect_timeout,
                read_timeout=t.statement_timeout,
                write_timeout=t.statement_timeout,
                autocommit=True,
            )
        except (pymysql.MySQLError, OSError) as exc:
            raise ClientError("connect", exc) from exc
        try:
            with self.conn.cursor() as cur:
                # the operator's pair sets no report_host: its server id names the node
                cur.execute("SELECT @@report_host, @@server_id")
                row = cur.fetchone()
                self.node = (
                    (str(row[0]) if row[0] else _SERVER_NODES.get(row[1], "?")) if row else "?"
                )
                if create_table:
                    cur.execute(
                        f"CREATE TABLE IF NOT EXISTS {TABLE} (run VARCHAR(32) NOT NULL, "
                        "seq BIGINT NOT NULL, token VARCHAR(64) NOT NULL, "
                        "written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
                        "PRIMARY KEY (run, seq)) ENGINE=InnoDB"
                    )
            self.conn.autocommit(False)
        except (pymysql.MySQLError, OSError) as exc:
            self.close()
            raise ClientError("connect", exc) from exc

    def write(self, run: str, seq: int, token: str) -> str | None:
        pymysql = self._pymysql
        phase = "write"
        try:
            with self.conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {TABLE} (run, seq, token) VALUES (%s, %s, %s)",
                    (run, seq, token),
                )
            phase = "commit"
            self.conn.commit()
        except (pymysql.MySQLError, OSError) as exc:
            raise ClientError(phase, exc) from exc
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def connect(t: Target, create_table: bool) -> Session:
    if t.engine == "postgresql":
        return _PgSession(t, create_table)
    return _MariaSession(t, create_table)


class Recorder:
    """One JSON object per line, written through at once (a kill loses nothing
    that was recorded)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, kind: str, **fields: Any) -> None:
        rec = {"kind": kind, "t": time.monotonic(), **fields}
        self.out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.out.flush()


@dataclass
class Counts:
    acks: int = 0
    fails: int = 0
    seq: int = 0


def write_loop(
    t: Target,
    record: Recorder,
    duration: float,
    stop: threading.Event,
    connector: Callable[[Target, bool], Session] = connect,
    pause: float = 0.0,
) -> Counts:
    """Write until ``duration`` has passed or ``stop`` is set; record every outcome.
    A write is recorded as acknowledged only once its commit returned; a failed
    one uses up its sequence number (its row may exist) and the connection."""
    run = secrets.token_hex(6)
    record("start", run=run, engine=t.engine, address=t.address, port=t.port, wall=time.time())
    deadline = time.monotonic() + min(duration, MAX_DURATION)
    counts = Counts()
    session: Session | None = None
    table_ready = False
    while not stop.is_set() and time.monotonic() < deadline:
        if session is None:
            try:
                session = connector(t, not table_ready)
            except ClientError as exc:
                counts.fails += 1
                record("fail", seq=None, phase=exc.phase, error=str(exc))
                stop.wait(RETRY_PAUSE)
                continue
            table_ready = True
            record("connect", node=session.node)
        counts.seq += 1
        token = secrets.token_hex(8)
        try:
            notice = session.write(run, counts.seq, token)
        except ClientError as exc:
            counts.fails += 1
            record("fail", seq=counts.seq, phase=exc.phase, error=str(exc))
            session.close()
            session = None
            stop.wait(RETRY_PAUSE)
            continue
        counts.acks += 1
        if notice is None:
            record("ack", seq=counts.seq, token=token, node=session.node)
        else:
            record("ack", seq=counts.seq, token=token, node=session.node, notice=notice)
        if pause > 0:
            stop.wait(pause)
    if session is not None:
        session.close()
    record(
        "stop",
        reason="signal" if stop.is_set() else "duration",
        acks=counts.acks,
        fails=counts.fails,
    )
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbha.lab.client",
        description="Write through a lab service's VIP; record every acknowledged commit.",
    )
    parser.add_argument("--service", required=True, choices=sorted(topo.SERVICES))
    parser.add_argument("--password-file", required=True, type=Path, help="the app password")
    parser.add_argument("--out", required=True, type=Path, help="JSON lines, appended")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (at most 3600)")
    parser.add_argument("--address", help="connect here instead of the service's VIP")
    parser.add_argument("--port", type=int, help="and to this port (default: the service's)")
    parser.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT)
    parser.add_argument("--statement-timeout", type=float, default=STATEMENT_TIMEOUT)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between writes")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION:g}]")
    if not (0 < args.connect_timeout <= 60 and 0 < args.statement_timeout <= 60):
        parser.error("timeouts must be in (0, 60] seconds")
    if not 0 <= args.pause <= 10:
        parser.error("--pause must be in [0, 10] seconds")
    svc = topo.SERVICES[args.service]
    target = Target(
        engine=svc.engine,
        address=args.address or svc.vip,
        port=args.port or svc.port,
        database=svc.database,
        user=svc.app_user,
        password_file=args.password_file,
        connect_timeout=args.connect_timeout,
        statement_timeout=args.statement_timeout,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with open(args.out, "a", encoding="utf-8") as out:
        counts = write_loop(target, Recorder(out), args.duration, stop, pause=args.pause)
    print(f"{counts.acks} acknowledged writes, {counts.fails} failures", flush=True)
    return 0


# ----------------------------------------------------------- test-side helpers


def start_client(
    lab: Lab,
    service: str,
    out: Path,
    duration: float,
    address: str | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start the client in host c of ``lab``, writing to ``service``; its output
    (a summary line, or an error) goes to ``out`` + ``.stdout``."""
    argv = [
        sys.executable,
        "-m",
        "dbha.lab.client",
        "--service",
        service,
        "--password-file",
        str(lab.layout.secret_path(f"{service}-{topo.SERVICES[service].app_user}")),
        "--out",
        str(out),
        "--duration",
        str(duration),
        *(["--address", address] if address else []),
        *extra,
    ]
    with open(out.with_name(out.name + ".stdout"), "ab") as log:
        return subprocess.Popen(
            lab.exec_argv("c", argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def stop_client(client: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM the client and wait (bounded) for it; SIGKILL if it does not end."""
    if client.poll() is None:
        client.send_signal(signal.SIGTERM)
    try:
        return client.wait(timeout)
    except subprocess.TimeoutExpired:
        client.kill()
        return client.wait(5.0)


if __name__ == "__main__":
    sys.exit(main())
