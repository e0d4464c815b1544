"""Pairs built as an operator would build them, following each engine's own
documentation rather than what dbha would choose (``dbha lab up --pairs operator``).

PostgreSQL 15 ("Log-Shipping Standby Servers", pg_basebackup): data checksums
(so pg_rewind needs no wal_log_hints), ordinary replication settings in one
included file, ``cluster_name = '15/main'`` on both nodes as Debian sets it, no
synchronous_standby_names, the standby made with ``pg_basebackup -R -X stream
-C -S standby1`` (a slot not named after any dbha node, a primary_conninfo
without application_name, so the standby reports itself as '15/main').

MariaDB 10.11 ("Setting up replication", GTID): the settings dbha's docs ask for,
no semi-synchronous replication on either side, ``CHANGE MASTER TO ...
MASTER_USE_GTID=slave_pos`` with the server's default connect retry and
heartbeat.

dbha's accounts get the statements of docs/grants.md (``dbha.lab.grants``), not
SUPERUSER or ALL PRIVILEGES. Everything here is pure text; ``dbha.lab.pg`` and
``dbha.lab.maria`` run it.
"""

from __future__ import annotations

from psycopg import conninfo as pgconninfo

PAIRS = ("dbha", "operator")
DEFAULT_PAIRS = "dbha"

PG_CLUSTER_NAME = "15/main"  # what Debian's pg_createcluster writes for 15/main
PG_SLOT = "standby1"  # the slot the operator names in pg_basebackup -C -S
PG_CONF = "ha.conf"  # included from postgresql.conf, the same on both nodes


def check_pairs(pairs: str) -> str:
    if pairs not in PAIRS:
        raise ValueError(f"no pair style {pairs!r} (one of {', '.join(PAIRS)})")
    return pairs


def pg_conf() -> str:
    """The operator's settings file, identical on both nodes (pg_basebackup copies it)."""
    return f"""\
# Streaming replication, as PostgreSQL 15's documentation describes it
# ("Log-Shipping Standby Servers"); the same file on both nodes.
listen_addresses = '0.0.0.0'
cluster_name = '{PG_CLUSTER_NAME}'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
# This machine's size, not replication's:
shared_buffers = '32MB'
max_connections = 60
"""


def _conf_unquote(raw: str) -> str | None:
    """A quoted value of a PostgreSQL configuration file ('' and backslash escapes),
    or None if ``raw`` is not one quoted string."""
    if len(raw) < 2 or raw[0] != "'" or raw[-1] != "'":
        return None
    out, i, body = [], 0, raw[1:-1]
    while i < len(body):
        c = body[i]
        if c == "'" and body[i + 1 : i + 2] != "'":
            return None  # a lone quote ends the string before the last character
        if c in "'\\":
            if i + 1 >= len(body):
                return None
            c = body[i + 1]
            i += 1
        out.append(c)
        i += 1
    return "".join(out)


def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def auto_conf_without_password(text: str) -> tuple[str, bool]:
    """postgresql.auto.conf as ``pg_basebackup -R`` wrote it, with any password taken
    out of primary_conninfo (the passfile it names holds it); and whether there was
    one. Other lines are kept as they are."""
    out, found = [], False
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "primary_conninfo":
            conninfo = _conf_unquote(value.strip())
            if conninfo is None:
                raise ValueError("primary_conninfo is not one quoted string")
            params = pgconninfo.conninfo_to_dict(conninfo)
            if "password" in params:
                found = True
                del params["password"]
                line = f"primary_conninfo = {_conf_quote(pgconninfo.make_conninfo('', **params))}"
        out.append(line)
    return "".join(f"{line}\n" for line in out), found


def maria_cnf(
    *,
    datadir: str,
    socket: str,
    pidfile: str,
    log_error: str,
    tmpdir: str,
    port: int,
    server_id: int,
    primary: bool,
) -> str:
    """The operator's my.cnf: what dbha's docs ask of a MariaDB pair and no
    semi-synchronous replication at all (no rpl_semi_sync_* line). ``primary``
    changes nothing: both nodes start read-only, and the primary is opened at run
    time (by its supervisor, or by the lab when none runs: MariaNode.open)."""
    return f"""\
[mysqld]
datadir = {datadir}
socket = {socket}
pid-file = {pidfile}
log_error = {log_error}
tmpdir = {tmpdir}
port = {port}
bind-address = 0.0.0.0
server_id = {server_id}
log_bin = mariadb-bin
relay_log = relay-bin
log_slave_updates = ON
gtid_strict_mode = ON
binlog_format = ROW
sync_binlog = 1
innodb_flush_log_at_trx_commit = 1
relay_log_recovery = ON
skip_name_resolve = ON
# Both nodes start read-only, as docs/config.md asks: a primary that dies and comes
# back must take no write before its supervisor (or its operator) opens it.
read_only = ON
# This machine's size, not replication's:
innodb_buffer_pool_size = 64M
innodb_log_file_size = 48M
performance_schema = OFF
max_connections = 60
"""


def maria_change_master(host: str, port: int, user: str, password: str) -> str:
    """CHANGE MASTER as MariaDB's "Setting up replication" page writes it with GTID:
    the server's default MASTER_CONNECT_RETRY and MASTER_HEARTBEAT_PERIOD."""
    if "'" in password or "\\" in password:
        raise ValueError("a replication password here must not contain a quote or backslash")
    return (
        f"CHANGE MASTER TO MASTER_HOST='{host}', MASTER_PORT={port}, "
        f"MASTER_USER='{user}', MASTER_PASSWORD='{password}', "
        "MASTER_USE_GTID=slave_pos;\n"
    )
