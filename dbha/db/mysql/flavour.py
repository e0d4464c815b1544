"""What differs between MariaDB 10.6+ and MySQL 8.x: SQL text and what rows mean.

A flavour is a small value: the statements the driver sends and the pure
functions that read the rows back (:mod:`dbha.db.mysql.rows` holds the parts
both share). The driver picks one from the server's version string
(:func:`detect`). Nothing here does I/O, so the MySQL flavour, which has no
Debian package to test against, is unit-tested on recorded rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from dbha.db import gtid
from dbha.db.mysql.rows import (
    HOLD_MS,
    ReplicaRow,
    Row,
    ServerVars,
    flag,
    number,
    parse_version,
    text,
)


@dataclass(frozen=True, slots=True)
class MariaFlavour:
    """The MariaDB flavour; :class:`MysqlFlavour` overrides what MySQL says differently."""

    version: tuple[int, ...] = ()
    name: str = "mariadb"
    gtid_event_types: frozenset[int] = frozenset({162})  # GTID_EVENT
    client: str = "mariadb"
    dump: str = "mariadb-dump"
    binlog: str = "mariadb-binlog"

    # -- reading -------------------------------------------------------------
    vars_sql = (
        "SELECT @@version AS version, @@server_id AS server_id, @@read_only AS read_only,"
        " 0 AS super_read_only, @@gtid_binlog_state AS binlog_state,"
        " @@gtid_slave_pos AS slave_pos, @@gtid_strict_mode AS strict_mode,"
        " @@log_bin AS log_bin, @@log_slave_updates AS log_replica_updates,"
        " @@datadir AS datadir"
    )
    replica_status_sql = "SHOW SLAVE STATUS"
    replica_hosts_sql = "SHOW SLAVE HOSTS"
    processlist_sql = (
        "SELECT ID AS id, USER AS user, HOST AS host, COMMAND AS command, STATE AS state,"
        " TIME AS time FROM information_schema.PROCESSLIST"
    )
    semisync_sql = (
        "SELECT VARIABLE_NAME AS name, VARIABLE_VALUE AS value"
        " FROM information_schema.GLOBAL_VARIABLES"
        " WHERE VARIABLE_NAME IN ('RPL_SEMI_SYNC_MASTER_ENABLED',"
        " 'RPL_SEMI_SYNC_MASTER_TIMEOUT', 'RPL_SEMI_SYNC_MASTER_WAIT_NO_SLAVE',"
        " 'RPL_SEMI_SYNC_MASTER_WAIT_POINT', 'RPL_SEMI_SYNC_SLAVE_ENABLED')"
        " UNION ALL SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
        " WHERE VARIABLE_NAME IN ('RPL_SEMI_SYNC_MASTER_STATUS',"
        " 'RPL_SEMI_SYNC_MASTER_CLIENTS', 'RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS',"
        " 'RPL_SEMI_SYNC_SLAVE_STATUS')"
    )
    # How a setting of the replica side of semi-sync is made to last: MariaDB has no
    # SET PERSIST, so it is a runtime setting the supervisor re-asserts (the probe
    # says when a restart lost it); MySQL 8 persists it in mysqld-auto.cnf.
    persist_scope: ClassVar[str] = "GLOBAL"
    semisync_missing = "the server has no semi-synchronous replication variables"
    databases_sql = "SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA"
    # What the upstream has, read with the client tool: server id, then GTID texts.
    upstream_sql = "SELECT @@server_id, @@gtid_binlog_state, @@gtid_slave_pos;\n"

    # -- acting --------------------------------------------------------------
    stop_replica_sql = "STOP SLAVE"
    start_replica_sql = "START SLAVE"
    stop_receiver_sql = "STOP SLAVE IO_THREAD"
    start_receiver_sql = "START SLAVE IO_THREAD"
    start_applier_sql = "START SLAVE SQL_THREAD"
    reset_replica_sql = "RESET SLAVE ALL"
    binary_logs_sql = "SHOW BINARY LOGS"
    no_binlog_sql = "SET SESSION sql_log_bin = 0"
    set_position_sql = "SET GLOBAL gtid_slave_pos = %s"  # on an empty server, from a GTID text
    # After RESET MASTER: remember, per server id, what the copied data already holds,
    # so that later comparisons with the upstream still see the shared history.
    seed_history_sql: ClassVar[str | None] = "SET GLOBAL gtid_binlog_state = %s"
    # Receiver errors meaning "the upstream no longer has the binlog I need".
    binlog_gone_errnos: ClassVar[frozenset[int]] = frozenset({1236})

    @property
    def reset_binlogs_sql(self) -> str:
        return "RESET MASTER"

    def timeouts_sql(self, seconds: float) -> str:
        whole = max(1, int(seconds + 0.999))
        return (
            f"SET SESSION max_statement_time = {max(seconds, 0.001):.3f},"
            f" lock_wait_timeout = {whole}, innodb_lock_wait_timeout = {whole}"
        )

    def read_only_sql(self, on: bool) -> list[str]:
        return [f"SET GLOBAL read_only = {'ON' if on else 'OFF'}"]

    def fenced(self, v: ServerVars) -> bool:
        return v.read_only

    def semisync_primary_sql(self, side: str, on: bool) -> list[str]:
        """The primary side of semi-sync on or off, in the spelling ``side`` ("master"
        or "source") this server uses. On: first a wait that never ends on its own
        (the longest timeout, and waiting even with no replica connected), then
        enabled. Off: disabled, which releases the commits waiting for an ack."""
        if side not in ("master", "source"):
            raise ValueError(f"semi-sync primary side must be master or source, not {side!r}")
        if not on:
            return [f"SET GLOBAL rpl_semi_sync_{side}_enabled = OFF"]
        no_replica = "wait_no_slave" if side == "master" else "wait_no_replica"
        return [
            f"SET GLOBAL rpl_semi_sync_{side}_timeout = {HOLD_MS}",
            f"SET GLOBAL rpl_semi_sync_{side}_{no_replica} = ON",
            # Lossless: a commit is made visible (and acknowledged) only once the
            # replica has it; one that never got an ack was never seen by anyone.
            f"SET GLOBAL rpl_semi_sync_{side}_wait_point = AFTER_SYNC",
            f"SET GLOBAL rpl_semi_sync_{side}_enabled = ON",
        ]

    def semisync_replica_sql(self, side: str, on: bool) -> str:
        """The replica side of semi-sync on or off ("slave" or "replica" spelling); it
        takes effect when the receiver next connects."""
        if side not in ("slave", "replica"):
            raise ValueError(f"semi-sync replica side must be slave or replica, not {side!r}")
        return f"SET {self.persist_scope} rpl_semi_sync_{side}_enabled = {'ON' if on else 'OFF'}"

    def change_source(
        self, host: str, port: int, user: str, password: str, retry: int, heartbeat: float
    ) -> tuple[str, tuple[Any, ...]]:
        """The statement that points this server at ``host``; the password travels
        as a bound value over the connection, never on a command line."""
        return (
            "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s,"
            " MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos,"
            f" MASTER_CONNECT_RETRY = {int(retry)}, MASTER_HEARTBEAT_PERIOD = {heartbeat:g}",
            (host, port, user, password),
        )

    def retry_sql(self, retry: int, heartbeat: float) -> str:
        """Make the receiver reconnect every ``retry`` seconds (the threads stopped)."""
        return (
            f"CHANGE MASTER TO MASTER_CONNECT_RETRY = {int(retry)},"
            f" MASTER_HEARTBEAT_PERIOD = {heartbeat:g}"
        )

    def wait_sql(self, position: str, seconds: float) -> tuple[str, tuple[Any, ...]]:
        return "SELECT MASTER_GTID_WAIT(%s, %s) AS done", (position, round(seconds, 3))

    def wait_succeeded(self, value: Any) -> bool:
        return str(value).strip() == "0"  # -1: timed out

    def slave_pos_to_set(self, v: ServerVars) -> str | None:
        """For a server about to follow: the gtid_slave_pos that matches what it has
        applied (a former primary's own writes are in its binlog, not in its
        gtid_slave_pos), or None if it already does or cannot be read."""
        state = gtid.parse_maria(v.executed)
        if state is None:
            return None
        want = self.start_position(gtid.format_maria(state))
        current = gtid.parse_maria(v.slave_pos)
        if current is not None and gtid.format_maria(current) == want:
            return None
        return want

    def start_position(self, have: str) -> str:
        """What ``set_position_sql`` takes to start an empty server at ``have``."""
        state = gtid.parse_maria(have) or {}
        return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(gtid.domain_heads(state).items()))

    # -- parsing -------------------------------------------------------------
    def parse_vars(self, row: Row | None) -> ServerVars:
        binlog_state, slave_pos = text(row, "binlog_state"), text(row, "slave_pos")
        problems = []
        if row is not None and not flag(row, "strict_mode"):
            problems.append("gtid_strict_mode is OFF: diverged histories may go unnoticed")
        if row is not None and not flag(row, "log_bin"):
            problems.append("the binary log is off: this server cannot be a primary")
        elif row is not None and not flag(row, "log_replica_updates"):
            problems.append("log_slave_updates is OFF: replicated transactions are not logged")
        return ServerVars(
            version=text(row, "version"),
            server_id=number(row, "server_id"),
            read_only=flag(row, "read_only"),
            super_read_only=flag(row, "super_read_only"),
            executed=gtid.merge("mariadb", binlog_state, slave_pos),
            slave_pos=slave_pos,
            datadir=text(row, "datadir"),
            problems=tuple(problems),
        )

    def parse_replica_status(self, rows: Sequence[Row]) -> ReplicaRow | None:
        """The default channel, or None when no replication is configured."""
        row = next((r for r in rows if not text(r, "Channel_Name", "Connection_name")), None)
        if row is None and rows:
            row = rows[0]
        host = text(row, "Master_Host", "Source_Host")
        if row is None or not host:
            return None
        return ReplicaRow(
            source_host=host,
            source_port=number(row, "Master_Port", "Source_Port"),
            io_running=text(row, "Slave_IO_Running", "Replica_IO_Running") or "No",
            sql_running=text(row, "Slave_SQL_Running", "Replica_SQL_Running") or "No",
            received=self.received_text(row),
            seconds_behind=number(row, "Seconds_Behind_Master", "Seconds_Behind_Source"),
            io_errno=number(row, "Last_IO_Errno") or 0,
            io_error=text(row, "Last_IO_Error"),
            sql_errno=number(row, "Last_SQL_Errno") or 0,
            sql_error=text(row, "Last_SQL_Error"),
            relay_file=text(row, "Relay_Log_File"),
            relay_pos=number(row, "Relay_Log_Pos"),
            auto_position=self.auto_position(row),
            connect_retry=number(row, "Connect_Retry"),
        )

    def received_text(self, row: Row) -> str:
        return text(row, "Gtid_IO_Pos")

    def auto_position(self, row: Row) -> bool:
        return text(row, "Using_Gtid").strip().lower() in ("slave_pos", "current_pos")

    def parse_upstream(self, line: str) -> tuple[int | None, str | None]:
        """One tab-separated line of ``upstream_sql``: (server id, everything it has)."""
        cells = [c.strip() for c in line.rstrip("\n").split("\t")]
        if len(cells) < 2:
            return None, None
        sid = number({"s": cells[0]}, "s")
        return sid, gtid.merge(self.name, *[c for c in cells[1:] if c != "NULL"])

    # -- tools ---------------------------------------------------------------
    def reclone_dump_args(self) -> list[str]:
        """mariadb-dump options for a consistent copy that sets gtid_slave_pos."""
        return ["--single-transaction", "--gtid", "--master-data=1", "--add-drop-database"]

    def aside_dump_args(self) -> list[str]:
        return ["--single-transaction", "--gtid", "--master-data=2", "--all-databases"]

    def binlog_args(self, errant: str, have_upstream: str) -> list[str]:
        """mariadb-binlog options that print exactly the errant transactions: for each
        domain, the events after the last GTID the upstream shares with us, from the
        servers that wrote the errant ones."""
        state = gtid.parse_maria(errant) or {}
        other = gtid.parse_maria(have_upstream) or {}
        starts = []
        for domain in sorted({d for d, _ in state}):
            shared = [(s, n) for (d, s), n in other.items() if d == domain and (d, s) in state]
            if shared:
                server, seq = max(shared, key=lambda sn: sn[1])
                starts.append(f"{domain}-{server}-{seq}")
        args = [
            "--verbose",
            f"--do-domain-ids={','.join(str(d) for d in sorted({d for d, _ in state}))}",
            f"--do-server-ids={','.join(str(s) for s in sorted({s for _, s in state}))}",
        ]
        if starts:
            args.append(f"--start-position={','.join(starts)}")
        return args


@dataclass(frozen=True, slots=True)
class MysqlFlavour(MariaFlavour):
    name: str = "mysql"
    gtid_event_types: frozenset[int] = frozenset({33, 42})  # GTID_LOG_EVENT, GTID_TAGGED
    client: str = "mysql"
    dump: str = "mysqldump"
    binlog: str = "mysqlbinlog"

    vars_sql = (
        "SELECT @@version AS version, @@server_id AS server_id, @@read_only AS read_only,"
        " @@super_read_only AS super_read_only, @@gtid_executed AS executed,"
        " @@gtid_mode AS gtid_mode, @@enforce_gtid_consistency AS gtid_consistency,"
        " @@log_bin AS log_bin, @@log_replica_updates AS log_replica_updates,"
        " @@datadir AS datadir"
    )
    replica_status_sql = "SHOW REPLICA STATUS"
    replica_hosts_sql = "SHOW REPLICAS"
    semisync_sql = (
        "SELECT VARIABLE_NAME AS name, VARIABLE_VALUE AS value"
        " FROM performance_schema.global_variables"
        " WHERE VARIABLE_NAME IN ('rpl_semi_sync_source_enabled', 'rpl_semi_sync_master_enabled',"
        " 'rpl_semi_sync_source_timeout', 'rpl_semi_sync_master_timeout',"
        " 'rpl_semi_sync_source_wait_no_replica', 'rpl_semi_sync_master_wait_no_slave',"
        " 'rpl_semi_sync_source_wait_point', 'rpl_semi_sync_master_wait_point',"
        " 'rpl_semi_sync_replica_enabled', 'rpl_semi_sync_slave_enabled')"
        " UNION ALL SELECT VARIABLE_NAME, VARIABLE_VALUE FROM performance_schema.global_status"
        " WHERE VARIABLE_NAME IN ('Rpl_semi_sync_source_status', 'Rpl_semi_sync_master_status',"
        " 'Rpl_semi_sync_source_clients', 'Rpl_semi_sync_master_clients',"
        " 'Rpl_semi_sync_source_wait_sessions', 'Rpl_semi_sync_master_wait_sessions',"
        " 'Rpl_semi_sync_replica_status', 'Rpl_semi_sync_slave_status')"
    )
    persist_scope: ClassVar[str] = "PERSIST"
    semisync_missing = (
        "the semi-synchronous source plugin is not loaded "
        "(INSTALL PLUGIN rpl_semi_sync_source SONAME 'semisync_source.so')"
    )
    upstream_sql = "SELECT @@server_id, @@gtid_executed;\n"
    stop_replica_sql = "STOP REPLICA"
    start_replica_sql = "START REPLICA"
    stop_receiver_sql = "STOP REPLICA IO_THREAD"
    start_receiver_sql = "START REPLICA IO_THREAD"
    start_applier_sql = "START REPLICA SQL_THREAD"
    reset_replica_sql = "RESET REPLICA ALL"
    binary_logs_sql = "SHOW BINARY LOGS"
    set_position_sql = "SET GLOBAL gtid_purged = %s"
    seed_history_sql = None  # gtid_purged, set by the dump, is the whole history
    binlog_gone_errnos = frozenset({1236, 13114})  # 13114: "Got fatal error 1236 from source"

    @property
    def reset_binlogs_sql(self) -> str:
        return "RESET BINARY LOGS AND GTIDS" if self.version >= (8, 4) else "RESET MASTER"

    def timeouts_sql(self, seconds: float) -> str:
        # max_execution_time bounds SELECTs only; socket timeouts bound the rest.
        whole = max(1, int(seconds + 0.999))
        return (
            f"SET SESSION max_execution_time = {max(1, int(seconds * 1000))},"
            f" lock_wait_timeout = {whole}, innodb_lock_wait_timeout = {whole}"
        )

    def read_only_sql(self, on: bool) -> list[str]:
        if on:  # super_read_only=ON also sets read_only=ON
            return ["SET GLOBAL super_read_only = ON"]
        return ["SET GLOBAL super_read_only = OFF", "SET GLOBAL read_only = OFF"]

    def fenced(self, v: ServerVars) -> bool:
        return v.read_only and v.super_read_only

    def change_source(
        self, host: str, port: int, user: str, password: str, retry: int, heartbeat: float
    ) -> tuple[str, tuple[Any, ...]]:
        return (
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST = %s, SOURCE_PORT = %s,"
            " SOURCE_USER = %s, SOURCE_PASSWORD = %s, SOURCE_AUTO_POSITION = 1,"
            f" SOURCE_CONNECT_RETRY = {int(retry)}, SOURCE_HEARTBEAT_PERIOD = {heartbeat:g},"
            " GET_SOURCE_PUBLIC_KEY = 1",
            (host, port, user, password),
        )

    def retry_sql(self, retry: int, heartbeat: float) -> str:
        return (
            f"CHANGE REPLICATION SOURCE TO SOURCE_CONNECT_RETRY = {int(retry)},"
            f" SOURCE_HEARTBEAT_PERIOD = {heartbeat:g}"
        )

    def wait_sql(self, position: str, seconds: float) -> tuple[str, tuple[Any, ...]]:
        return "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s) AS done", (position, round(seconds, 3))

    def slave_pos_to_set(self, v: ServerVars) -> str | None:
        return None  # auto-positioning sends gtid_executed: nothing to align

    def start_position(self, have: str) -> str:
        return have

    def parse_vars(self, row: Row | None) -> ServerVars:
        problems = []
        if row is not None and text(row, "gtid_mode").upper() != "ON":
            problems.append("gtid_mode is not ON: GTID auto-positioning is impossible")
        if row is not None and not flag(row, "log_bin"):
            problems.append("the binary log is off: this server cannot be a primary")
        return ServerVars(
            version=text(row, "version"),
            server_id=number(row, "server_id"),
            read_only=flag(row, "read_only"),
            super_read_only=flag(row, "super_read_only"),
            executed=gtid.merge("mysql", text(row, "executed")),
            slave_pos="",
            datadir=text(row, "datadir"),
            problems=tuple(problems),
        )

    def received_text(self, row: Row) -> str:
        return text(row, "Retrieved_Gtid_Set")

    def auto_position(self, row: Row) -> bool:
        return text(row, "Auto_Position").strip() == "1"

    def reclone_dump_args(self) -> list[str]:
        # The dump carries SET @@GLOBAL.gtid_purged; the target's gtid_executed is
        # emptied first (reset_binlogs_sql), as the server requires.
        return ["--single-transaction", "--set-gtid-purged=ON", "--add-drop-database"]

    def aside_dump_args(self) -> list[str]:
        return ["--single-transaction", "--set-gtid-purged=COMMENTED", "--all-databases"]

    def binlog_args(self, errant: str, have_upstream: str) -> list[str]:
        return ["--verbose", f"--include-gtids={errant}"]


Flavour = MariaFlavour  # either flavour: MysqlFlavour is a MariaFlavour with its own words


def detect(version: str) -> Flavour | None:
    """The flavour for a server version string; None for what dbha does not drive
    (MySQL before 8.0.23, which lacks CHANGE REPLICATION SOURCE)."""
    numbers = parse_version(version)
    if "mariadb" in version.lower():
        return MariaFlavour(version=numbers) if numbers >= (10, 6) else None
    if numbers >= (8, 0, 23):
        return MysqlFlavour(version=numbers)
    return None
