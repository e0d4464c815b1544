"""The MySQL/MariaDB driver's pure parts: flavours on recorded rows, error mapping,
option files, the relay-log reader and the settings' own checks.

MySQL 8 has no Debian package here, so its flavour is tested on rows recorded
in the shape MySQL 8.0 returns them; the MariaDB rows were recorded from the
lab's MariaDB 10.11.
"""

from __future__ import annotations

import errno
import inspect
import io
import os
import struct
import subprocess
import threading
import types
from pathlib import Path
from typing import Any

import pymysql
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dbha.db.base import DbCommandFailed, DbError, DbTimeout, DbUnreachable
from dbha.db.mysql import driver as mysql_driver
from dbha.db.mysql import observe as mysql_observe
from dbha.db.mysql import relaylog
from dbha.db.mysql.conn import MAPPED, MysqlSettings, boundary, map_error
from dbha.db.mysql.flavour import MariaFlavour, MysqlFlavour, detect
from dbha.db.mysql.rows import clients_to_kill, parse_replicas, parse_semisync
from dbha.db.mysql.tools import option_text
from dbha.errors import CommandFailed, CommandTimeout

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "8f0c2b6e-1d2a-11ef-8a4b-0242ac120002"

# ----------------------------------------------------------------- recorded rows

MARIA_REPLICA_STATUS: dict[str, Any] = {
    "Slave_IO_State": "Waiting for master to send event",
    "Master_Host": "198.18.0.12",
    "Master_User": "repl",
    "Master_Port": 3306,
    "Connect_Retry": 1,
    "Master_Log_File": "mariadb-bin.000001",
    "Read_Master_Log_Pos": 1843,
    "Relay_Log_File": "relay-bin.000002",
    "Relay_Log_Pos": 2144,
    "Slave_IO_Running": "Yes",
    "Slave_SQL_Running": "No",
    "Last_Errno": 0,
    "Last_Error": "",
    "Seconds_Behind_Master": None,
    "Last_IO_Errno": 0,
    "Last_IO_Error": "",
    "Last_SQL_Errno": 0,
    "Last_SQL_Error": "",
    "Master_Server_Id": 2,
    "Using_Gtid": "Slave_Pos",
    "Gtid_IO_Pos": "0-2-18",
    "Parallel_Mode": "optimistic",
    "SQL_Delay": 0,
    "SQL_Remaining_Delay": None,
    "Slave_SQL_Running_State": "",
}
MARIA_VARS = {
    "version": "10.11.19-MariaDB-0+deb12u1-log",
    "server_id": 1,
    "read_only": 1,
    "super_read_only": 0,
    "binlog_state": "0-1-5,0-2-13",
    "slave_pos": "0-2-13",
    "strict_mode": 1,
    "log_bin": 1,
    "log_replica_updates": 1,
    "datadir": "/var/lib/dbha-lab/t1/a/mariadb/data/",
}
MYSQL_REPLICA_STATUS: dict[str, Any] = {
    "Replica_IO_State": "Waiting for source to send event",
    "Source_Host": "10.0.0.12",
    "Source_User": "repl",
    "Source_Port": 3306,
    "Connect_Retry": 1,
    "Source_Log_File": "binlog.000003",
    "Read_Source_Log_Pos": 4917,
    "Relay_Log_File": "db-a-relay-bin.000004",
    "Relay_Log_Pos": 1231,
    "Relay_Source_Log_File": "binlog.000003",
    "Replica_IO_Running": "Yes",
    "Replica_SQL_Running": "Yes",
    "Last_Errno": 0,
    "Last_Error": "",
    "Skip_Counter": 0,
    "Exec_Source_Log_Pos": 3301,
    "Seconds_Behind_Source": 3,
    "Last_IO_Errno": 0,
    "Last_IO_Error": "",
    "Last_SQL_Errno": 0,
    "Last_SQL_Error": "",
    "Source_Server_Id": 2,
    "Source_UUID": U2,
    "Replica_SQL_Running_State": "Waiting for dependent transaction to commit",
    "Retrieved_Gtid_Set": f"{U2}:1-42",
    "Executed_Gtid_Set": f"{U1}:1-7,\n{U2}:1-37",
    "Auto_Position": 1,
    "Channel_Name": "",
    "Get_Source_public_key": 1,
}
MYSQL_VARS = {
    "version": "8.0.36",
    "server_id": 1,
    "read_only": 1,
    "super_read_only": 1,
    "executed": f"{U1}:1-7,\n{U2}:1-37",
    "gtid_mode": "ON",
    "gtid_consistency": "ON",
    "log_bin": 1,
    "log_replica_updates": 1,
    "datadir": "/var/lib/mysql/",
}


# --------------------------------------------------------------------- flavours


@pytest.mark.parametrize(
    ("version", "flavour", "reset"),
    [
        ("5.5.5-10.11.19-MariaDB-0+deb12u1-log", "mariadb", "RESET MASTER"),
        ("10.6.16-MariaDB", "mariadb", "RESET MASTER"),
        ("10.5.22-MariaDB", None, None),  # older than dbha drives
        ("8.0.36", "mysql", "RESET MASTER"),
        ("8.0.23-commercial", "mysql", "RESET MASTER"),
        ("8.0.22", None, None),  # no CHANGE REPLICATION SOURCE yet
        ("8.4.2", "mysql", "RESET BINARY LOGS AND GTIDS"),
        ("5.7.44-log", None, None),
        ("", None, None),
    ],
)
def test_detect(version: str, flavour: str | None, reset: str | None) -> None:
    f = detect(version)
    assert (f.name if f else None) == flavour
    assert (f.reset_binlogs_sql if f else None) == reset


def test_mariadb_reads_a_paused_replica() -> None:
    f = MariaFlavour(version=(10, 11, 19))
    v = f.parse_vars(MARIA_VARS)
    assert v.executed == "0-1-5,0-2-13" and v.read_only and f.fenced(v) and not v.problems
    rep = f.parse_replica_status([MARIA_REPLICA_STATUS])
    assert rep is not None
    assert (rep.source_host, rep.source_port, rep.received) == ("198.18.0.12", 3306, "0-2-18")
    assert rep.io_running == "Yes" and rep.sql_running == "No" and not rep.streaming
    assert rep.seconds_behind is None and rep.auto_position and rep.error == ""
    assert rep.follows("198.18.0.12", 3306) and not rep.follows("198.18.0.11", 3306)
    assert (rep.relay_file, rep.relay_pos) == ("relay-bin.000002", 2144)


def test_mysql_reads_a_lagging_replica() -> None:
    f = MysqlFlavour(version=(8, 0, 36))
    v = f.parse_vars(MYSQL_VARS)
    assert v.executed == f"{U1}:1-7,{U2}:1-37" and f.fenced(v) and not v.problems
    assert not f.fenced(f.parse_vars(MYSQL_VARS | {"super_read_only": 0}))
    rep = f.parse_replica_status([MYSQL_REPLICA_STATUS])
    assert rep is not None and rep.streaming and rep.auto_position
    assert (rep.source_host, rep.received, rep.seconds_behind) == ("10.0.0.12", f"{U2}:1-42", 3)
    from dbha.db import gtid

    received = gtid.merge("mysql", v.executed, rep.received)
    assert gtid.behind("mysql", received, v.executed) == 5  # U2:38-42


def test_replica_errors_and_unconfigured_replication() -> None:
    f = MysqlFlavour(version=(8, 0, 36))
    broken = MYSQL_REPLICA_STATUS | {
        "Replica_IO_Running": "No",
        "Last_IO_Errno": 13114,
        "Last_IO_Error": "Got fatal error 1236 from source",
    }
    rep = f.parse_replica_status([broken])
    assert rep is not None and "receiver error 13114" in rep.error
    assert f.parse_replica_status([]) is None
    assert f.parse_replica_status([MYSQL_REPLICA_STATUS | {"Source_Host": ""}]) is None
    assert MariaFlavour().parse_replica_status([]) is None


def test_vars_warn_about_unsafe_gtid_settings() -> None:
    maria = MariaFlavour().parse_vars(MARIA_VARS | {"strict_mode": 0, "log_replica_updates": 0})
    assert any("gtid_strict_mode" in p for p in maria.problems)
    assert any("log_slave_updates" in p for p in maria.problems)
    mysql = MysqlFlavour().parse_vars(MYSQL_VARS | {"gtid_mode": "OFF_PERMISSIVE"})
    assert any("gtid_mode" in p for p in mysql.problems)
    assert MariaFlavour().parse_vars(None).executed == ""  # no row: nothing known, no crash


def test_statements_say_the_flavours_words() -> None:
    maria, mysql = MariaFlavour(version=(10, 11, 19)), MysqlFlavour(version=(8, 0, 36))
    assert maria.read_only_sql(True) == ["SET GLOBAL read_only = ON"]
    assert mysql.read_only_sql(True) == ["SET GLOBAL super_read_only = ON"]
    assert mysql.read_only_sql(False) == [
        "SET GLOBAL super_read_only = OFF",
        "SET GLOBAL read_only = OFF",
    ]
    assert maria.replica_status_sql == "SHOW SLAVE STATUS"
    assert mysql.replica_status_sql == "SHOW REPLICA STATUS"
    assert (maria.stop_replica_sql, mysql.reset_replica_sql) == ("STOP SLAVE", "RESET REPLICA ALL")
    assert "@@gtid_executed" in mysql.vars_sql and "@@super_read_only" in mysql.vars_sql
    assert "@@gtid_binlog_state" in maria.vars_sql and "@@gtid_slave_pos" in maria.vars_sql
    assert "max_statement_time = 2.500" in maria.timeouts_sql(2.5)
    assert "max_execution_time = 2500" in mysql.timeouts_sql(2.5)
    assert "lock_wait_timeout = 3" in mysql.timeouts_sql(2.5)


def test_change_source_binds_the_password_and_auto_positions() -> None:
    for f, words in (
        (MariaFlavour(), ("CHANGE MASTER TO", "MASTER_USE_GTID = slave_pos")),
        (MysqlFlavour(), ("CHANGE REPLICATION SOURCE TO", "SOURCE_AUTO_POSITION = 1")),
    ):
        sql, args = f.change_source("10.0.0.12", 3306, "repl", "s3cr'et", 1, 1.0)
        assert all(w in sql for w in words)
        assert "s3cr" not in sql and args == ("10.0.0.12", 3306, "repl", "s3cr'et")


def test_a_receiver_that_reconnects_slowly_is_not_ready_for_synchronous_commits() -> None:
    """The server's default MASTER_CONNECT_RETRY is 60 s: after its primary restarts,
    such a replica reconnects up to a minute later, and a synchronous primary's
    commits wait that long. It reads as not ready, and the statement that fixes it
    (the threads stopped) names no host or password."""
    f = MariaFlavour()
    semi = parse_semisync(
        [{"name": "RPL_SEMI_SYNC_SLAVE_ENABLED", "value": "ON"},
         {"name": "RPL_SEMI_SYNC_SLAVE_STATUS", "value": "ON"}]
    )  # fmt: skip
    quick = f.parse_replica_status([MARIA_REPLICA_STATUS])
    slow = f.parse_replica_status([{**MARIA_REPLICA_STATUS, "Connect_Retry": 60}])
    assert quick is not None and slow is not None
    assert (quick.connect_retry, slow.connect_retry) == (1, 60)
    assert mysql_observe.ready(semi, quick, 1) is True
    assert mysql_observe.ready(semi, slow, 1) is False
    assert mysql_observe.ready(semi, slow, 60) is True
    unknown = f.parse_replica_status([{k: v for k, v in MARIA_REPLICA_STATUS.items()
                                       if k != "Connect_Retry"}])  # fmt: skip
    assert unknown is not None and mysql_observe.prompt(unknown, 1)
    assert MariaFlavour().retry_sql(1, 1.0) == (
        "CHANGE MASTER TO MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1"
    )
    assert MysqlFlavour().retry_sql(2, 0.5) == (
        "CHANGE REPLICATION SOURCE TO SOURCE_CONNECT_RETRY = 2, SOURCE_HEARTBEAT_PERIOD = 0.5"
    )


def test_wait_functions() -> None:
    maria, mysql = MariaFlavour(), MysqlFlavour()
    assert maria.wait_sql("0-2-18", 4.25) == (
        "SELECT MASTER_GTID_WAIT(%s, %s) AS done",
        ("0-2-18", 4.25),
    )
    assert mysql.wait_sql(f"{U2}:1-42", 2)[0].startswith("SELECT WAIT_FOR_EXECUTED_GTID_SET")
    assert maria.wait_succeeded(0) and not maria.wait_succeeded(-1)
    assert mysql.wait_succeeded(0) and not mysql.wait_succeeded(1)


def test_mariadb_aligns_a_former_primarys_slave_pos() -> None:
    f = MariaFlavour()
    old_primary = f.parse_vars(MARIA_VARS | {"binlog_state": "0-2-105", "slave_pos": ""})
    assert f.slave_pos_to_set(old_primary) == "0-2-105"
    replica = f.parse_vars(MARIA_VARS | {"binlog_state": "0-1-5,0-2-13", "slave_pos": "0-2-13"})
    assert f.slave_pos_to_set(replica) is None  # already matches: nothing to change
    assert MysqlFlavour().slave_pos_to_set(MysqlFlavour().parse_vars(MYSQL_VARS)) is None


def test_upstream_answer_parsing() -> None:
    assert MariaFlavour().parse_upstream("2\t0-1-26,0-2-27\t0-1-26\n") == (2, "0-1-26,0-2-27")
    assert MariaFlavour().parse_upstream("2\t0-2-9\tNULL") == (2, "0-2-9")
    assert MysqlFlavour().parse_upstream(f"7\t{U1}:1-5") == (7, f"{U1}:1-5")
    assert MariaFlavour().parse_upstream("garbage") == (None, None)


def test_binlog_args_select_the_errant_events() -> None:
    args = MariaFlavour().binlog_args("0-1-28", "0-1-26,0-2-27")
    assert "--start-position=0-1-26" in args
    assert "--do-domain-ids=0" in args and "--do-server-ids=1" in args
    assert "--start-position" not in " ".join(MariaFlavour().binlog_args("7-2-1", "0-2-5"))
    assert MysqlFlavour().binlog_args(f"{U1}:101-105", "") == [
        "--verbose",
        f"--include-gtids={U1}:101-105",
    ]


# ------------------------------------------------------------ shared row readers


def test_fence_kills_clients_only() -> None:
    rows: list[dict[str, Any]] = [
        {"id": 5, "user": "app", "command": "Sleep"},
        {"id": 6, "user": "repl", "command": "Binlog Dump"},
        {"id": 7, "user": "system user", "command": "Slave_SQL"},
        {"id": 8, "user": "dbha", "command": "Query"},  # ourselves
        {"id": 9, "user": "event_scheduler", "command": "Daemon"},
        {"id": 10, "user": "dbha", "command": "Query"},  # the peer's probe: a client too
        {"id": 11, "user": "repl", "command": "Binlog Dump GTID"},
        {"ID": 12, "USER": "app", "COMMAND": "Query"},
        {"id": None, "user": "app", "command": "Query"},
    ]
    assert clients_to_kill(rows, own_id=8) == [5, 10, 12]


@pytest.mark.parametrize(
    ("rows", "enabled", "active", "fell_back"),
    [
        ([], False, False, False),
        (
            [
                {"name": "RPL_SEMI_SYNC_MASTER_ENABLED", "value": "ON"},
                {"name": "RPL_SEMI_SYNC_MASTER_STATUS", "value": "ON"},
                {"name": "RPL_SEMI_SYNC_MASTER_CLIENTS", "value": "1"},
            ],
            True,
            True,
            False,
        ),
        (
            [
                {"name": "rpl_semi_sync_source_enabled", "value": "ON"},
                {"name": "Rpl_semi_sync_source_status", "value": "OFF"},
                {"name": "Rpl_semi_sync_source_clients", "value": "0"},
            ],
            True,
            False,
            True,
        ),
        ([{"name": "RPL_SEMI_SYNC_MASTER_ENABLED", "value": "OFF"}], False, False, False),
    ],
)
def test_semisync_and_its_silent_fallback(
    rows: list[dict[str, Any]], enabled: bool, active: bool, fell_back: bool
) -> None:
    semi = parse_semisync(rows)
    assert (semi.enabled, semi.active, semi.fell_back) == (enabled, active, fell_back)


# As the lab's MariaDB 10.11 answers with set_synchronous(on) and one commit waiting.
MARIA_SEMISYNC_ON = [
    {"name": "RPL_SEMI_SYNC_MASTER_TIMEOUT", "value": "4294967295"},
    {"name": "RPL_SEMI_SYNC_MASTER_ENABLED", "value": "ON"},
    {"name": "RPL_SEMI_SYNC_MASTER_WAIT_NO_SLAVE", "value": "ON"},
    {"name": "RPL_SEMI_SYNC_SLAVE_ENABLED", "value": "OFF"},
    {"name": "RPL_SEMI_SYNC_MASTER_CLIENTS", "value": "0"},
    {"name": "RPL_SEMI_SYNC_MASTER_STATUS", "value": "ON"},
    {"name": "RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS", "value": "1"},
]
MYSQL_SEMISYNC = [  # MySQL 8.0.26+ with the semisync_source / semisync_replica plugins
    {"name": "rpl_semi_sync_source_enabled", "value": "ON"},
    {"name": "rpl_semi_sync_source_timeout", "value": "10000"},
    {"name": "rpl_semi_sync_source_wait_no_replica", "value": "ON"},
    {"name": "rpl_semi_sync_replica_enabled", "value": "ON"},
    {"name": "Rpl_semi_sync_source_status", "value": "ON"},
    {"name": "Rpl_semi_sync_source_clients", "value": "1"},
    {"name": "Rpl_semi_sync_source_wait_sessions", "value": "0"},
]


def test_semisync_holds_only_with_a_wait_that_never_ends_on_its_own() -> None:
    """Commits count as synchronous only when the wait outlasts an hour and goes on
    with no replica connected: a default 10 s timeout is a fallback waiting to happen."""
    maria = parse_semisync(MARIA_SEMISYNC_ON)
    assert maria.holds and maria.weak is None
    assert (maria.waiting, maria.timeout_ms, maria.clients) == (1, 4294967295, 0)
    assert (maria.primary_side, maria.replica_side, maria.replica_enabled) == (
        "master",
        "slave",
        False,
    )
    mysql = parse_semisync(MYSQL_SEMISYNC)
    assert (
        mysql.active
        and not mysql.holds
        and mysql.weak == ("after 10000 ms without an acknowledgement")
    )
    assert (mysql.primary_side, mysql.replica_side, mysql.replica_enabled) == (
        "source",
        "replica",
        True,
    )
    no_wait = [
        *[r for r in MARIA_SEMISYNC_ON if "WAIT_NO_SLAVE" not in r["name"]],
        {"name": "RPL_SEMI_SYNC_MASTER_WAIT_NO_SLAVE", "value": "OFF"},
    ]
    assert parse_semisync(no_wait).weak == "as soon as no replica is connected"
    off = [{**r, "value": "OFF"} if r["name"].endswith("ENABLED") else r for r in MARIA_SEMISYNC_ON]
    assert not parse_semisync(off).holds and not parse_semisync(off).enabled
    plugin_missing = parse_semisync([])
    assert (plugin_missing.primary_side, plugin_missing.replica_side) == (None, None)


@pytest.mark.parametrize(
    "flavour", [MariaFlavour(version=(10, 11, 6)), MysqlFlavour(version=(8, 0, 36))]
)
def test_semisync_statements_follow_the_servers_spelling(flavour: MariaFlavour) -> None:
    """On: first a wait that never falls back (longest timeout, wait with no replica)
    and the lossless wait point (AFTER_SYNC), then enabled; off: disabled. The
    spelling is the one the server answered with (MySQL 8.0.26+ plugins say
    source/replica; older ones and MariaDB master/slave). The replica side lasts
    over a restart where the server can make it (MySQL's SET PERSIST); MariaDB has
    no such statement, and the supervisor re-asserts it."""
    assert flavour.semisync_primary_sql("master", True) == [
        "SET GLOBAL rpl_semi_sync_master_timeout = 4294967295",
        "SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON",
        "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC",
        "SET GLOBAL rpl_semi_sync_master_enabled = ON",
    ]
    assert flavour.semisync_primary_sql("source", True) == [
        "SET GLOBAL rpl_semi_sync_source_timeout = 4294967295",
        "SET GLOBAL rpl_semi_sync_source_wait_no_replica = ON",
        "SET GLOBAL rpl_semi_sync_source_wait_point = AFTER_SYNC",
        "SET GLOBAL rpl_semi_sync_source_enabled = ON",
    ]
    assert flavour.semisync_primary_sql("source", False) == [
        "SET GLOBAL rpl_semi_sync_source_enabled = OFF"
    ]
    scope = "PERSIST" if flavour.name == "mysql" else "GLOBAL"
    assert flavour.semisync_replica_sql("replica", True) == (
        f"SET {scope} rpl_semi_sync_replica_enabled = ON"
    )
    assert flavour.semisync_replica_sql("slave", False) == (
        f"SET {scope} rpl_semi_sync_slave_enabled = OFF"
    )
    with pytest.raises(ValueError):
        flavour.semisync_primary_sql("slave", True)
    # What the probe reads covers every name these statements set or check.
    for name in ("enabled", "timeout", "status", "clients", "wait_sessions"):
        assert f"rpl_semi_sync_master_{name}" in flavour.semisync_sql.lower()


def test_mysql_reads_both_semisync_spellings_and_says_how_to_get_the_plugin() -> None:
    mysql = MysqlFlavour(version=(8, 0, 36)).semisync_sql
    for name in (
        "rpl_semi_sync_source_enabled",
        "rpl_semi_sync_source_timeout",
        "rpl_semi_sync_source_wait_no_replica",
        "rpl_semi_sync_master_wait_no_slave",
        "rpl_semi_sync_replica_enabled",
        "rpl_semi_sync_slave_enabled",
        "Rpl_semi_sync_source_wait_sessions",
        "Rpl_semi_sync_master_wait_sessions",
    ):
        assert f"'{name}'" in mysql
    assert "performance_schema" in mysql
    assert "semisync_source.so" in MysqlFlavour().semisync_missing


def test_replicas_of_a_primary() -> None:
    semi = parse_semisync(
        [
            {"name": "rpl_semi_sync_master_enabled", "value": "ON"},
            {"name": "rpl_semi_sync_master_status", "value": "ON"},
            {"name": "rpl_semi_sync_master_clients", "value": "1"},
        ]
    )
    hosts = [{"Server_id": 1, "Host": "a", "Port": 3306, "Master_id": 2}]
    dumps = [
        {
            "host": "198.18.0.11:56866",
            "command": "Binlog Dump",
            "state": "Master has sent all binlog to slave; waiting for more updates",
        }
    ]
    (one,) = parse_replicas(hosts, dumps, semi)
    assert (one.name, one.address, one.state, one.sync) == ("a", "198.18.0.11", "streaming", True)
    two = parse_replicas([], [*dumps, {"host": "10.0.0.9:4000", "state": "Sending binlog"}], semi)
    assert [r.name for r in two] == ["198.18.0.11", "10.0.0.9"]
    assert not any(r.sync for r in two) and two[1].state == "catchup"
    assert parse_replicas(hosts, [], semi) == ()


# ---------------------------------------------------------------- error mapping


def _pymysql_error_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(pymysql.err, inspect.isclass)
        if issubclass(cls, pymysql.MySQLError)
    ]


def _os_error_classes() -> list[type[BaseException]]:
    import builtins

    return [
        cls for cls in vars(builtins).values() if isinstance(cls, type) and issubclass(cls, OSError)
    ]


def _instances() -> list[BaseException]:
    out: list[BaseException] = []
    for cls in _pymysql_error_classes():
        out += [cls(2003, "Can't connect"), cls(1064, "syntax"), cls()]
    for cls in _os_error_classes():
        out.append(cls(errno.EIO, "boom"))
    for cls in (subprocess.SubprocessError, subprocess.CalledProcessError):
        out.append(cls() if cls is subprocess.SubprocessError else cls(1, ["x"]))
    out += [
        subprocess.TimeoutExpired(["x"], 1.0),
        CommandFailed("x: exit 1"),
        CommandTimeout("x: late"),
        struct.error("unpack"),
        EOFError(),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
    ]
    return out


def test_every_library_exception_is_mapped() -> None:
    """Completeness: every PyMySQL, OS and subprocess exception class (and the rest of
    MAPPED) becomes a DbError at the boundary, with the original kept as the cause."""
    instances = _instances()
    assert {type(e) for e in instances} >= set(_pymysql_error_classes())
    for exc in instances:
        assert isinstance(exc, MAPPED), type(exc)
        with pytest.raises(DbError) as got, boundary("probe a"):
            raise exc
        assert got.value.__cause__ is exc
        assert str(got.value).startswith("probe a")


def _lost(cause: BaseException) -> pymysql.err.OperationalError:
    try:
        try:
            raise cause
        except OSError as inner:
            raise pymysql.err.OperationalError(2013, f"Lost connection ({inner})") from None
    except pymysql.err.OperationalError as exc:
        exc.__context__ = cause
        return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (pymysql.err.OperationalError(2003, "Can't connect ([Errno 111] refused)"), DbUnreachable),
        (pymysql.err.OperationalError(1045, "Access denied"), DbUnreachable),
        (pymysql.err.OperationalError(2006, "gone away"), DbUnreachable),
        (pymysql.err.InterfaceError(0, ""), DbUnreachable),
        (pymysql.err.OperationalError(1969, "max_statement_time exceeded"), DbTimeout),
        (pymysql.err.OperationalError(3024, "maximum statement execution time"), DbTimeout),
        (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), DbTimeout),
        (_lost(TimeoutError("timed out")), DbTimeout),
        (_lost(ConnectionResetError(errno.ECONNRESET, "reset")), DbUnreachable),
        (pymysql.err.ProgrammingError(1064, "syntax"), DbError),
        (TimeoutError(), DbTimeout),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), DbUnreachable),
        (FileNotFoundError(errno.ENOENT, "no file"), DbError),
        (subprocess.TimeoutExpired(["mariadb-dump"], 3), DbTimeout),
        (CommandTimeout("late"), DbTimeout),
        (CommandFailed("exit 2"), DbCommandFailed),
        (subprocess.CalledProcessError(2, ["x"]), DbCommandFailed),
    ],
)
def test_mapping_picks_the_right_kind(exc: BaseException, kind: type[DbError]) -> None:
    got = map_error(exc, "verb")
    assert type(got) is kind


def test_connect_timeout_is_a_timeout() -> None:
    exc = pymysql.err.OperationalError(2003, "Can't connect to MySQL server (timed out)")
    exc.original_exception = TimeoutError("timed out")  # type: ignore[attr-defined]
    assert isinstance(map_error(exc, "probe"), DbTimeout)


def test_secrets_never_reach_a_message() -> None:
    exc = pymysql.err.ProgrammingError(1064, "near 'MASTER_PASSWORD = 'hunter2-xyz''")
    assert "hunter2-xyz" not in str(map_error(exc, "follow", ("hunter2-xyz",)))


# ------------------------------------------------------------------ option files


def test_option_file_quotes_and_escapes() -> None:
    text = option_text("dbha", 'p"a\\ss #;\nx', None, 3306, "/run/my.sock")
    lines = text.splitlines()
    assert lines[0] == "[client]"
    assert lines[2] == 'password="p"a\\\\ss #;\\nx"'
    assert 'socket="/run/my.sock"' in lines and not any(ln.startswith("host") for ln in lines)
    tcp = option_text("dbha", "pw", "198.18.0.12", 3307, None)
    assert 'host="198.18.0.12"' in tcp and "port=3307" in tcp


# --------------------------------------------------------------------- relay log


def _event(timestamp: int, kind: int, body: bytes = b"") -> bytes:
    size = relaylog.HEADER.size + len(body)
    return relaylog.HEADER.pack(timestamp, kind, 2, size, 0, 0) + body


def test_scan_finds_the_first_transaction_after_the_position() -> None:
    data = relaylog.MAGIC + _event(100, 15, b"x" * 40) + _event(200, 160, b"y" * 9)
    data += _event(300, 162, b"z" * 20) + _event(400, 162)
    f = io.BytesIO(data)
    assert relaylog.scan(f, 4, frozenset({162}), 50)[0] == 300
    assert relaylog.scan(f, 4, frozenset({33}), 50)[0] is None  # no MySQL GTID event
    assert relaylog.scan(io.BytesIO(data[:30]), 4, frozenset({162}), 50)[0] is None  # cut short
    corrupt = relaylog.MAGIC + relaylog.HEADER.pack(1, 15, 2, 3, 0, 0)
    assert relaylog.scan(io.BytesIO(corrupt), 4, frozenset({162}), 50) == (None, 0)


def test_pending_timestamp_follows_into_the_next_relay_log(tmp_path: Path) -> None:
    first = tmp_path / "relay-bin.000009"
    first.write_bytes(relaylog.MAGIC + _event(100, 15, b"x" * 10))
    (tmp_path / "relay-bin.000010").write_bytes(relaylog.MAGIC + _event(50, 15) + _event(777, 162))
    end = first.stat().st_size
    assert (
        relaylog.pending_timestamp(str(tmp_path), "relay-bin.000009", end, frozenset({162})) == 777
    )
    assert relaylog.pending_timestamp(str(tmp_path), str(first), 4, frozenset({162})) == 777
    assert relaylog.pending_timestamp(None, "relay-bin.000009", 4, frozenset({162})) is None
    assert relaylog.pending_timestamp(str(tmp_path), "nope.000001", 4, frozenset({162})) is None
    assert relaylog.next_file(Path("relay-bin.000099")) == Path("relay-bin.000100")
    assert relaylog.next_file(Path("relay-bin")) is None


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"engine": "oracle"}, "engine"),
        ({"host": "127.0.0.1"}, "exactly one of host and socket"),
        ({"socket": None}, "exactly one of host and socket"),
        ({"port": 0}, "port"),
        ({"password_file": "relative.pw"}, "password_file must be an absolute path"),
        ({"heartbeat_period": 0}, "> 0"),
    ],
)
def test_settings_check_themselves(changes: dict[str, Any], fragment: str) -> None:
    base: dict[str, Any] = {"name": "a", "socket": "/run/mysqld/mysqld.sock"}
    MysqlSettings(**base)
    with pytest.raises(ValueError, match=fragment):
        MysqlSettings(**(base | changes))


# ------------------------------------------------------- parsers never raise

_values = st.one_of(
    st.none(), st.text(max_size=40), st.integers(), st.binary(max_size=20), st.floats()
)
_other_keys = ["id", "user", "command", "host", "state", "name", "value", "Server_id", "Host"]
_semisync_names = st.sampled_from([r["name"] for r in MARIA_SEMISYNC_ON + MYSQL_SEMISYNC])
_semisync_rows = st.lists(
    st.fixed_dictionaries(
        {
            "name": _semisync_names,
            "value": st.one_of(st.none(), st.text(max_size=12), st.integers()),
        }
    ),
    max_size=8,
)
_keys = st.sampled_from(
    [*MARIA_REPLICA_STATUS, *MYSQL_REPLICA_STATUS, *MARIA_VARS, *MYSQL_VARS, *_other_keys]
)
_rows = st.lists(st.dictionaries(_keys, _values, max_size=12), max_size=3)


@given(_semisync_rows)
def test_semisync_reader_never_raises(rows: list[dict[str, Any]]) -> None:
    semi = parse_semisync(rows)
    assert semi.holds is (semi.active and semi.weak is None)
    assert semi.primary_side in (None, "master", "source")
    assert semi.replica_side in (None, "slave", "replica")


@given(_rows, st.text(max_size=60))
@example([{"Master_Host": "x", "Master_Port": float("inf"), "Relay_Log_Pos": "nan"}], "1\tinf")
def test_readers_of_server_answers_never_raise(rows: list[dict[str, Any]], line: str) -> None:
    for f in (MariaFlavour(), MysqlFlavour()):
        f.parse_replica_status(rows)
        f.parse_vars(rows[0] if rows else None)
        f.parse_upstream(line)
        f.slave_pos_to_set(f.parse_vars(rows[0] if rows else None))
    semi = parse_semisync(rows)
    assert isinstance(semi.holds, bool) and (semi.weak is None or isinstance(semi.weak, str))
    parse_replicas(rows, rows, semi)
    clients_to_kill(rows, 1)
    detect(line)


class _StopSession:
    """A session whose STOP of the receiver hangs, as it does on a semi-synchronous
    MariaDB replica whose primary is dead, until the server's connections to the
    primary are ended (or 5 s pass)."""

    def __init__(self, hang: float = 5.0) -> None:
        self.flavour = MariaFlavour((10, 11, 0))
        self.ended = threading.Event()
        self.hang = hang
        self.ran: list[str] = []

    def run(self, sql: str, *args: Any, **kw: Any) -> None:
        self.ran.append(sql)
        self.ended.wait(self.hang)


def test_a_hanging_receiver_stop_ends_the_servers_connections_to_its_primary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The STOP runs past the grace: the server's own connections (its pid, from the
    pid file) to the primary's address and port are ended, and the STOP returns."""
    s = _StopSession()
    calls: list[tuple[int, str, int]] = []

    def end(pid: int, host: str, port: int, *, timeout: float) -> int:
        calls.append((pid, host, port))
        s.ended.set()
        return 1

    monkeypatch.setattr(mysql_driver, "_server_pid", lambda session: 4242)
    monkeypatch.setattr(mysql_driver.tcpkill, "end_connections", end)
    rep = types.SimpleNamespace(source_host="198.18.0.12", source_port=3306)
    mysql_driver.MysqlDriver._stop_receiver(s, rep)  # type: ignore[arg-type]
    assert s.ran == ["STOP SLAVE IO_THREAD"]
    assert calls and set(calls) == {(4242, "198.18.0.12", 3306)}


def test_a_receiver_stop_of_a_remote_server_ends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pid (the server is not on this host): nothing is ended, however long the
    STOP takes."""
    s = _StopSession(hang=0.3)
    calls: list[object] = []
    monkeypatch.setattr(mysql_driver, "_server_pid", lambda session: None)
    monkeypatch.setattr(mysql_driver, "RECEIVER_STOP_GRACE", 0.0)
    monkeypatch.setattr(mysql_driver.tcpkill, "end_connections", lambda *a, **k: calls.append(a))
    rep = types.SimpleNamespace(source_host="198.18.0.12", source_port=3306)
    mysql_driver.MysqlDriver._stop_receiver(s, rep)  # type: ignore[arg-type]
    assert s.ran == ["STOP SLAVE IO_THREAD"] and calls == []


def test_the_server_pid_is_only_a_live_mariadbd_or_mysqld(tmp_path: Path) -> None:
    """The pid file the server names must be readable here and name a live
    mariadbd/mysqld: a pid file naming another process, or none, gives None."""

    class One:
        def __init__(self, path: object) -> None:
            self.path = path

        def one(self, sql: str) -> dict[str, Any] | None:
            return {"f": self.path}

    mine = tmp_path / "mysqld.pid"
    mine.write_text(f"{os.getpid()}\n")  # this test's own process: not a server
    assert mysql_driver._server_pid(One(str(mine))) is None  # type: ignore[arg-type]
    assert mysql_driver._server_pid(One(str(tmp_path / "gone.pid"))) is None  # type: ignore[arg-type]
    (tmp_path / "junk.pid").write_text("not a pid\n")
    assert mysql_driver._server_pid(One(str(tmp_path / "junk.pid"))) is None  # type: ignore[arg-type]
