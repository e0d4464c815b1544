"""dbha preflight's judgements on gathered facts (pure; the gathering runs in the lab)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dbha.db.mysql.rows import SemiSync
from dbha.node.preflight import Item, exit_code, judge_host, judge_mysql, judge_pg
from tests.unit.test_decide import CFG

SYNC, ASYNC = CFG["fallback"], CFG["async"]
MARIA_SYNC = replace(SYNC, database=replace(SYNC.database, engine="mariadb"))

PG_PRIMARY: dict[str, Any] = {
    "recovery": False,
    "wal_log_hints": "off",
    "data_checksums": "on",
    "hot_standby": "on",
    "listen": "*",
    "sync_commit": "on",
    "conninfo": "",
    "slot": "",
    "cluster_name": "15/main",
    "superuser": False,
    "inactive_slots": 0,
    **{k: True for k in ("pg_monitor", "pg_signal_backend", "pg_checkpoint", "f_promote")},
    **{k: True for k in ("f_reload", "f_resume", "p_read_only", "p_sync_names")},
    **{k: True for k in ("p_conninfo", "p_slot")},
}
PG_STANDBY = {
    **PG_PRIMARY,
    "recovery": True,
    "conninfo": "host=198.18.0.11 user=replicator passfile=/x/pgpass",
    "slot": "standby1",
}


def _levels(items: list[Item]) -> dict[str, str]:
    return {i.what: i.level for i in items}


def _find(items: list[Item], words: str) -> Item:
    hits = [i for i in items if words in i.what]
    assert len(hits) == 1, [i.what for i in items]
    return hits[0]


def test_a_sound_postgresql_primary_is_all_ok() -> None:
    items = judge_pg(SYNC, PG_PRIMARY, "a", "a")
    assert {i.level for i in items} == {"ok"}, [i.line() for i in items]
    assert exit_code(items) == 0


def test_an_adopted_standby_named_after_its_cluster_is_made_right_by_dbha() -> None:
    sync = _find(judge_pg(SYNC, PG_STANDBY, "b", "b"), "connects as '15/main'")
    assert sync.level == "fix" and "replica-prepare" in sync.what
    assert _find(judge_pg(ASYNC, PG_STANDBY, "b", "b"), "connects as").level == "ok"
    slot = _find(judge_pg(SYNC, PG_STANDBY, "b", "b"), "uses slot 'standby1'")
    assert slot.level == "ok" and "drops 'standby1'" in slot.what


def test_an_inline_password_cannot_be_rewritten_and_fails_in_sync_mode() -> None:
    facts = {**PG_STANDBY, "conninfo": "host=198.18.0.11 user=replicator password=s3cret"}
    item = _find(judge_pg(SYNC, facts, "b", "b"), "password inline")
    assert item.level == "fail" and "passfile" in item.fix
    assert "s3cret" not in item.line()


def test_unsafe_postgresql_settings_fail_and_name_their_fix() -> None:
    facts = {**PG_PRIMARY, "sync_commit": "local", "data_checksums": "off", "listen": "10.0.0.5"}
    items = judge_pg(SYNC, facts, "a", "a")
    commit = _find(items, "synchronous_commit = local")
    assert commit.level == "fail" and commit.unsafe and "synchronous_commit = on" in commit.fix
    assert _find(items, "pg_rewind cannot").level == "warn"
    assert _find(items, "listen_addresses").level == "fail"
    assert exit_code(items) == 2


def test_missing_postgresql_grants_fail_with_the_statements() -> None:
    facts = {**PG_PRIMARY, "pg_checkpoint": False, "f_resume": False}
    item = _find(judge_pg(SYNC, facts, "a", "a"), "lacks what dbha needs")
    assert item.level == "fail"
    assert "GRANT pg_checkpoint TO dbha;" in item.fix
    assert "pg_wal_replay_resume() TO dbha;" in item.fix
    assert _find(judge_pg(SYNC, {**facts, "superuser": True}, "a", "a"), "superuser").level == (
        "warn"
    )


MARIA_GRANTS = (
    "GRANT PROCESS, RELOAD, BINLOG MONITOR, SLAVE MONITOR, REPLICATION MASTER ADMIN, "
    "READ_ONLY ADMIN, CONNECTION ADMIN, REPLICATION SLAVE ADMIN ON *.* TO `dbha`@`%`"
)
MARIA_REPLICA: dict[str, Any] = {
    "replica": True,
    "problems": [],
    "read_only": True,
    "binlog_format": "ROW",
    "sync_binlog": "1",
    "innodb_flush_log_at_trx_commit": "1",
    "bind_address": "0.0.0.0",
    "grants": MARIA_GRANTS,
    "semisync": SemiSync(
        enabled=False,
        active=False,
        clients=0,
        replica_enabled=False,
        primary_side="master",
        replica_side="slave",
    ),
}


def test_an_adopted_mariadb_replica_with_semisync_off_is_made_right_by_dbha() -> None:
    items = judge_mysql(MARIA_SYNC, MARIA_REPLICA, "a")
    assert _find(items, "replica side of semi-sync is off").level == "fix"
    assert exit_code(items) == 0


def test_an_adopted_receiver_that_reconnects_every_minute_is_made_right_by_dbha() -> None:
    items = judge_mysql(MARIA_SYNC, {**MARIA_REPLICA, "connect_retry": 60}, "a")
    item = _find(items, "reconnects every 60 s")
    assert item.level == "fix" and "MASTER_CONNECT_RETRY = 1" in item.fix
    assert exit_code(items) == 0
    quick = judge_mysql(MARIA_SYNC, {**MARIA_REPLICA, "connect_retry": 1}, "a")
    assert not [i for i in quick if "reconnects every" in i.what]


def test_a_writable_replica_and_missing_semisync_fail() -> None:
    facts = {**MARIA_REPLICA, "read_only": False, "semisync": None}
    items = judge_mysql(MARIA_SYNC, facts, "a")
    assert _find(items, "replica is writable").level == "fail"
    none = _find(items, "no semi-synchronous")
    assert none.level == "fail" and none.unsafe


def test_a_primary_waiting_after_commit_and_missing_grants() -> None:
    semi = SemiSync(True, True, 1, wait_point="AFTER_COMMIT", primary_side="master")
    grants = "GRANT PROCESS, SLAVE MONITOR ON *.* TO `dbha`@`%`"
    facts = {**MARIA_REPLICA, "replica": False, "semisync": semi, "grants": grants}
    items = judge_mysql(MARIA_SYNC, facts, "b")
    assert _find(items, "waits AFTER_COMMIT").level == "fix"
    lacks = _find(items, "dbha lacks")
    assert lacks.level == "fail" and "READ_ONLY ADMIN" in lacks.fix and "PROCESS" not in lacks.fix


def test_the_host_needs_its_capabilities_and_interface() -> None:
    ok = judge_host(SYNC, {"caps": (1 << 12) | (1 << 13), "interface": True, "nonlocal_bind": True})
    assert {i.level for i in ok} == {"ok"}
    bad = judge_host(SYNC, {"caps": 0, "interface": False, "nonlocal_bind": False})
    assert sum(1 for i in bad if i.level == "fail" and i.unsafe) == 3
    assert _levels(bad)[
        "net.ipv4.ip_nonlocal_bind = 0: the database must listen on a wildcard address to "
        "serve the VIP when it arrives"
    ] == ("warn")
