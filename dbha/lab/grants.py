"""The database accounts dbha needs, as the exact statements docs/grants.md gives
operators: no SUPERUSER, no ALL PRIVILEGES, only what each driver verb uses.

The lab's operator-built pairs (``dbha lab up --pairs operator``) run exactly
these statements, so that the driver tests prove the list is enough; a unit test
checks that docs/grants.md shows each of them verbatim. ``{password}`` stands for
the account's password: the lab sends it over the server's socket (PostgreSQL)
or on the client's standard input (MariaDB), never on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Grant:
    """One statement, the driver verbs that need it, and why (in dbha's words)."""

    sql: str
    verbs: tuple[str, ...]
    why: str


PG_USER = "dbha"
PG_REPLICATION_USER = "replicator"
MARIA_USER = "'dbha'@'%'"
MARIA_REPLICATION_USER = "'repl'@'%'"

# PostgreSQL 15. Roles are cluster-wide and replicated: run these on the primary.
PG_GRANTS: tuple[Grant, ...] = (
    Grant(
        "CREATE ROLE dbha LOGIN PASSWORD '{password}'",
        ("all",),
        "dbha's own login; no SUPERUSER, CREATEROLE, CREATEDB or REPLICATION attribute",
    ),
    Grant(
        "GRANT pg_monitor TO dbha",
        ("probe", "wait_replayed", "set_synchronous", "follow"),
        "see every standby's positions in pg_stat_replication, the WAL receiver "
        "(pg_stat_wal_receiver), the sessions waiting for a standby (wait events in "
        "pg_stat_activity), the WAL directory (pg_ls_waldir) and primary_conninfo: "
        "without it these read as NULL or are refused",
    ),
    Grant(
        "GRANT pg_signal_backend TO dbha",
        ("fence",),
        "end the client sessions (pg_terminate_backend) so that none keeps a "
        "read-write transaction open past the fence",
    ),
    Grant(
        "GRANT pg_checkpoint TO dbha",
        ("promote",),
        "CHECKPOINT after the promotion, so that the new timeline reaches pg_control "
        "and pg_rewind works later",
    ),
    Grant(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO dbha",
        ("fence", "unfence", "promote", "set_synchronous", "follow"),
        "make a setting written with ALTER SYSTEM take effect",
    ),
    Grant(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_promote(boolean, integer) TO dbha",
        ("promote",),
        "end recovery: the standby becomes a primary",
    ),
    Grant(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_wal_replay_resume() TO dbha",
        ("wait_replayed",),
        "resume a paused replay before a forced promotion (an automatic one refuses "
        "a paused replica)",
    ),
    Grant(
        "GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only TO dbha",
        ("fence", "unfence", "promote"),
        "the soft fence: a read-only default that survives a restart, lifted again "
        "by unfence and by a promotion",
    ),
    Grant(
        "GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO dbha",
        ("set_synchronous",),
        "make commits wait for the standby, or stop waiting",
    ),
    Grant(
        "GRANT ALTER SYSTEM ON PARAMETER primary_conninfo, primary_slot_name TO dbha",
        ("follow", "rejoin"),
        "re-point a running standby at another primary without a restart",
    ),
    Grant(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO dbha",
        ("rejoin", "follow"),
        "pg_rewind reads the source's data directory (PostgreSQL's documented "
        "non-superuser grants for pg_rewind; follow runs pg_rewind --dry-run on a "
        "former primary)",
    ),
    Grant(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO dbha",
        ("rejoin", "follow"),
        "pg_rewind, as above",
    ),
    Grant(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO dbha",
        ("rejoin", "follow"),
        "pg_rewind, as above",
    ),
    Grant(
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)"
        " TO dbha",
        ("rejoin", "follow"),
        "pg_rewind, as above",
    ),
)

PG_REPLICATION: tuple[Grant, ...] = (
    Grant(
        "CREATE ROLE replicator LOGIN REPLICATION PASSWORD '{password}'",
        ("follow", "rejoin"),
        "the standby streams WAL with it; dbha also creates the standby's slot on "
        "the upstream (pg_receivewal --create-slot) and runs pg_basebackup with it",
    ),
)

# MariaDB 10.11. Run on the primary with the binary log on: the replica gets them.
MARIA_GRANTS: tuple[Grant, ...] = (
    Grant(
        "CREATE USER 'dbha'@'%' IDENTIFIED BY '{password}'",
        ("all",),
        "dbha's own login: over the local socket, and over the network to the peer "
        "(a rejoin reads the upstream's GTID state and copies its databases)",
    ),
    Grant(
        "GRANT PROCESS, SLAVE MONITOR, REPLICATION MASTER ADMIN ON *.* TO 'dbha'@'%'",
        ("probe", "fence", "set_synchronous", "follow", "rejoin"),
        "PROCESS: every connection in the process list (the replicas' binlog dump "
        "threads, the clients a fence ends); SLAVE MONITOR: SHOW SLAVE STATUS; "
        "REPLICATION MASTER ADMIN: SHOW SLAVE HOSTS, the primary side of "
        "semi-synchronous replication, and gtid_binlog_state after a re-clone",
    ),
    Grant(
        "GRANT READ_ONLY ADMIN, CONNECTION ADMIN ON *.* TO 'dbha'@'%'",
        ("fence", "unfence", "promote", "follow", "rejoin"),
        "READ_ONLY ADMIN: SET GLOBAL read_only, and writing on a read-only server "
        "(the re-clone of a fenced one); CONNECTION ADMIN: KILL the application's "
        "connections",
    ),
    Grant(
        "GRANT REPLICATION SLAVE ADMIN, RELOAD ON *.* TO 'dbha'@'%'",
        ("wait_replayed", "promote", "follow", "rejoin"),
        "REPLICATION SLAVE ADMIN: START / STOP SLAVE, CHANGE MASTER, gtid_slave_pos "
        "and the replica side of semi-synchronous replication; RELOAD: RESET SLAVE "
        "ALL (promote) and RESET MASTER (re-clone)",
    ),
    Grant(
        "GRANT SHUTDOWN ON *.* TO 'dbha'@'%'",
        ("fence (hard)",),
        "the hard fence stops the server with SQL SHUTDOWN when [database] "
        "stop_command is not set; not needed when it is",
    ),
    Grant(
        "GRANT BINLOG MONITOR, BINLOG ADMIN, REPLICATION SLAVE ON *.* TO 'dbha'@'%'",
        ("rejoin (re-clone)",),
        "BINLOG MONITOR: SHOW BINARY LOGS and the dump's binlog position; BINLOG "
        "ADMIN: sql_log_bin = 0, so that the re-clone is not logged; REPLICATION "
        "SLAVE: mariadb-binlog reads the errant transactions from the server",
    ),
    Grant(
        "GRANT SELECT, SHOW VIEW, EVENT, TRIGGER, LOCK TABLES ON *.* TO 'dbha'@'%'",
        ("rejoin (re-clone)",),
        "mariadb-dump of every database: the copy of this server kept aside before "
        "a re-clone, and the copy taken from the upstream",
    ),
    Grant(
        "GRANT CREATE, DROP, ALTER, INSERT, CREATE VIEW, CREATE ROUTINE, ALTER ROUTINE, "
        "SET USER ON *.* TO 'dbha'@'%'",
        ("rejoin (re-clone)",),
        "empty the server (DROP DATABASE) and load the upstream's copy into it; "
        "SET USER keeps the views', routines' and triggers' DEFINER",
    ),
)

MARIA_REPLICATION: tuple[Grant, ...] = (
    Grant(
        "CREATE USER 'repl'@'%' IDENTIFIED BY '{password}'",
        ("follow", "rejoin"),
        "the replica's account, named in CHANGE MASTER",
    ),
    Grant(
        "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'",
        ("follow", "rejoin"),
        "read the primary's binary log",
    ),
)

ENGINES = ("postgresql", "mariadb")


def grants(engine: str) -> tuple[Grant, ...]:
    """dbha's own account: its statements, in order."""
    if engine == "postgresql":
        return PG_GRANTS
    if engine == "mariadb":
        return MARIA_GRANTS
    raise ValueError(f"no grant list for engine {engine!r} (one of {', '.join(ENGINES)})")


def replication(engine: str) -> tuple[Grant, ...]:
    """The replication account: its statements, in order."""
    if engine == "postgresql":
        return PG_REPLICATION
    if engine == "mariadb":
        return MARIA_REPLICATION
    raise ValueError(f"no grant list for engine {engine!r} (one of {', '.join(ENGINES)})")


def render(statements: tuple[Grant, ...], password: str) -> list[str]:
    """The statements with ``password`` in place (quoted as an SQL string literal)."""
    if "\\" in password:
        raise ValueError("a password for these statements must not contain a backslash")
    quoted = password.replace("'", "''")
    return [g.sql.replace("{password}", quoted) for g in statements]
