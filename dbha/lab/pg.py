"""The lab's PostgreSQL 15 pair: a primary and a streaming replica.

Servers run as ``postgres`` inside the host namespaces. Config files inside
the data directory are identical on both nodes (pg_basebackup and pg_rewind
copy them); per-node settings go on the postmaster command line.

A pair is built the way dbha wants it (the default: slots and application
names after the node names, wal_log_hints, a superuser for dbha) or, in a lab
made with ``--pairs operator``, as an operator following PostgreSQL's own
documentation would (``dbha.lab.operator``; dbha's role gets docs/grants.md).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout, LabError
from dbha.lab import grants, procs
from dbha.lab import operator as op
from dbha.lab import topology as topo
from dbha.lab.layout import Layout, make_dir, remove_tree, write_owned
from dbha.lab.net import nsexec
from dbha.lab.wait import wait_until

PGBIN = Path("/usr/lib/postgresql/15/bin")
OWNER = "postgres"
SERVICE = topo.SERVICES["pg"]
START_TIMEOUT = 30
WRITE_TIMEOUT = 5.0  # bound on one application write of the lab (write proof, tests)

HBA = """\
# dbha lab: every connection needs a password (scram), local or from the lab network.
local   all          all                         scram-sha-256
host    all          all          198.18.0.0/15  scram-sha-256
host    replication  replicator   198.18.0.0/15  scram-sha-256
"""


def lab_conf(sync: bool) -> str:
    # The same file on both nodes. 'FIRST 1 (a, b)' names both nodes: the
    # primary is never its own standby, so the other one is the synchronous one.
    names = "FIRST 1 (a, b)" if sync else ""
    return f"""\
# dbha lab settings, identical on every node (copied by pg_basebackup / pg_rewind)
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_log_hints = on
hot_standby = on
hot_standby_feedback = on
wal_keep_size = '256MB'
wal_sender_timeout = '5s'
wal_receiver_timeout = '5s'
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '500ms'
synchronous_commit = on
synchronous_standby_names = '{names}'
shared_buffers = '32MB'
max_connections = 60
log_line_prefix = '%m [%p] %q%u@%d '
log_min_error_statement = panic
"""


def lsn_value(text: object) -> int | None:
    """A PostgreSQL LSN (``0/3000148``) as a number; None for NULL or a malformed one."""
    if not isinstance(text, str) or text.count("/") != 1:
        return None
    high, low = text.split("/")
    try:
        return (int(high, 16) << 32) + int(low, 16)
    except ValueError:
        return None


def later_lsn(a: object, b: object) -> object:
    """The later of two LSNs as text (either may be NULL)."""
    va, vb = lsn_value(a), lsn_value(b)
    if va is None or vb is None:
        return a if vb is None else b
    return a if va >= vb else b


def lsn_gap(ahead: object, behind: object) -> int | None:
    """Bytes from ``behind`` up to ``ahead``, never negative; None if either is unknown.

    A standby's receive LSN (``pg_last_wal_receive_lsn``) is where its WAL receiver
    has flushed to in this run: it starts at the segment where streaming started,
    so after a restart, a rewind or a switchover the standby has replayed past it
    (from its own pg_wal) until new WAL arrives, and ``receive - replay`` is
    negative. WAL received but not replayed is then nothing: zero. The primary's
    view of each standby (current LSN less its reported replay LSN) is bounded
    the same way."""
    va, vb = lsn_value(ahead), lsn_value(behind)
    if va is None or vb is None:
        return None
    return max(va - vb, 0)


class PgNode:
    def __init__(self, prefix: str, layout: Layout, host: str, pairs: str | None = None) -> None:
        self.prefix, self.layout, self.host = prefix, layout, host
        # How the pair is built: the lab's choice (its lab.json) unless told.
        self.pairs = op.check_pairs(pairs) if pairs is not None else layout.pairs()
        self.dir = layout.node(host, "pg")
        self.data = self.dir / "data"
        self.run = self.dir / "run"
        self.log = self.dir / "postgresql.log"
        self.passfile = self.dir / "pgpass"
        self.ready_mark = self.dir / "initialized"

    # -- process --------------------------------------------------------------

    def pid(self) -> int | None:
        """The postmaster's PID if it runs (postmaster.pid is the source of truth)."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if procs.alive(pid) else None

    def _as_postgres(self, argv: list[str]) -> list[str]:
        return nsexec(
            self.prefix,
            self.host,
            ["setpriv", "--reuid", OWNER, "--regid", OWNER, "--init-groups", "--", *argv],
        )

    def _env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.dir),
            "PGPASSFILE": str(self.passfile),
        }

    def start(self) -> None:
        """Start the server (no-op if it runs) and wait until it accepts connections."""
        if self.pid() is not None:
            return
        self._clear_stale_lock()
        try:
            proc.run(
                self._as_postgres(self.start_argv()),
                timeout=START_TIMEOUT + 10,
                env=self._env(),
            )
        except (CommandFailed, CommandTimeout) as exc:
            raise LabError(
                f"PostgreSQL on {self.host} did not start: {exc}; see {self.log}"
            ) from exc

    def start_argv(self) -> list[str]:
        """The pg_ctl line that starts this node (per-node settings on the command
        line), without the namespace and user prefix; shared with the driver."""
        # dbha_lab.node: a custom setting nothing but the lab's client reads (any user
        # may), so that it can tell which node served it on either pair.
        opts = (
            f"-c port={SERVICE.port} -c unix_socket_directories={self.run} "
            f"-c dbha_lab.node={self.host}"
        )
        if self.pairs == "dbha":
            opts = f"-c listen_addresses=0.0.0.0 {opts} -c cluster_name={self.host}"
        # operator: listen_addresses and cluster_name ('15/main', the same on both
        # nodes) are in the included settings file, as Debian's cluster has them.
        return [
            str(PGBIN / "pg_ctl"),
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-o",
            opts,
        ]

    def _clear_stale_lock(self) -> None:
        # A killed postmaster can stay a zombie until init reaps it, and
        # PostgreSQL's own check (kill(pid, 0)) takes a zombie for a live server.
        # A dead process holds no lock: its lock file is stale.
        for lock in (self.data / "postmaster.pid", self.run / f".s.PGSQL.{SERVICE.port}.lock"):
            try:
                pid = int(lock.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            if procs.zombie(pid):
                lock.unlink(missing_ok=True)

    def stop(self, mode: str = "fast") -> None:
        if self.pid() is None:
            return
        proc.run(
            self._as_postgres(self.stop_argv(mode)),
            timeout=30,
            env=self._env(),
            check=False,
        )

    def stop_argv(self, mode: str = "{mode}") -> list[str]:
        """The pg_ctl line that stops this node (``{mode}``: fast or immediate, left
        for the supervisor to fill in), without the namespace and user prefix."""
        return [str(PGBIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w", "-t", "20"]

    def server_pids(self) -> list[int]:
        pid = self.pid()
        return procs.tree(pid) if pid is not None else []

    def signal(self, sig: signal.Signals) -> list[int]:
        pid = self.pid()
        if pid is None:
            raise LabError(f"PostgreSQL on {self.host} is not running")
        return procs.signal_tree(pid, sig)

    # -- SQL ------------------------------------------------------------------

    def connect(
        self, user: str = "dbha", dbname: str = "postgres", timeout: int = 3
    ) -> psycopg.Connection[dict[str, Any]]:
        """A connection over the node's unix socket (no network namespace needed)."""
        password = self.layout.secret(f"pg-{user}")
        try:
            return psycopg.connect(
                host=str(self.run),
                port=SERVICE.port,
                user=user,
                password=password,
                dbname=dbname,
                connect_timeout=timeout,
                autocommit=True,
                row_factory=dict_row,
                options="-c statement_timeout=10000",
            )
        except psycopg.Error as exc:
            raise LabError(
                f"PostgreSQL on {self.host}: cannot connect as {user}: "
                f"{str(exc).strip().splitlines()[-1]}"
            ) from exc

    # -- build ----------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        make_dir(self.dir, OWNER)
        make_dir(self.run, OWNER)
        write_owned(
            self.passfile, f"*:*:*:replicator:{self.layout.secret('pg-replicator')}\n", OWNER
        )

    def create_primary(self, sync: bool) -> None:
        """initdb, start, create the roles, the app database and the proof table."""
        self._prepare_dirs()
        remove_tree(self.data)
        operator = self.pairs == "operator"
        pwfile = self.dir / "initdb.pw"
        write_owned(pwfile, self.layout.secret("pg-postgres") + "\n", OWNER)
        try:
            proc.run(
                self._as_postgres(
                    [
                        str(PGBIN / "initdb"),
                        "-D",
                        str(self.data),
                        "-U",
                        "postgres",
                        f"--pwfile={pwfile}",
                        "-A",
                        "scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                        "--no-sync",
                        # The operator's pg_rewind works on checksums, not wal_log_hints.
                        *(["--data-checksums"] if operator else []),
                    ]
                ),
                timeout=60,
                env=self._env(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        write_owned(self.data / "pg_hba.conf", HBA, OWNER)
        # Asynchronous while it has no replica: in synchronous mode every commit of
        # the set-up below would wait for a standby that does not exist yet.
        conf = op.PG_CONF if operator else "dbha-lab.conf"
        write_owned(self.data / conf, op.pg_conf() if operator else lab_conf(False), OWNER)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\ninclude = '{conf}'\n")
        self.start()
        secret = self.layout.secret
        with self.connect("postgres") as conn:
            conn.execute("SET log_min_error_statement = panic")  # never log a password
            if operator:
                for statement in grants.render(grants.PG_GRANTS, secret("pg-dbha")):
                    conn.execute(statement)
                for statement in grants.render(grants.PG_REPLICATION, secret("pg-replicator")):
                    conn.execute(statement)
            else:
                conn.execute(f"CREATE ROLE dbha LOGIN SUPERUSER PASSWORD '{secret('pg-dbha')}'")
                conn.execute(
                    f"CREATE ROLE replicator LOGIN REPLICATION PASSWORD '{secret('pg-replicator')}'"
                )
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{secret('pg-app')}'")
            conn.execute("CREATE DATABASE app OWNER app")
        with self.connect("app", "app") as conn:
            conn.execute(
                "CREATE TABLE dbha_lab_proof (id bigserial PRIMARY KEY, "
                "token text NOT NULL, written_at timestamptz NOT NULL DEFAULT now())"
            )
        self.apply_sync(sync)
        self.ready_mark.write_text("primary\n")

    def create_replica(self, primary: PgNode) -> None:
        """A streaming replica of ``primary`` through its own physical slot."""
        if self.pairs == "operator":
            self._create_operator_replica(primary)
            return
        self._prepare_dirs()
        remove_tree(self.data)
        with primary.connect() as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.host,)
            ).fetchone()
            if row is None:
                conn.execute("SELECT pg_create_physical_replication_slot(%s)", (self.host,))
        src = topo.HOSTS[primary.host].lan
        try:
            proc.run(
                self._as_postgres(
                    [
                        str(PGBIN / "pg_basebackup"),
                        "-h",
                        src,
                        "-p",
                        str(SERVICE.port),
                        "-U",
                        "replicator",
                        "-D",
                        str(self.data),
                        "-X",
                        "stream",
                        "-S",
                        self.host,
                        "--checkpoint=fast",
                        "--no-sync",
                        "-w",
                    ]
                ),
                timeout=120,
                env=self._env(),
            )
        except (CommandFailed, CommandTimeout) as exc:
            raise LabError(f"pg_basebackup {primary.host} -> {self.host} failed: {exc}") from exc
        self.write_standby_settings(primary.host)
        self.start()
        self.ready_mark.write_text("replica\n")

    def _create_operator_replica(self, primary: PgNode) -> None:
        """``pg_basebackup -R -X stream -C -S standby1`` as the PostgreSQL docs show it:
        the slot is made by pg_basebackup itself, and -R writes primary_conninfo
        (no application_name: the standby reports cluster_name) and standby.signal.
        The password comes from the passfile (PGPASSFILE), which -R names; if -R
        wrote the password itself too, it is taken out again."""
        self._prepare_dirs()
        remove_tree(self.data)
        src = topo.HOSTS[primary.host].lan
        try:
            proc.run(
                self._as_postgres(
                    [
                        str(PGBIN / "pg_basebackup"),
                        "-h",
                        src,
                        "-p",
                        str(SERVICE.port),
                        "-U",
                        "replicator",
                        "-D",
                        str(self.data),
                        "-R",
                        "-X",
                        "stream",
                        "-C",
                        "-S",
                        op.PG_SLOT,
                        "--checkpoint=fast",
                        "--no-sync",
                        "-w",
                    ]
                ),
                timeout=120,
                env=self._env(),
            )
        except (CommandFailed, CommandTimeout) as exc:
            raise LabError(f"pg_basebackup {primary.host} -> {self.host} failed: {exc}") from exc
        auto = self.data / "postgresql.auto.conf"
        text, had_password = op.auto_conf_without_password(auto.read_text())
        if had_password:
            write_owned(auto, text, OWNER)
        self.start()
        self.ready_mark.write_text("replica\n")

    def standby_name(self, host: str) -> str:
        """The application_name the standby on ``host`` reports, as the lab built it."""
        return op.PG_CLUSTER_NAME if self.pairs == "operator" else host

    def write_standby_settings(self, upstream: str) -> None:
        """Follow ``upstream``: primary_conninfo with a passfile (no password inline)."""
        auto = self.data / "postgresql.auto.conf"
        keep = [
            line
            for line in auto.read_text().splitlines()
            if not line.startswith(("primary_conninfo", "primary_slot_name"))
        ]
        conninfo = (
            f"host={topo.HOSTS[upstream].lan} port={SERVICE.port} user=replicator "
            f"passfile={self.passfile} application_name={self.host} connect_timeout=2"
        )
        keep += [f"primary_conninfo = '{conninfo}'", f"primary_slot_name = '{self.host}'"]
        write_owned(auto, "\n".join(keep) + "\n", OWNER)
        write_owned(self.data / "standby.signal", "", OWNER)

    def apply_sync(self, sync: bool) -> None:
        """Rewrite the shared settings file if the mode changed, and reload. An
        operator's pair has no synchronous_standby_names of its own: only dbha's
        supervisors (their replication.mode) make it synchronous."""
        if self.pairs == "operator":
            return
        conf = self.data / "dbha-lab.conf"
        want = lab_conf(sync)
        if conf.exists() and conf.read_text() == want:
            return
        write_owned(conf, want, OWNER)
        if self.pid() is not None:
            with self.connect() as c:
                c.execute("SELECT pg_reload_conf()")

    # -- status ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        pid = self.pid()
        st: dict[str, Any] = {"running": pid is not None, "pid": pid, "role": "down"}
        if pid is None:
            return st
        try:
            with self.connect(timeout=3) as c:
                in_recovery = c.execute("SELECT pg_is_in_recovery() AS r").fetchone()["r"]  # type: ignore[index]
                if not in_recovery:
                    row = c.execute(
                        "SELECT pg_current_wal_lsn()::text AS lsn, "
                        "current_setting('default_transaction_read_only') AS ro"
                    ).fetchone()
                    reps = c.execute(
                        "SELECT application_name AS name, state, sync_state, "
                        "replay_lsn::text AS replay_lsn, "
                        "pg_current_wal_lsn()::text AS current_lsn, "
                        "extract(epoch FROM replay_lag)::float AS lag_seconds "
                        "FROM pg_stat_replication ORDER BY 1"
                    ).fetchall()
                    assert row is not None
                    for r in reps:
                        r["lag_bytes"] = lsn_gap(r.pop("current_lsn"), r["replay_lsn"])
                    st.update(
                        role="primary",
                        writable=row["ro"] == "off",
                        position=row["lsn"],
                        replicas=reps,
                    )
                else:
                    row = c.execute(
                        "SELECT pg_last_wal_receive_lsn()::text AS received, "
                        "pg_last_wal_replay_lsn()::text AS replayed, "
                        "(SELECT status FROM pg_stat_wal_receiver) AS receiver, "
                        "(SELECT sender_host FROM pg_stat_wal_receiver) AS upstream"
                    ).fetchone()
                    assert row is not None
                    st.update(
                        role="replica",
                        writable=False,
                        position=row["replayed"],
                        received=later_lsn(row["received"], row["replayed"]),
                        lag_bytes=lsn_gap(row["received"], row["replayed"]),
                        streaming=row["receiver"] == "streaming",
                        upstream=row["upstream"],
                    )
        except (LabError, psycopg.Error) as exc:
            st.update(role="unknown", error=str(exc).strip().splitlines()[-1])
        return st

    def write_token(self, token: str, timeout: float = WRITE_TIMEOUT) -> None:
        """Insert one row as the application; LabError unless it is acknowledged
        within ``timeout``. A commit waiting for a synchronous standby is not
        bounded by statement_timeout: the lab cancels it at the bound, and the
        server's warning that it stopped waiting (committed locally, never
        acknowledged) makes this a failure too."""
        with self.connect("app", "app") as c:
            warnings: list[str] = []
            c.add_notice_handler(lambda d: warnings.append(str(d.message_primary)))
            cancel = getattr(c, "cancel_safe", c.cancel)  # psycopg >= 3.2 has cancel_safe
            timer = threading.Timer(timeout, cancel)
            timer.daemon = True
            timer.start()
            try:
                c.execute("INSERT INTO dbha_lab_proof (token) VALUES (%s)", (token,))
            except psycopg.errors.QueryCanceled as exc:
                raise LabError(
                    f"PostgreSQL on {self.host}: the write was not done within {timeout:g} s"
                ) from exc
            finally:
                timer.cancel()
        waited = [w for w in warnings if "synchronous replication" in w]
        if waited:
            raise LabError(
                f"PostgreSQL on {self.host}: the commit waited {timeout:g} s for a "
                f"synchronous standby and was cancelled ({waited[0]}): not acknowledged"
            )

    def has_token(self, token: str) -> bool:
        with self.connect("app", "app", timeout=3) as c:
            return (
                c.execute("SELECT 1 FROM dbha_lab_proof WHERE token = %s", (token,)).fetchone()
                is not None
            )


def wait_streaming(primary: PgNode, replica: str, timeout: float = 20.0) -> None:
    """Wait until the standby on host ``replica`` streams from ``primary`` (known by
    the application_name the lab gave it)."""
    name = primary.standby_name(replica)

    def ok() -> bool:
        st = primary.status()
        return any(r["name"] == name and r["state"] == "streaming" for r in st.get("replicas", []))

    wait_until(
        ok, timeout, f"PostgreSQL replica {replica} to stream from {primary.host}", interval=0.1
    )
