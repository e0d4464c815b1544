"""``dbha status``: the exit code a report gets, the last failover it finds in the
history, and the table it prints (positions, lag, paths, what is wrong)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from click.testing import CliRunner

from dbha.cli import main
from dbha.monitor import pairstatus as ps
from dbha.monitor.statustext import lsn_text, readable_position, render
from tests.unit.test_decide import make_cfg

CFG = make_cfg()
STRICT = make_cfg("strict")


def _node(name: str, peer: str, role: str, **kw: Any) -> dict[str, Any]:
    """One supervisor's status answer, healthy, as statusview builds it."""
    primary = role == "primary"
    st: dict[str, Any] = {
        "service": "pg",
        "node": name,
        "peer": peer,
        "role": role,
        "epoch": 2,
        "needs_resync": False,
        "maintenance": False,
        "last_failover": 1764690000.0 if primary else None,
        "vip": {"address": "198.18.0.100", "held_here": primary},
        "database": {
            "reachable": True,
            "role": role,
            "writable": primary,
            "position": "postgresql|2|50331976|",
            "lag_bytes": None if primary else 0,
            "lag_seconds": None if primary else 0.0,
            "streaming": None if primary else True,
            "sync_replication": False,
        },
        "peer_state": {
            "role": "replica" if primary else "primary",
            "epoch": 2,
            "db_reachable": True,
            "db_writable": not primary,
            "maintenance": False,
            "needs_resync": False,
            "eligible": primary,
        },
        "paths": {
            "lan": {"up": True, "last_beat_age_s": 0.2},
            "hb": {"up": True, "last_beat_age_s": 0.3},
        },
        "heartbeat_counters": {"lan": {"drops": {"bad_mac": 0}}, "hb": {"drops": {}}},
        "safety": {"verdict": None},
        "keeper_alive": True,
        "decision": {"rule": "primary-serving", "reason": "serving"},
    }
    st.update(kw)
    return st


A = _node("a", "b", "primary")
B = _node("b", "a", "replica")
DOWN = {"error": "peer supervisor unreachable: 198.18.0.12:5405: refused"}


def _sources(local: Any, peer: Any, events: list[dict[str, Any]] | None = None) -> ps.Sources:
    def ask_peer(req: dict[str, Any]) -> dict[str, Any] | str:
        if isinstance(peer, str):
            return peer
        if req["cmd"] == "history":
            return {"ok": True, "events": events or []}
        return {"ok": True, "status": peer}

    alone = copy.deepcopy(A)
    for k in ("paths", "heartbeat_counters", "peer_state", "decision", "keeper_alive"):
        alone.pop(k)
    return ps.Sources(
        ask_local=lambda: local,
        ask_peer=ask_peer,
        look_alone=lambda: copy.deepcopy(alone),
        history=lambda: [],
    )


def test_a_healthy_pair_exits_0_and_the_table_shows_both_nodes() -> None:
    report = ps.gather(CFG, _sources({"ok": True, "status": A}, B))
    assert (report["code"], report["health"], report["findings"]) == (0, "healthy", [])
    text = render(report)
    assert text.splitlines()[0] == "pg: HEALTHY (exit 0)"
    assert "a (this node)" in text and "b (peer)" in text
    assert "0/3000148 (timeline 2)" in text  # 50331976, as PostgreSQL writes it
    assert "0 B, 0.0 s (streaming)" in text
    assert "lan up, last beat 0.2 s ago" in text
    assert "VIP 198.18.0.100 held by a" in text


@pytest.mark.parametrize(
    ("peer_state", "words"),
    [
        ({"db_reachable": False, "eligible": False}, "b's database does not answer"),
        ({"role": "fenced", "needs_resync": True, "eligible": False}, "b needs a resync"),
        ({"maintenance": True}, "maintenance on (announced by b)"),
    ],
)
def test_no_working_standby_or_maintenance_is_degraded(
    peer_state: dict[str, Any], words: str
) -> None:
    a = _node("a", "b", "primary", peer_state={**A["peer_state"], **peer_state})
    report = ps.gather(CFG, _sources({"ok": True, "status": a}, B))
    assert (report["code"], report["health"]) == (1, "degraded")
    assert any(words in f["text"] and f["node"] == "a" for f in report["findings"]), report
    assert "WARNING: a: " in render(report)


def test_strict_synchronous_mode_without_a_standby_is_critical() -> None:
    a = _node("a", "b", "primary", peer_state={**A["peer_state"], "eligible": False})
    a["database"] = {**a["database"], "sync_replication": True, "sync_standbys": 1}
    assert ps.gather(CFG, _sources({"ok": True, "status": a}, B))["code"] == 1
    report = ps.gather(STRICT, _sources({"ok": True, "status": a}, B))
    assert (report["code"], report["health"]) == (3, "critical")


def test_an_unreachable_peer_is_degraded_and_says_why() -> None:
    report = ps.gather(CFG, _sources({"ok": True, "status": A}, DOWN["error"]))
    assert report["code"] == 1
    assert report["peer"] == DOWN
    text = render(report)
    assert "CANNOT BE ASKED" in text
    assert "WARNING: b: the peer's supervisor cannot be asked: peer supervisor unreachable" in text


def test_without_a_local_supervisor_it_looks_directly_and_exits_4() -> None:
    """No supervisor on this node: the report still shows the persisted role, the
    database and the VIP looked at directly, and the peer's answer, and says so."""
    report = ps.gather(CFG, _sources(None, B))
    assert (report["code"], report["health"]) == (4, "local supervisor down")
    assert report["local_supervisor"] == "not running"
    assert report["local"]["supervisor"] == "not running"
    assert report["local"]["database"]["writable"] is True  # probed directly
    text = render(report)
    assert "NOT RUNNING" in text and "looked at directly" in text
    assert "CRITICAL: a: the supervisor is not running" in text
    # One that runs but does not answer properly: the same code, and why.
    report = ps.gather(CFG, _sources("timed out", B))
    assert report["code"] == 4 and report["local_supervisor"] == "does not answer: timed out"


def test_the_codes_are_distinct_and_documented() -> None:
    codes = [ps.HEALTHY, ps.DEGRADED, ps.USAGE, ps.CRITICAL, ps.LOCAL_DOWN]
    assert len(set(codes)) == len(codes) and ps.HEALTHY == 0
    for code in codes:
        assert f"- {code}" in (ps.__doc__ or "")
    helptext = CliRunner().invoke(main, ["status", "--help"]).output
    for code, words in [(0, "healthy"), (1, "degraded"), (2, "config error"), (3, "critical"),
                        (4, "not running")]:  # fmt: skip
        line = next(ln for ln in helptext.splitlines() if ln.strip().startswith(f"{code}  "))
        assert words in line, helptext


EVENTS = [
    {"at": 10.0, "node": "a", "event": "started", "epoch": 0},
    {"at": 20.0, "node": "a", "event": "failover_started", "epoch": 0, "detail": "database down"},
    {"at": 20.1, "node": "b", "event": "failover_started", "epoch": 0, "detail": "a handed over"},
    {"at": 20.4, "node": "b", "event": "promoted", "epoch": 0, "detail": "epoch 1",
     "duration_s": 0.3},
    {"at": 30.0, "node": "b", "event": "switchover_started", "epoch": 1, "detail": "asked"},
    {"at": 31.0, "node": "a", "event": "switchover_done", "epoch": 1, "detail": "epoch 2",
     "duration_s": 1.0},
]  # fmt: skip


def test_the_last_failover_is_the_newest_end_with_its_start_and_duration() -> None:
    assert ps.last_handover([]) is None
    assert ps.last_handover(EVENTS[:1]) is None
    last = ps.last_handover(EVENTS[:4][::-1])  # any order: both nodes' files merged
    assert last == {
        "kind": "failover",
        "at": 20.4,
        "node": "b",
        "epoch": 1,
        "why": "a: database down; b: a handed over",
        "duration_s": 0.3,
    }
    last = ps.last_handover(EVENTS)
    assert last is not None
    assert (last["kind"], last["node"], last["epoch"], last["why"], last["duration_s"]) == (
        "switchover",
        "a",
        2,
        "b: asked",
        1.0,
    )


def test_the_report_names_the_last_failover_from_both_histories() -> None:
    report = ps.gather(CFG, _sources({"ok": True, "status": A}, B, EVENTS[:4]))
    assert report["last_failover"]["node"] == "b"
    assert "b promoted at epoch 1 in 0.300 s (a: database down; b: a handed over)" in render(report)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql|1|50331976|", "0/3000148 (timeline 1)"),
        ("postgresql||4294967296|", "1/0"),
        ("mariadb|||0-2-13,1-3-7", "0-2-13,1-3-7"),
        ("mysql|||3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
         "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"),
        ("", "-"),
        (None, "-"),
        ("postgresql|1||", "-"),
    ],
)  # fmt: skip
def test_positions_read_as_each_engine_writes_them(text: object, shown: str) -> None:
    assert readable_position(text) == shown


def test_lsn_text() -> None:
    assert lsn_text(0x3000148) == "0/3000148"
    assert lsn_text((0x1A << 32) + 0xFF) == "1A/FF"


def test_a_peer_fenced_and_needing_a_resync_reads_in_the_table() -> None:
    b = _node("b", "a", "fenced", needs_resync=True, maintenance=True)
    b["database"] = {**b["database"], "reachable": False, "error": "refused"}
    report = ps.gather(CFG, _sources({"ok": True, "status": A}, b))
    text = render(report)
    assert "DOES NOT ANSWER: refused" in text
    assert "YES" in text.split("needs resync")[1].splitlines()[0]
    assert "ON" in text.split("maintenance")[1].splitlines()[0]


def test_a_standbys_own_database_down_is_degraded_not_critical() -> None:
    """The replica's server is killed: its own check is CRITICAL, but the pair
    serves (its primary has no standby): degraded. The primary's server down is
    critical."""
    b = _node("b", "a", "replica")
    b["database"] = {"reachable": False, "role": "unknown", "error": "refused"}
    a = _node("a", "b", "primary", peer_state={**A["peer_state"], "db_reachable": False})
    report = ps.gather(CFG, _sources({"ok": True, "status": a}, b))
    assert report["code"] == 1, report["findings"]
    assert {"node": "b", "status": "WARNING", "text": "database unreachable (refused)"} in report[
        "findings"
    ]
    a["database"] = {"reachable": False, "role": "unknown", "error": "refused"}
    assert ps.gather(CFG, _sources({"ok": True, "status": a}, B))["code"] == 3
