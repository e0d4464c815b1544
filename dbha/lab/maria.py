"""The lab's MariaDB pair: a primary and a GTID replica (read-only).

Each node runs ``mariadbd --defaults-file=...`` directly (no systemd, no
mysqld_safe) as ``mysql`` inside its host namespace, with its own data dir,
socket and pid file. Set-up SQL goes to the client on standard input, so no
password ever appears on a command line.

A pair is built the way dbha wants it (the default: semi-synchronous replica
sides, a one-second connect retry and heartbeat, ALL PRIVILEGES for dbha) or,
in a lab made with ``--pairs operator``, as an operator following MariaDB's own
documentation would (``dbha.lab.operator``; dbha's account gets docs/grants.md).
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import pymysql
import pymysql.cursors

from dbha import proc
from dbha.errors import CommandFailed, CommandTimeout, LabError
from dbha.lab import grants, procs
from dbha.lab import operator as op
from dbha.lab import topology as topo
from dbha.lab.layout import Layout, make_dir, remove_tree, write_owned
from dbha.lab.net import nsexec
from dbha.lab.wait import wait_until

OWNER = "mysql"
SERVICE = topo.SERVICES["mariadb"]
SERVER_IDS = {"a": 1, "b": 2}
MARIADBD = "/usr/sbin/mariadbd"
SSD = "/usr/sbin/start-stop-daemon"  # Debian's; starts detached, stops by pid file
SEMISYNC_TIMEOUT_MS = 3_600_000  # an hour: see LAB-NOTES on the silent async fallback


class MariaNode:
    def __init__(self, prefix: str, layout: Layout, host: str, pairs: str | None = None) -> None:
        self.prefix, self.layout, self.host = prefix, layout, host
        # How the pair is built: the lab's choice (its lab.json) unless told.
        self.pairs = op.check_pairs(pairs) if pairs is not None else layout.pairs()
        self.dir = layout.node(host, "mariadb")
        self.data = self.dir / "data"
        self.run = self.dir / "run"
        self.socket = self.run / "mysqld.sock"
        self.pidfile = self.run / "mariadbd.pid"
        self.cnf = self.dir / "my.cnf"
        self.log = self.dir / "error.log"
        self.ready_mark = self.dir / "initialized"

    def _cnf(self, primary: bool, sync: bool) -> str:
        if self.pairs == "operator":
            return op.maria_cnf(
                datadir=str(self.data),
                socket=str(self.socket),
                pidfile=str(self.pidfile),
                log_error=str(self.log),
                tmpdir=str(self.run),
                port=SERVICE.port,
                server_id=SERVER_IDS[self.host],
                primary=primary,
            )
        on = "ON" if sync else "OFF"
        master = "ON" if sync and primary else "OFF"  # see apply_sync
        return f"""\
[mysqld]
datadir = {self.data}
socket = {self.socket}
pid-file = {self.pidfile}
log_error = {self.log}
tmpdir = {self.run}
port = {SERVICE.port}
bind-address = 0.0.0.0
server_id = {SERVER_IDS[self.host]}
report_host = {self.host}
log_bin = mariadb-bin
relay_log = relay-bin
log_slave_updates = ON
gtid_strict_mode = ON
binlog_format = ROW
sync_binlog = 1
innodb_flush_log_at_trx_commit = 1
relay_log_recovery = ON
skip_name_resolve = ON
read_only = {"OFF" if primary else "ON"}
rpl_semi_sync_master_enabled = {master}
rpl_semi_sync_slave_enabled = {on}
rpl_semi_sync_master_timeout = {SEMISYNC_TIMEOUT_MS}
innodb_buffer_pool_size = 64M
innodb_log_file_size = 48M
performance_schema = OFF
max_connections = 60
"""

    # -- process --------------------------------------------------------------

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if procs.alive(pid) else None

    def start(self) -> bool:
        """Start mariadbd (no-op if it runs) and wait until it answers on its socket;
        True if it was started."""
        if self.pid() is not None:
            return False
        self.pidfile.unlink(missing_ok=True)
        with open(self.dir / "stdout.log", "ab") as out:
            child = subprocess.Popen(
                nsexec(
                    self.prefix,
                    self.host,
                    [
                        "setpriv",
                        "--reuid",
                        OWNER,
                        "--regid",
                        OWNER,
                        "--init-groups",
                        "--",
                        MARIADBD,
                        f"--defaults-file={self.cnf}",
                    ],
                ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            )

        def ready() -> bool:
            if child.poll() is not None:
                raise LabError(f"MariaDB on {self.host} exited at start; see {self.log}")
            return self._client("SELECT 1", timeout=3, check=False).returncode == 0

        wait_until(ready, 30.0, f"MariaDB on {self.host} to accept connections", interval=0.1)
        return True

    def start_argv(self) -> list[str]:
        """A line that starts this node as :meth:`start` does (as ``mysql``, detached,
        output to the same log) and returns at once, for a supervisor that runs
        inside the host's namespace. The pid file makes it touch this node's
        server only: every host's mariadbd is the same program."""
        return [
            SSD,
            "--start",
            "--quiet",
            "--oknodo",
            "--background",
            "--pidfile",
            str(self.pidfile),
            "--exec",
            MARIADBD,
            "--chuid",
            f"{OWNER}:{OWNER}",
            "--output",
            str(self.dir / "stdout.log"),
            "--",
            f"--defaults-file={self.cnf}",
        ]

    def stop_argv(self) -> list[str]:
        """A line that ends this node's server even when it hangs (SIGKILL, then a
        bounded wait until it is gone): what a hard fence needs. InnoDB and the
        binlog (sync_binlog=1, flush at commit) recover at the next start."""
        return [
            SSD,
            "--stop",
            "--quiet",
            "--oknodo",
            "--pidfile",
            str(self.pidfile),
            "--exec",
            MARIADBD,
            "--signal",
            "KILL",
            "--retry",
            "10",
        ]

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        procs.signal_tree(pid, signal.SIGTERM)  # SIGTERM is a clean shutdown
        wait_until(lambda: not procs.alive(pid), 30.0, f"MariaDB on {self.host} to stop")

    def server_pids(self) -> list[int]:
        pid = self.pid()
        return procs.tree(pid) if pid is not None else []

    def signal(self, sig: signal.Signals) -> list[int]:
        pid = self.pid()
        if pid is None:
            raise LabError(f"MariaDB on {self.host} is not running")
        return procs.signal_tree(pid, sig)

    # -- SQL ------------------------------------------------------------------

    def _client(
        self,
        sql: str,
        timeout: float = 10,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run SQL as the server's root account (unix_socket auth), SQL on stdin."""
        try:
            return proc.run(
                [
                    "mariadb",
                    "--no-defaults",
                    f"--socket={self.socket}",
                    "-u",
                    "root",
                    "--batch",
                    "--skip-column-names",
                    "--connect-timeout=3",
                ],
                input=sql,
                timeout=timeout,
                check=check,
            )
        except (CommandFailed, CommandTimeout) as exc:
            raise LabError(f"MariaDB on {self.host}: {exc}") from exc

    def connect(
        self, user: str = "dbha", database: str | None = None, timeout: int = 3
    ) -> pymysql.connections.Connection[pymysql.cursors.DictCursor]:
        password = self.layout.secret(f"mariadb-{user}")
        try:
            return pymysql.connect(
                unix_socket=str(self.socket),
                user=user,
                password=password,
                database=database,
                connect_timeout=timeout,
                read_timeout=5,
                write_timeout=5,
                autocommit=True,
                cursorclass=pymysql.cursors.DictCursor,
            )
        except pymysql.MySQLError as exc:
            raise LabError(f"MariaDB on {self.host}: cannot connect as {user}: {exc}") from exc

    def query(
        self, sql: str, args: tuple[Any, ...] = (), user: str = "dbha", database: str | None = None
    ) -> list[dict[str, Any]]:
        conn = self.connect(user, database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        except pymysql.MySQLError as exc:
            raise LabError(f"MariaDB on {self.host}: {exc}") from exc
        finally:
            conn.close()

    # -- build ----------------------------------------------------------------

    def _install(self, primary: bool, sync: bool) -> None:
        make_dir(self.dir, OWNER)
        make_dir(self.run, OWNER)
        remove_tree(self.data)
        write_owned(self.cnf, self._cnf(primary, sync), OWNER, 0o644)
        try:
            proc.run(
                nsexec(
                    self.prefix,
                    self.host,
                    [
                        "mariadb-install-db",
                        f"--defaults-file={self.cnf}",
                        f"--user={OWNER}",
                        f"--datadir={self.data}",
                        "--skip-test-db",
                        "--auth-root-authentication-method=socket",
                    ],
                ),
                timeout=120,
            )
        except (CommandFailed, CommandTimeout) as exc:
            raise LabError(f"mariadb-install-db on {self.host} failed: {exc}") from exc
        self.start()

    def create_primary(self, sync: bool) -> None:
        # Asynchronous while it has no replica: in synchronous mode every commit of
        # the set-up below would wait for an acknowledgement nobody can send.
        self._install(primary=True, sync=False)
        s = self.layout.secret
        if self.pairs == "operator":
            accounts = "".join(
                f"{statement};\n"
                for statement in grants.render(grants.MARIA_GRANTS, s("mariadb-dbha"))
                + grants.render(grants.MARIA_REPLICATION, s("mariadb-repl"))
            )
        else:
            accounts = f"""\
CREATE USER 'dbha'@'%' IDENTIFIED BY '{s("mariadb-dbha")}';
GRANT ALL PRIVILEGES ON *.* TO 'dbha'@'%' WITH GRANT OPTION;
CREATE USER 'repl'@'%' IDENTIFIED BY '{s("mariadb-repl")}';
GRANT REPLICATION SLAVE, REPLICATION SLAVE ADMIN, BINLOG MONITOR, SLAVE MONITOR
  ON *.* TO 'repl'@'%';
"""
        # Accounts and data are made with the binlog on (after RESET MASTER) so
        # that the replica receives them by replication. The application user
        # gets no global privilege: read_only must stop it (no fence otherwise).
        self._client(f"""
RESET MASTER;
{accounts}CREATE DATABASE app;
CREATE USER 'app'@'%' IDENTIFIED BY '{s("mariadb-app")}';
GRANT ALL PRIVILEGES ON app.* TO 'app'@'%';
CREATE TABLE app.dbha_lab_proof (id BIGINT AUTO_INCREMENT PRIMARY KEY,
  token VARCHAR(64) NOT NULL, written_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))
  ENGINE=InnoDB;
""")
        self.apply_sync(sync)
        self.open()
        self.ready_mark.write_text("primary\n")

    def open(self) -> None:
        """An operator's server starts read-only (docs/config.md); its operator opens
        the primary: read_only off if it replicates from nobody. Without supervisors
        the lab does that after every start; with them, the supervisor decides."""
        if self.pairs != "operator":
            return
        if not self._client("SHOW SLAVE STATUS").stdout.strip():
            self._client("SET GLOBAL read_only = OFF;")

    def create_replica(self, primary: MariaNode, sync: bool) -> None:
        self._install(primary=False, sync=sync)
        self._client(
            "RESET MASTER; SET GLOBAL gtid_slave_pos='';\n"
            + self.change_master_sql(primary.host)
            + "START SLAVE;\n"
        )
        self.ready_mark.write_text("replica\n")

    def change_master_sql(self, upstream: str) -> str:
        if self.pairs == "operator":
            return op.maria_change_master(
                topo.HOSTS[upstream].lan, SERVICE.port, "repl", self.layout.secret("mariadb-repl")
            )
        return (
            f"CHANGE MASTER TO MASTER_HOST='{topo.HOSTS[upstream].lan}', "
            f"MASTER_PORT={SERVICE.port}, MASTER_USER='repl', "
            f"MASTER_PASSWORD='{self.layout.secret('mariadb-repl')}', "
            "MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1;\n"
        )

    def apply_sync(self, sync: bool) -> None:
        """Semi-synchronous replication on (``sync``) or off, in the config file and
        in the running server. Only a primary waits for acknowledgements: a replica
        with the primary side on would, with log_slave_updates, make its applier wait
        for acknowledgements of what it applies, which nobody sends (it stalls).
        An operator's pair has no semi-synchronous replication of its own: only
        dbha's supervisors (their replication.mode) switch it on."""
        if self.pairs == "operator":
            return
        running = self.pid() is not None
        if running:
            replica = bool(self._client("SHOW SLAVE STATUS").stdout.strip())
        else:
            replica = "read_only = ON" in self.cnf.read_text()
        want = {
            "rpl_semi_sync_master_enabled": sync and not replica,
            "rpl_semi_sync_slave_enabled": sync,
        }
        text = self.cnf.read_text()
        lines = []
        for line in text.splitlines():
            name = line.split("=")[0].strip()
            if name in want:
                line = f"{name} = {'ON' if want[name] else 'OFF'}"
            lines.append(line)
        new = "\n".join(lines) + "\n"
        if new != text:
            write_owned(self.cnf, new, OWNER, 0o644)
        if not running:
            return
        have = self._client(
            "SELECT @@rpl_semi_sync_master_enabled, @@rpl_semi_sync_slave_enabled"
        ).stdout.split()
        now = dict(zip(want, (v == "1" for v in have), strict=False))
        if now == want:
            return
        self._client(
            "".join(f"SET GLOBAL {k} = {'ON' if v else 'OFF'};\n" for k, v in want.items())
        )
        if replica and now.get("rpl_semi_sync_slave_enabled") != sync:
            # A replica registers as semi-synchronous (or not) when its I/O thread
            # connects: without a reconnect its primary would wait for
            # acknowledgements that never come.
            self._client("STOP SLAVE IO_THREAD;\nSTART SLAVE IO_THREAD;\n")

    # -- status ---------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        pid = self.pid()
        st: dict[str, Any] = {"running": pid is not None, "pid": pid, "role": "down"}
        if pid is None:
            return st
        try:
            var = self.query(
                "SELECT @@read_only AS ro, @@gtid_current_pos AS pos, "
                "@@gtid_binlog_pos AS binlog_pos"
            )[0]
            slave = self.query("SHOW SLAVE STATUS")
            if slave:
                s = slave[0]
                st.update(
                    role="replica",
                    writable=not var["ro"],
                    position=var["pos"],
                    received=s.get("Gtid_IO_Pos"),
                    upstream=s.get("Master_Host"),
                    io_running=s.get("Slave_IO_Running"),
                    sql_running=s.get("Slave_SQL_Running"),
                    streaming=(
                        s.get("Slave_IO_Running") == "Yes" and s.get("Slave_SQL_Running") == "Yes"
                    ),
                    lag_seconds=s.get("Seconds_Behind_Master"),
                    last_error=s.get("Last_Error") or s.get("Last_IO_Error") or None,
                )
            else:
                hosts = self.query("SHOW SLAVE HOSTS")
                st.update(
                    role="primary",
                    writable=not var["ro"],
                    position=var["binlog_pos"],
                    replicas=[
                        {"name": h.get("Host"), "server_id": h.get("Server_id")} for h in hosts
                    ],
                )
        except LabError as exc:
            st.update(role="unknown", error=str(exc))
        return st

    def write_token(self, token: str) -> None:
        self.query(
            "INSERT INTO dbha_lab_proof (token) VALUES (%s)", (token,), user="app", database="app"
        )

    def has_token(self, token: str) -> bool:
        return bool(
            self.query(
                "SELECT 1 AS x FROM dbha_lab_proof WHERE token = %s",
                (token,),
                user="app",
                database="app",
            )
        )


def wait_replicating(replica: MariaNode, timeout: float = 20.0) -> None:
    def ok() -> bool:
        st = replica.status()
        if st.get("last_error") and st.get("sql_running") == "No":
            raise LabError(f"MariaDB replica on {replica.host}: {st['last_error']}")
        return bool(st.get("streaming"))

    wait_until(ok, timeout, f"MariaDB replica {replica.host} to replicate", interval=0.1)
