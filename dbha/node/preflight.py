"""``dbha preflight``: every prerequisite dbha relies on, checked on the live pair.

An operator's pair was not built for dbha. Before a supervisor starts on it,
the preflight connects to this node's server and to the peer's (the same
account, over the network) and looks at this host, and says for each
prerequisite whether it holds, what is wrong, and the exact fix. Some it
can see dbha will make right itself once it runs (a standby named otherwise,
the replica side of semi-sync off, the AFTER_COMMIT wait point): those say so.

Facts are gathered by small bounded functions (SQL through the drivers'
own sessions, /proc and /sys); :func:`judge_pg`, :func:`judge_mysql` and
:func:`judge_host` are pure and turn facts into :class:`Item` values. The
grants checked are those of docs/grants.md.

Levels: ``ok``; ``fix`` (not right yet, and dbha makes it right when it runs);
``warn`` (works, but weaker than it should be); ``fail`` (does not work, or
is unsafe). ``dbha run`` checks this node's server and host the same way at
start: it logs every ``fix`` and ``warn`` and refuses to start on an item
marked ``unsafe``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dbha.config import Config
from dbha.errors import DbhaError

LEVELS = ("ok", "fix", "warn", "fail")
WILDCARDS_PG = {"*", "0.0.0.0", "::"}
WILDCARDS_MY = {"", "*", "0.0.0.0", "::"}
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
TIMEOUT = 5.0  # bound on each server's checks (seconds)


@dataclass(frozen=True, slots=True)
class Item:
    level: str  # one of LEVELS
    where: str  # "a (this node)", "b (peer)", "host"
    what: str
    fix: str = ""
    unsafe: bool = False  # dbha run refuses to start on it

    def line(self) -> str:
        return f"{self.level.upper():4} {self.where}: {self.what}" + (
            f"\n     fix: {self.fix}" if self.fix else ""
        )


# --------------------------------------------------------------- PostgreSQL

PG_FACTS_SQL = """
SELECT pg_is_in_recovery() AS recovery,
       current_setting('wal_log_hints') AS wal_log_hints,
       current_setting('data_checksums') AS data_checksums,
       current_setting('hot_standby') AS hot_standby,
       current_setting('listen_addresses') AS listen,
       current_setting('synchronous_commit') AS sync_commit,
       current_setting('primary_conninfo') AS conninfo,
       current_setting('primary_slot_name') AS slot,
       current_setting('cluster_name') AS cluster_name,
       current_setting('wal_keep_size') AS wal_keep_size,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
       pg_has_role('pg_monitor', 'MEMBER') AS pg_monitor,
       pg_has_role('pg_signal_backend', 'MEMBER') AS pg_signal_backend,
       pg_has_role('pg_checkpoint', 'MEMBER') AS pg_checkpoint,
       has_function_privilege('pg_promote(boolean, integer)', 'EXECUTE') AS f_promote,
       has_function_privilege('pg_reload_conf()', 'EXECUTE') AS f_reload,
       has_function_privilege('pg_wal_replay_resume()', 'EXECUTE') AS f_resume,
       has_parameter_privilege('default_transaction_read_only', 'ALTER SYSTEM') AS p_read_only,
       has_parameter_privilege('synchronous_standby_names', 'ALTER SYSTEM') AS p_sync_names,
       has_parameter_privilege('primary_conninfo', 'ALTER SYSTEM') AS p_conninfo,
       has_parameter_privilege('primary_slot_name', 'ALTER SYSTEM') AS p_slot,
       (SELECT count(*) FROM pg_replication_slots WHERE NOT active)::int AS inactive_slots
"""

# (fact, what it lets dbha do, the statement that grants it)
PG_GRANTS = (
    ("pg_monitor", "read replication state", "GRANT pg_monitor TO {user};"),
    ("pg_signal_backend", "end sessions when fencing", "GRANT pg_signal_backend TO {user};"),
    ("pg_checkpoint", "checkpoint after a promotion", "GRANT pg_checkpoint TO {user};"),
    (
        "f_promote",
        "promote",
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_promote(boolean, integer) TO {user};",
    ),
    (
        "f_reload",
        "apply settings",
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO {user};",
    ),
    (
        "f_resume",
        "resume a paused replay when a failover is forced",
        "GRANT EXECUTE ON FUNCTION pg_catalog.pg_wal_replay_resume() TO {user};",
    ),
    (
        "p_read_only",
        "fence",
        "GRANT ALTER SYSTEM ON PARAMETER default_transaction_read_only TO {user};",
    ),
    (
        "p_sync_names",
        "synchronous commit",
        "GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO {user};",
    ),
    (
        "p_conninfo",
        "re-point a standby",
        "GRANT ALTER SYSTEM ON PARAMETER primary_conninfo, primary_slot_name TO {user};",
    ),
    (
        "p_slot",
        "re-point a standby",
        "GRANT ALTER SYSTEM ON PARAMETER primary_conninfo, primary_slot_name TO {user};",
    ),
)


def _on(value: object) -> bool:
    return str(value).strip().lower() in ("on", "true", "1", "yes")


def judge_pg(cfg: Config, facts: Mapping[str, Any], where: str, node: str) -> list[Item]:
    """The PostgreSQL prerequisites on one server whose node is named ``node``."""
    from dbha.db.postgres.driver import standby_name

    out: list[Item] = []
    sync = cfg.replication.mode == "sync"
    replica = bool(facts.get("recovery"))
    user = cfg.database.user

    def add(level: str, what: str, fix: str = "", unsafe: bool = False) -> None:
        out.append(Item(level, where, what, fix, unsafe))

    add("ok", f"server answers as {'a standby' if replica else 'a primary'}")
    if _on(facts.get("wal_log_hints")) or _on(facts.get("data_checksums")):
        add("ok", "pg_rewind can rejoin a former primary (wal_log_hints or data checksums)")
    else:
        add(
            "warn",
            "wal_log_hints is off and data checksums are off: pg_rewind cannot rejoin a "
            "former primary, a rejoin copies the whole database (pg_basebackup)",
            "ALTER SYSTEM SET wal_log_hints = on; then restart the server",
        )
    if sync and str(facts.get("sync_commit")) in ("off", "local"):
        add(
            "fail",
            f"synchronous_commit = {facts.get('sync_commit')}: commits would not wait for "
            'the standby although replication.mode = "sync"',
            "ALTER SYSTEM SET synchronous_commit = on; SELECT pg_reload_conf();",
            unsafe=True,
        )
    listen = {x.strip() for x in str(facts.get("listen", "")).split(",")}
    vip = str(cfg.vip.address.ip)
    if listen & WILDCARDS_PG or vip in listen:
        add("ok", f"listens on {', '.join(sorted(listen))} (the VIP {vip} is served)")
    else:
        add(
            "fail",
            f"listen_addresses = {', '.join(sorted(listen))}: clients of the VIP {vip} "
            "cannot connect once it moves here",
            "listen_addresses = '*' (or add the VIP, with net.ipv4.ip_nonlocal_bind = 1)",
        )
    if replica:
        if not _on(facts.get("hot_standby")):
            add("warn", "hot_standby is off: dbha cannot probe the standby's position", "")
        name = standby_name(facts.get("conninfo"), facts.get("cluster_name"))
        conninfo = str(facts.get("conninfo") or "")
        inline = "password=" in conninfo.replace(" ", "")
        if name == node:
            add("ok", f"the standby connects as {node!r}, the name the primary waits for")
        elif inline:
            add(
                "fail" if sync else "warn",
                f"the standby connects as {name!r}, not {node!r}, and primary_conninfo holds "
                "a password inline, so dbha will not rewrite it",
                f"use a passfile, and add application_name={node} to primary_conninfo",
            )
        else:
            add(
                "fix" if sync else "ok",
                f"the standby connects as {name!r}, not {node!r}"
                + (
                    ": dbha sets application_name in primary_conninfo when it runs (rule "
                    "replica-prepare), so that synchronous commits wait for it"
                    if sync
                    else " (matters only in synchronous mode)"
                ),
            )
        slot = str(facts.get("slot") or "")
        if not slot:
            add(
                "warn",
                "the standby uses no replication slot: the primary may remove WAL it still needs",
                f"dbha's follow and rejoin create and use slot {node!r}",
            )
        elif slot != node:
            add(
                "ok",
                f"the standby uses slot {slot!r}; when dbha re-points it, it uses {node!r} "
                f"and drops {slot!r}",
            )
    inactive = int(facts.get("inactive_slots") or 0)
    if inactive:
        add(
            "warn",
            f"{inactive} inactive replication slot(s): each holds WAL on this server for ever",
            "SELECT pg_drop_replication_slot(name) for those no standby uses",
        )
    if facts.get("superuser"):
        add(
            "warn",
            f"{user} is a superuser: it works, but docs/grants.md lists what dbha needs",
        )
    else:
        missing = [
            (what, stmt.format(user=user)) for k, what, stmt in PG_GRANTS if not facts.get(k)
        ]
        if missing:
            stmts = " ".join(dict.fromkeys(s for _, s in missing))
            add(
                "fail",
                f"{user} lacks what dbha needs to "
                + ", ".join(dict.fromkeys(w for w, _ in missing)),
                stmts + " (docs/grants.md)",
            )
        else:
            add("ok", f"{user} has the grants of docs/grants.md")
    return out


# ------------------------------------------------------------ MySQL/MariaDB

# (privilege as SHOW GRANTS spells it, what it lets dbha do)
MARIADB_GRANTS = (
    ("PROCESS", "see the replicas and the clients to end"),
    ("SLAVE MONITOR", "read replication state"),
    ("REPLICATION MASTER ADMIN", "semi-sync on the primary"),
    ("READ_ONLY ADMIN", "fence"),
    ("CONNECTION ADMIN", "end sessions when fencing"),
    ("REPLICATION SLAVE ADMIN", "promote and re-point"),
    ("RELOAD", "promote"),
    ("BINLOG MONITOR", "rejoin"),
)


def _granted(grants: str, privilege: str) -> bool:
    return "ALL PRIVILEGES ON *.*" in grants or privilege in grants


def judge_mysql(cfg: Config, facts: Mapping[str, Any], where: str) -> list[Item]:
    """The MySQL/MariaDB prerequisites on one server."""
    from dbha.db.mysql.conn import CONNECT_RETRY

    out: list[Item] = []
    sync = cfg.replication.mode == "sync"
    replica = bool(facts.get("replica"))

    def add(level: str, what: str, fix: str = "", unsafe: bool = False) -> None:
        out.append(Item(level, where, what, fix, unsafe))

    add("ok", f"server answers as {'a replica' if replica else 'a primary'}")
    for problem in facts.get("problems", ()):
        add("fail", str(problem), "set it in my.cnf and restart the server")
    if str(facts.get("binlog_format", "")).upper() != "ROW":
        add("warn", f"binlog_format = {facts.get('binlog_format')}", "binlog_format = ROW")
    for key, want in (("sync_binlog", "1"), ("innodb_flush_log_at_trx_commit", "1")):
        if str(facts.get(key)) != want:
            add(
                "warn",
                f"{key} = {facts.get(key)}: a crash can lose commits already acknowledged",
                f"{key} = {want} in my.cnf",
            )
    if replica and not facts.get("read_only"):
        add(
            "fail",
            "the replica is writable (read_only = OFF): it would diverge; dbha fences it and "
            "marks it needing a resync",
            "read_only = ON in the replica's my.cnf, and SET GLOBAL read_only = ON",
        )
    semi = facts.get("semisync")
    if sync:
        if semi is None or semi.primary_side is None:
            add(
                "fail",
                'replication.mode = "sync" but the server has no semi-synchronous replication',
                'load the semi-sync plugins (MySQL), or use replication.mode = "async"',
                unsafe=True,
            )
        else:
            if replica and not semi.replica_enabled:
                add(
                    "fix",
                    "the replica side of semi-sync is off: dbha switches it on when it runs "
                    "(rule replica-prepare); it lasts until the server restarts",
                    "rpl_semi_sync_slave_enabled = ON in my.cnf keeps it over a restart",
                )
            retry = facts.get("connect_retry")
            if replica and isinstance(retry, int) and retry > CONNECT_RETRY:
                add(
                    "fix",
                    f"the receiver reconnects every {retry} s: after a restart of its primary, "
                    "synchronous commits would wait that long for it; dbha sets "
                    f"MASTER_CONNECT_RETRY = {CONNECT_RETRY} when it runs (rule replica-prepare)",
                    f"CHANGE MASTER TO MASTER_CONNECT_RETRY = {CONNECT_RETRY} (threads stopped)",
                )
            if not replica and semi.wait_point not in (None, "AFTER_SYNC"):
                add(
                    "fix",
                    f"semi-sync waits {semi.wait_point}: dbha sets AFTER_SYNC (lossless) when "
                    "it turns semi-sync on",
                    "rpl_semi_sync_master_wait_point = AFTER_SYNC in my.cnf",
                )
    bind = {x.strip() for x in str(facts.get("bind_address", "")).split(",")}
    vip = str(cfg.vip.address.ip)
    if bind & WILDCARDS_MY or vip in bind:
        add("ok", f"listens on {', '.join(sorted(bind)) or 'every address'}")
    else:
        add(
            "fail",
            f"bind_address = {', '.join(sorted(bind))}: clients of the VIP {vip} cannot "
            "connect once it moves here",
            "bind_address = 0.0.0.0 (or the VIP, with net.ipv4.ip_nonlocal_bind = 1)",
        )
    grants = str(facts.get("grants", ""))
    user = cfg.database.user
    if "ALL PRIVILEGES ON *.*" in grants or "SUPER" in grants.split(" ON ")[0]:
        add("warn", f"{user} has ALL PRIVILEGES or SUPER: docs/grants.md lists what dbha needs")
    elif grants:
        missing = [(p, w) for p, w in MARIADB_GRANTS if not _granted(grants, p)]
        if missing:
            add(
                "fail",
                f"{user} lacks " + ", ".join(f"{p} ({w})" for p, w in missing),
                f"GRANT {', '.join(p for p, _ in missing)} ON *.* TO '{user}'@'%'; "
                "(docs/grants.md)",
            )
        else:
            add("ok", f"{user} has the grants dbha's probe, fence and promotion need")
    return out


# --------------------------------------------------------------------- host


def judge_host(cfg: Config, facts: Mapping[str, Any]) -> list[Item]:
    out: list[Item] = []
    caps = int(facts.get("caps", 0))
    for bit, name, why in (
        (CAP_NET_ADMIN, "CAP_NET_ADMIN", "add and remove the VIP"),
        (CAP_NET_RAW, "CAP_NET_RAW", "send gratuitous ARP and ICMP probes"),
    ):
        if caps & (1 << bit):
            out.append(Item("ok", "host", f"{name} ({why})"))
        else:
            out.append(
                Item(
                    "fail",
                    "host",
                    f"no {name}: dbha cannot {why}",
                    "run dbha as root or with the capability (conf/dbha@.service)",
                    unsafe=True,
                )
            )
    iface = cfg.vip.interface
    if facts.get("interface"):
        out.append(Item("ok", "host", f"interface {iface} exists"))
    else:
        out.append(
            Item("fail", "host", f"no interface {iface} for the VIP", "set vip.interface", True)
        )
    if cfg.fence.watchdog_device is not None:
        if facts.get("watchdog"):
            out.append(Item("ok", "host", f"watchdog {cfg.fence.watchdog_device} exists"))
        else:
            out.append(
                Item(
                    "fail",
                    "host",
                    f"watchdog {cfg.fence.watchdog_device} is missing",
                    "load the watchdog driver, or unset fence.watchdog_device",
                    unsafe=True,
                )
            )
    if not facts.get("nonlocal_bind"):
        out.append(
            Item(
                "warn",
                "host",
                "net.ipv4.ip_nonlocal_bind = 0: the database must listen on a wildcard "
                "address to serve the VIP when it arrives",
                "sysctl -w net.ipv4.ip_nonlocal_bind=1 (and in /etc/sysctl.d)",
            )
        )
    return out


# -------------------------------------------------------------- gathering


def host_facts(cfg: Config) -> dict[str, Any]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text(encoding="ascii", errors="replace")
        except OSError:
            return ""

    caps = 0
    for line in read("/proc/self/status").splitlines():
        if line.startswith("CapEff:"):
            caps = int(line.split()[1], 16)
    dev = cfg.fence.watchdog_device
    return {
        "caps": caps,
        "interface": os.path.exists(f"/sys/class/net/{cfg.vip.interface}"),
        "watchdog": dev is not None and dev.exists(),
        "nonlocal_bind": read("/proc/sys/net/ipv4/ip_nonlocal_bind").strip() == "1",
    }


def pg_facts(cfg: Config, host: str | None) -> dict[str, Any]:
    """Facts of this node's server (``host`` None) or of the server at ``host``."""
    from dbha.db.factory import local_driver
    from dbha.db.postgres.conn import Deadline, one, session

    drv = local_driver(cfg)
    settings = drv.settings  # type: ignore[attr-defined]
    if host is not None:
        settings = replace(settings, host=host)
    with session(settings, Deadline(TIMEOUT, "preflight")) as conn:
        return dict(one(conn, PG_FACTS_SQL))


def mysql_facts(cfg: Config, host: str | None) -> dict[str, Any]:
    from dbha.db.factory import local_driver
    from dbha.db.mysql.conn import Deadline
    from dbha.db.mysql.driver import MysqlDriver
    from dbha.db.mysql.rows import parse_semisync

    drv = local_driver(cfg)
    assert isinstance(drv, MysqlDriver)
    if host is not None:
        drv = MysqlDriver(replace(drv.settings, host=host, socket=None))
    with drv.session(Deadline(TIMEOUT), "preflight") as s:
        v, rep = drv.state(s)
        row = s.one(
            "SELECT @@binlog_format AS binlog_format, @@sync_binlog AS sync_binlog, "
            "@@innodb_flush_log_at_trx_commit AS flush, @@bind_address AS bind_address"
        )
        grants = " ".join(str(next(iter(r.values()))) for r in s.rows("SHOW GRANTS"))
        semi = parse_semisync(s.rows(s.flavour.semisync_sql))
    row = row or {}
    return {
        "replica": rep is not None,
        "problems": list(v.problems),
        "read_only": v.read_only or v.super_read_only,
        "binlog_format": row.get("binlog_format"),
        "sync_binlog": row.get("sync_binlog"),
        "innodb_flush_log_at_trx_commit": row.get("flush"),
        "bind_address": row.get("bind_address") or "",
        "grants": grants,
        "semisync": semi,
        "connect_retry": None if rep is None else rep.connect_retry,
    }


def _peer_host(cfg: Config) -> str:
    addr = cfg.peer.addresses[0]
    return str(addr) if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address) else addr


def run(cfg: Config, peer: bool = True) -> list[Item]:
    """Every check: this node's server, the peer's (``peer``), this host. Bounded:
    each server's checks within TIMEOUT seconds. Never raises a foreign exception."""
    items: list[Item] = []
    me, other = cfg.node.name, cfg.peer.name
    targets: list[tuple[str, str | None, str]] = [(f"{me} (this node)", None, me)]
    if peer:
        targets.append((f"{other} (peer, {_peer_host(cfg)})", _peer_host(cfg), other))
    for where, host, node in targets:
        try:
            if cfg.database.is_postgresql:
                items += judge_pg(cfg, pg_facts(cfg, host), where, node)
            else:
                items += judge_mysql(cfg, mysql_facts(cfg, host), where)
        except DbhaError as exc:
            level = "fail" if host is None else "warn"
            items.append(Item(level, where, f"cannot check the server: {exc}"))
    items += judge_host(cfg, host_facts(cfg))
    return items


def exit_code(items: list[Item]) -> int:
    """Nagios style: 0 nothing wrong (ok, fix), 1 warnings, 2 failures."""
    levels = {i.level for i in items}
    return 2 if "fail" in levels else 1 if "warn" in levels else 0
