"""``dbha check``: the Nagios mapping, the cron round's memory and the config it
decides with, and the systemd unit and cron entry shipped in conf/.

Tables of situations and the status they must give; the cron safety rule is
checked against the real decision core (no mocks, no clock, no sleeps).
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbha.config.params import params
from dbha.core.decide import decide
from dbha.core.model import (
    Announce,
    DbStatus,
    NodeRole,
    NodeState,
    Observation,
    PeerView,
    Position,
    Role,
    SafetyView,
    Verdict,
)
from dbha.core.params import Params
from dbha.db.fake import covers
from dbha.monitor import memory as cronstate
from dbha.monitor.nagios import (
    DbView,
    Limits,
    PeerInfo,
    Status,
    View,
    assess,
    line,
)
from dbha.monitor.views import view_from_round, view_from_status
from tests.unit.test_decide import make_cfg

ROOT = Path(__file__).resolve().parents[2]
R = NodeRole
LIMITS = Limits(lag_units=1000, lag_seconds=10.0, unit="bytes")


CFG = make_cfg()

# ------------------------------------------------------------ the mapping

UP = (("lan", True), ("hb", True))
HALF = (("lan", False), ("hb", True))
SILENT = (("lan", False), ("hb", False))
PRIMARY_DB = DbView(True, "primary", True, sync_replication=False)
REPLICA_DB = DbView(True, "replica", False, lag_units=0, lag_seconds=0.0, streaming=True)
PEER_REPLICA = PeerInfo("replica", 1, True, False, eligible=True)
PEER_PRIMARY = PeerInfo("primary", 1, True, True)

PRIMARY = View(
    "pg", "a", "b", "primary", 1, vip_held=True, db=PRIMARY_DB, paths=UP, peer=PEER_REPLICA,
    keeper_alive=True,
)  # fmt: skip
REPLICA = View(
    "pg", "a", "b", "replica", 1, vip_held=False, db=REPLICA_DB, paths=UP, peer=PEER_PRIMARY,
    keeper_alive=True,
)  # fmt: skip


def _v(base: View, **kw: Any) -> View:
    return replace(base, **kw)


# (situation, view, expected status, words the summary must name)
CASES: list[tuple[str, View, Status, str]] = [
    ("healthy primary", PRIMARY, Status.OK, "VIP here, b replica on 2/2 paths"),
    ("healthy replica", REPLICA, Status.OK, "database replica, b primary on 2/2 paths"),
    # CRITICAL
    (
        "database unreachable",
        _v(PRIMARY, db=DbView(False, error="connection refused")),
        Status.CRITICAL,
        "database unreachable (connection refused)",
    ),
    ("primary without the VIP", _v(PRIMARY, vip_held=False), Status.CRITICAL, "without the VIP"),
    ("replica holding the VIP", _v(REPLICA, vip_held=True), Status.CRITICAL, "holds the VIP"),
    (
        "writable database on a fenced node",
        _v(PRIMARY, role="fenced", vip_held=False),
        Status.CRITICAL,
        "accepts writes but this node is fenced",
    ),
    (
        "two primaries",
        _v(PRIMARY, peer=PEER_PRIMARY),
        Status.CRITICAL,
        "two primaries: b is primary",
    ),
    (
        "peer has a newer epoch",
        _v(PRIMARY, peer=replace(PEER_REPLICA, epoch=2)),
        Status.CRITICAL,
        "newer epoch (2 > 1)",
    ),
    ("lease keeper dead", _v(PRIMARY, keeper_alive=False), Status.CRITICAL, "lease keeper"),
    (
        "needs a resync while the peer does not serve",
        _v(REPLICA, role="fenced", needs_resync=True, db=DbView(True, "primary", False),
           peer=PEER_REPLICA),
        Status.CRITICAL,
        "needs a resync and b does not serve",
    ),
    (
        "peer silent, no verdict",
        _v(PRIMARY, paths=SILENT, verdict=None),
        Status.CRITICAL,
        "silent on every path and the safety check has no verdict",
    ),
    (
        "isolated",
        _v(PRIMARY, paths=SILENT, verdict="i_am_isolated"),
        Status.CRITICAL,
        "isolated",
    ),
    (
        "primary dead, replica not promoted",
        _v(REPLICA, paths=SILENT, verdict="peer_dead", reason="waiting out the deadline"),
        Status.CRITICAL,
        "b is dead and this node does not serve (waiting out the deadline)",
    ),
    (
        "commits waiting (reported by the driver)",
        _v(PRIMARY, db=replace(PRIMARY_DB, sync_replication=True, sync_waiting=4)),
        Status.CRITICAL,
        "4 commit(s) waiting",
    ),
    (
        "sync on and no synchronous standby, for 3 s: commits are blocked",
        _v(PRIMARY, db=replace(PRIMARY_DB, sync_replication=True, sync_standbys=0,
                               blocked_for=3.2)),
        Status.CRITICAL,
        "commits are blocked: synchronous commit is on and no synchronous standby is "
        "connected for 3 s; they wait until b acknowledges",
    ),
    (
        "... at once when commits are seen waiting",
        _v(PRIMARY, db=replace(PRIMARY_DB, sync_replication=True, sync_standbys=0,
                               blocked_for=0.2, sync_waiting=2)),
        Status.CRITICAL,
        "commits are blocked",
    ),
    (
        "... and from a one-look round (no duration)",
        _v(PRIMARY, db=replace(PRIMARY_DB, sync_replication=True, sync_standbys=0)),
        Status.CRITICAL,
        "connected; they wait until b acknowledges",
    ),
    (
        "a standby reconnecting for a moment is not a blocked primary",
        _v(PRIMARY, db=replace(PRIMARY_DB, sync_replication=True, sync_standbys=0,
                               blocked_for=0.3)),
        Status.OK,
        "VIP here",
    ),
    (
        "a synchronous standby connected but silent: commits are blocked",
        _v(PRIMARY, db=replace(PRIMARY_DB, sync_replication=True, sync_standbys=1,
                               sync_waiting=6, sync_wait_longest=5.4)),
        Status.CRITICAL,
        "commits are blocked: the synchronous standby is connected but has not "
        "acknowledged for 5 s, 6 commit(s) waiting",
    ),
    (
        "commits in flight with a synchronous standby to answer them",
        _v(PRIMARY, db=replace(PRIMARY_DB, sync_replication=True, sync_standbys=1,
                               sync_waiting=3)),
        Status.OK,
        "VIP here",
    ),
    (
        "synchronous primary whose replica is gone",
        _v(PRIMARY, db=replace(PRIMARY_DB, sync_replication=True), paths=SILENT,
           verdict="peer_dead"),
        Status.CRITICAL,
        "synchronous replica that is gone",
    ),
    (
        "no node serves",
        _v(REPLICA, peer=PeerInfo("fenced", 1, True, False)),
        Status.CRITICAL,
        "no node serves: this node is replica, b is fenced",
    ),
    (
        "peer primary but not writable",
        _v(REPLICA, peer=replace(PEER_PRIMARY, db_writable=False)),
        Status.CRITICAL,
        "b is primary but its database does not accept writes",
    ),
    ("an action failed", _v(PRIMARY, errors=("AcquireVip failed: x",)), Status.CRITICAL,
     "AcquireVip failed"),
    # WARNING
    ("a path down", _v(PRIMARY, paths=HALF), Status.WARNING, "heartbeat path lan down"),
    ("maintenance", _v(PRIMARY, maintenance=True), Status.WARNING, "maintenance on (this node)"),
    (
        "peer's maintenance",
        _v(REPLICA, peer=replace(PEER_PRIMARY, maintenance=True)),
        Status.WARNING,
        "maintenance on (announced by b)",
    ),
    (
        "maintenance on both",
        _v(PRIMARY, maintenance=True, peer=replace(PEER_REPLICA, maintenance=True)),
        Status.WARNING,
        "maintenance on (this node, announced by b)",
    ),
    (
        "lag above half the bound",
        _v(REPLICA, db=replace(REPLICA_DB, lag_units=600)),
        Status.WARNING,
        "replica lag 600 bytes (bound 1000)",
    ),
    (
        "lag in seconds above half the bound",
        _v(REPLICA, db=replace(REPLICA_DB, lag_seconds=6.0)),
        Status.WARNING,
        "6.0 s (bound 10 s)",
    ),
    (
        "replica not streaming",
        _v(REPLICA, db=replace(REPLICA_DB, streaming=False)),
        Status.WARNING,
        "not streaming",
    ),
    (
        "peer silent, heartbeats broken",
        _v(PRIMARY, paths=SILENT, verdict="peer_alive_heartbeat_broken"),
        Status.WARNING,
        "silent on every path but its database answers",
    ),
    (
        "peer dead, serving alone",
        _v(PRIMARY, paths=SILENT, verdict="peer_dead"),
        Status.WARNING,
        "b is dead: serving alone, no standby",
    ),
    (
        "peer silent, verdicts not reported",
        _v(PRIMARY, paths=SILENT, verdict_known=False),
        Status.WARNING,
        "verdict not reported",
    ),
    (
        "needs a resync while the peer serves",
        _v(REPLICA, role="fenced", needs_resync=True, db=DbView(True, "primary", False)),
        Status.WARNING,
        "needs a resync (no standby",
    ),
    (
        "standby database down",
        _v(PRIMARY, peer=replace(PEER_REPLICA, db_reachable=False, eligible=False)),
        Status.WARNING,
        "no standby: b's database does not answer",
    ),
    (
        "standby needs a resync",
        _v(PRIMARY, peer=replace(PEER_REPLICA, role="fenced", needs_resync=True, eligible=False)),
        Status.WARNING,
        "no standby: b needs a resync",
    ),
    (
        "standby fenced",
        _v(PRIMARY, peer=replace(PEER_REPLICA, role="fenced", eligible=False)),
        Status.WARNING,
        "no standby: b is fenced, not a replica",
    ),
    (
        "standby not eligible",
        _v(PRIMARY, peer=replace(PEER_REPLICA, eligible=False)),
        Status.WARNING,
        "no standby: b is not eligible for promotion",
    ),
    ("check failing", _v(PRIMARY, checks_failing=("tcp",)), Status.WARNING, "check failing: tcp"),
    ("handover", _v(PRIMARY, role="handover", vip_held=False, db=DbView(True, "primary", False),
                    peer=PEER_REPLICA), Status.WARNING, "handover under way"),
    ("not probed yet", _v(PRIMARY, db=None), Status.WARNING, "not probed yet"),
    ("an alert", _v(PRIMARY, alerts=("heartbeats broken",)), Status.WARNING, "heartbeats broken"),
]  # fmt: skip


@pytest.mark.parametrize(("situation", "view", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_situation_maps_to_its_nagios_status(
    situation: str, view: View, status: Status, words: str
) -> None:
    a = assess(view, LIMITS)
    assert a.status is status, a.summary
    assert words in a.summary
    assert "\n" not in a.summary
    assert line(a).startswith(f"DBHA {status.name} - pg on a")


def test_the_worst_finding_decides_and_comes_first() -> None:
    a = assess(_v(PRIMARY, paths=HALF, vip_held=False, maintenance=True), LIMITS)
    assert a.status is Status.CRITICAL
    assert [f.status for f in a.findings] == [Status.CRITICAL, Status.WARNING, Status.WARNING]
    assert a.summary.index("without the VIP") < a.summary.index("path lan down")


def test_a_long_error_stays_one_bounded_line() -> None:
    a = assess(_v(PRIMARY, db=DbView(False, error="x\n" * 5000)), LIMITS)
    assert "\n" not in a.summary and len(line(a)) < 1100


def test_limits_follow_the_engine() -> None:
    assert Limits.of(CFG) == Limits(1024 * 1024, 10.0, "bytes", "async", CFG.source)


# --------------------------------------------------- a running supervisor

STATUS: dict[str, Any] = {
    "service": "pg",
    "node": "a",
    "peer": "b",
    "role": "primary",
    "epoch": 3,
    "needs_resync": False,
    "maintenance": False,
    "last_failover": None,
    "vip": {"address": "198.18.0.100/24", "held_here": True},
    "database": {
        "reachable": True,
        "role": "primary",
        "writable": True,
        "position": "postgresql|1|100|",
        "lag_bytes": None,
        "lag_transactions": None,
        "lag_seconds": None,
        "streaming": False,
        "error": None,
    },
    "peer_state": {"role": "replica", "epoch": 3, "db_writable": False, "maintenance": False},
    "paths": {"lan": {"up": True}, "hb": {"up": True}},
    "heartbeat_counters": {},
    "checks": {"tcp": True},
    "decision": {"rule": "primary-serving", "reason": "primary: serving"},
    "keeper_alive": True,
    "alerts": {},
    "summary": "primary, epoch 3",
}


def _status(**changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(STATUS))
    for key, value in changes.items():
        where = out
        *heads, last = key.split(".")
        for h in heads:
            where = where[h]
        where[last] = value
    return out


STATUS_CASES: list[tuple[str, dict[str, Any], Status, str]] = [
    ("serving", _status(), Status.OK, "primary, epoch 3, database primary writable, VIP here"),
    ("VIP gone", _status(**{"vip.held_here": False}), Status.CRITICAL, "without the VIP"),
    ("keeper dead", _status(keeper_alive=False), Status.CRITICAL, "lease keeper"),
    (
        "database down",
        _status(database={"reachable": False, "role": "unknown", "error": "refused"}),
        Status.CRITICAL,
        "database unreachable (refused)",
    ),
    ("hb path down", _status(**{"paths.hb.up": False}), Status.WARNING, "path hb down"),
    (
        "peer silent, no verdict field",
        _status(**{"paths.hb.up": False, "paths.lan.up": False}),
        Status.WARNING,
        "verdict not reported",
    ),
    (
        "peer silent, null verdict",
        _status(**{"paths.hb.up": False, "paths.lan.up": False}, safety=None),
        Status.CRITICAL,
        "no verdict",
    ),
    (
        "peer silent, verdict given",
        _status(**{"paths.hb.up": False, "paths.lan.up": False}, safety={"verdict": "peer_dead"}),
        Status.WARNING,
        "b is dead: serving alone, no standby",
    ),
    (
        "commits waiting",
        _status(**{"database.sync_waiting": 2}),
        Status.CRITICAL,
        "2 commit(s) waiting",
    ),
    (
        "a supervisor's primary with sync on and nobody to acknowledge",
        _status(
            **{
                "database.sync_replication": True,
                "database.sync_standbys": 0,
                "database.blocked_for": 4.0,
            }
        ),
        Status.CRITICAL,
        "commits are blocked: synchronous commit is on and no synchronous standby is "
        "connected for 4 s",
    ),
    ("failing check", _status(checks={"tcp": False}), Status.WARNING, "check failing: tcp"),
    (
        "an alert",
        _status(alerts={"heartbeats_broken": "every path is silent"}),
        Status.WARNING,
        "every path is silent",
    ),
    ("newer epoch", _status(**{"peer_state.epoch": 4}), Status.CRITICAL, "newer epoch (4 > 3)"),
]


@pytest.mark.parametrize(
    ("situation", "status", "expected", "words"),
    STATUS_CASES,
    ids=[c[0] for c in STATUS_CASES],
)
def test_a_running_supervisors_status_maps_to_nagios(
    situation: str, status: dict[str, Any], expected: Status, words: str
) -> None:
    a = assess(view_from_status(status, LIMITS), LIMITS)
    assert a.status is expected, a.summary
    assert words in a.summary


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(STATUS)), json_values) | json_values)
def test_any_status_reply_gives_a_status_never_an_exception(changes: Any) -> None:
    doc = {**STATUS, **changes} if isinstance(changes, dict) else changes
    a = assess(view_from_status(doc, LIMITS), LIMITS)
    assert a.status in Status and "\n" not in a.summary


# ------------------------------------------------------- the cron memory

POS = Position("postgresql", 1, 100)


def _memory() -> cronstate.Memory:
    from dbha.node.checkscripts import CheckState

    return cronstate.Memory(
        boot_id="boot-1",
        role="replica",
        role_since=10.0,
        db_fails=2,
        dead_since=20.0,
        peer=cronstate.PeerMemory(
            15.0, 1.7e9, "f" * 32, Announce(3, R.PRIMARY, True, True, POS, eligible=False)
        ),
        checks=(CheckState("tcp", 3, 2, True, fails_in_row=1, oks_in_row=0),),
    )


def test_memory_round_trips_within_one_boot() -> None:
    m = _memory()
    got = cronstate.decode(cronstate.encode(m), "boot-1")
    assert got.role == "replica" and got.role_since == 10.0 and got.db_fails == 2
    assert got.dead_since == 20.0 and got.peer == m.peer
    assert [(c.name, c.fails_in_row, c.passing) for c in got.checks] == [("tcp", 1, True)]


def test_after_a_reboot_the_times_are_forgotten_but_not_what_the_peer_said() -> None:
    got = cronstate.decode(cronstate.encode(_memory()), "boot-2")
    assert (got.role, got.role_since, got.db_fails, got.dead_since) == ("", None, 0, None)
    assert got.peer is not None and got.peer.heard_at is None
    assert got.peer.announce.position == POS


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xfe", b"[]", b'{"format": 9}', b"{" * 10000, b'{"format": 1, "peer": 5}'],
)
def test_a_damaged_memory_reads_as_empty(data: bytes) -> None:
    got = cronstate.decode(data, "boot-1")
    assert got.peer is None and got.role_since is None and got.db_fails == 0


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(list(json.loads(cronstate.encode(_memory())))), json_values))
def test_any_memory_file_decodes_without_an_exception(changes: dict[str, Any]) -> None:
    doc = {**json.loads(cronstate.encode(_memory())), **changes}
    cronstate.decode(json.dumps(doc).encode(), "boot-1")


def test_memory_is_saved_atomically_and_read_back(tmp_path: Path) -> None:
    cronstate.save(tmp_path, _memory())
    assert (tmp_path / cronstate.MEMORY_FILE).stat().st_mode & 0o077 == 0
    assert not list(tmp_path.glob(".*.tmp"))
    assert cronstate.load(tmp_path, "boot-1").db_fails == 2
    assert cronstate.load(tmp_path / "none", "boot-1") == cronstate.Memory(boot_id="boot-1")


def test_check_scripts_keep_their_fall_count_across_rounds() -> None:
    from dbha.config import CheckConfig

    c = CheckConfig("tcp", ("/bin/true",), 2000, 1000, fall=3, rise=2)
    mem = cronstate.Memory()
    for _ in range(2):
        states = cronstate.checks_after((c,), mem, {"tcp": (False, "exit 1")})
        mem = replace(mem, checks=states)
    assert states[0].passing  # two failures: not yet failed
    states = cronstate.checks_after((c,), mem, {"tcp": (False, "exit 1")})
    assert not states[0].passing


# --------------------------------------------- the config a round decides with


def test_the_cron_period_is_a_validated_key() -> None:
    assert CFG.service.cron_period_ms == 60_000
    assert make_cfg(cron_period_ms=300_000).service.cron_period_ms == 300_000
    for bad in (5000, "60", 10**12):
        with pytest.raises(Exception, match=r"service\.cron_period_ms"):
            make_cfg(cron_period_ms=bad)


def test_the_cron_deadline_covers_the_period_and_a_whole_round() -> None:
    cron = cronstate.cron_params(CFG)
    d = round(cron.deadline * 1000)
    assert d == cronstate.cron_deadline_ms(CFG)
    assert d >= CFG.fence.self_fence_deadline_ms + 60_000 + cronstate.round_bound_ms(CFG)
    assert cronstate.round_bound_ms(CFG) > 2 * cronstate.listen_window(CFG) * 1000
    longer = cronstate.cron_deadline_ms(make_cfg(cron_period_ms=120_000))
    assert longer - d == 60_000
    plain = params(CFG)  # only what follows from the deadline changes
    assert (cron.quiet, cron.safety_every, cron.lag_units, cron.me, cron.peer) == (
        plain.quiet,
        plain.safety_every,
        plain.lag_units,
        plain.me,
        plain.peer,
    )


NOW = 10_000.0


def _replica_round(silent_for: float, dead_for: float, p: Params) -> str:
    """A replica's round: the primary last heard ``silent_for`` s ago (from the
    memory), its database unreachable in every check for ``dead_for`` s, the
    safety check of this round says peer_dead. Returns the rule decided."""
    mem = cronstate.Memory(
        boot_id="x", role="replica", role_since=NOW - 10_000, dead_since=NOW - dead_for
    )
    state = cronstate.continuing(NodeState(R.REPLICA, 1), mem, NOW, probe_failed=False)
    local = DbStatus(True, Role.REPLICA, position=POS, received=POS, streaming=False, lag_bytes=0)
    obs = Observation(
        now=NOW + 1.0,
        local=local,
        peer=PeerView(0, Announce(1, R.PRIMARY, True, True, POS), NOW - silent_for),
        safety=SafetyView(Verdict.PEER_DEAD, NOW + 0.5),
        lag_units=0,
        keeper_ok=True,
        covers=covers,
    )
    return decide(state, obs, p).rule


@pytest.mark.parametrize(
    ("silent_for", "dead_for", "rule"),
    [
        (30.0, 30.0, "failover-blocked"),  # the plain deadline (1 s) is long past
        (70.0, 70.0, "failover-blocked"),  # beyond the period, not the round bound
        (200.0, 30.0, "failover-blocked"),  # silent long enough, dead not long enough
        (200.0, 200.0, "failover-promote"),
    ],
)
def test_a_cron_replica_promotes_only_after_the_period_and_a_round(
    silent_for: float, dead_for: float, rule: str
) -> None:
    """Between rounds nothing fences the primary: a cut-off primary stops serving only
    at its next round. So the replica must wait the cron period plus a whole round
    (not the 1 s a supervisor's keeper allows) before it promotes."""
    assert _replica_round(silent_for, dead_for, params(CFG)) == "failover-promote"
    assert _replica_round(silent_for, dead_for, cronstate.cron_params(CFG)) == rule


def test_a_round_continues_the_persisted_state_without_the_start_up_fence() -> None:
    """A serving primary's round does not fence it (the start-up rule is for a
    supervisor that starts; a round is one tick)."""
    mem = cronstate.Memory(boot_id="x", role="primary", role_since=NOW - 500)
    state = cronstate.continuing(NodeState(R.PRIMARY, 2), mem, NOW, probe_failed=False)
    assert state.started and state.since == NOW - 500 and state.fenced_at is None
    obs = Observation(
        now=NOW + 1,
        local=DbStatus(True, Role.PRIMARY, writable=True, position=POS),
        peer=PeerView(2, Announce(2, R.REPLICA, True, False, POS, eligible=True), NOW + 0.9,
                      echo_sent_at=NOW + 0.8),
        vip_held=True,
        covers=covers,
    )  # fmt: skip
    d = decide(state, obs, cronstate.cron_params(CFG))
    assert (d.rule, d.actions) == ("primary-serving", ())
    view = view_from_round(CFG, d.next_state, obs, d, paths=UP)
    assert assess(view, Limits.of(CFG)).status is Status.OK


def test_a_fenced_node_resumes_only_on_an_echo_from_this_round() -> None:
    mem = cronstate.Memory(boot_id="x", role="fenced", role_since=NOW - 500)
    state = cronstate.continuing(NodeState(R.FENCED, 0), mem, NOW, probe_failed=False)
    assert state.fenced_at == NOW
    local = DbStatus(True, Role.PRIMARY, writable=True, position=POS)
    peer = Announce(0, R.REPLICA, True, False, POS, eligible=True)
    cron = cronstate.cron_params(CFG)
    old_echo = PeerView(2, peer, NOW + 0.9, echo_sent_at=NOW - 30)
    fresh = PeerView(2, peer, NOW + 0.9, echo_sent_at=NOW + 0.5)
    assert decide(state, Observation(NOW + 1, local, old_echo), cron).rule == "fenced-wait"
    assert decide(state, Observation(NOW + 1, local, fresh), cron).rule == "fenced-resume"


def test_probe_failures_carry_over_between_rounds() -> None:
    mem = cronstate.Memory(boot_id="x", role="primary", role_since=1.0, db_fails=2)
    assert cronstate.continuing(NodeState(R.PRIMARY), mem, NOW, True).db_fails == 3
    assert cronstate.continuing(NodeState(R.PRIMARY), mem, NOW, False).db_fails == 0


# --------------------------------------------- conf/: systemd unit and cron entry

UNIT = ROOT / "conf" / "dbha@.service"
CRON = ROOT / "conf" / "dbha.cron"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_the_systemd_unit_has_what_the_supervisor_needs() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["ExecStart"] == "/usr/local/bin/dbha run -c /etc/dbha/%i.toml"
    assert re.fullmatch(r"\d+s", svc["WatchdogSec"])
    assert svc["Restart"] == "on-failure"
    assert svc["KillMode"] in ("process", "mixed") and svc["KillSignal"] == "SIGTERM"
    caps = svc["CapabilityBoundingSet"].split()
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW"} <= set(caps)
    assert {"AF_NETLINK", "AF_PACKET", "AF_INET"} <= set(svc["RestrictAddressFamilies"].split())
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    # An instance of the template. systemd-analyze verify checks that ExecStart's
    # program exists and is executable: give it one made here, so the test does not
    # depend on where (or whether) dbha is installed, or on PATH.
    dbha = tmp_path / "bin" / "dbha"
    dbha.parent.mkdir()
    dbha.write_text("#!/bin/sh\nexit 0\n")
    dbha.chmod(0o755)
    assert "/usr/local/bin/dbha" in UNIT.read_text()
    text = UNIT.read_text().replace("/usr/local/bin/dbha", str(dbha))
    (tmp_path / "dbha@pg.service").write_text(text)
    res = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "dbha@pg.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "dbha@pg.service" not in res.stderr, res.stderr


_FIELD = {  # name, lowest, highest
    0: ("minute", 0, 59),
    1: ("hour", 0, 23),
    2: ("day of month", 1, 31),
    3: ("month", 1, 12),
    4: ("day of week", 0, 7),
}


def _cron_field_ok(text: str, lo: int, hi: int) -> bool:
    for part in text.split(","):
        m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if m is None:
            return False
        nums = [int(x) for x in (m.group(2), m.group(3), m.group(4)) if x is not None]
        if m.group(4) is not None and int(m.group(4)) < 1:
            return False
        if any(not lo <= n <= hi for n in nums[:2]):
            return False
    return True


def test_the_cron_entry_runs_one_round_a_minute_never_overlapping() -> None:
    jobs = []
    for raw in CRON.read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if re.fullmatch(r"[A-Z_]+=\S.*", text):
            continue  # an environment line
        jobs.append(text.split(None, 6))
    assert len(jobs) == 1
    fields = jobs[0]
    assert len(fields) == 7
    for i, (name, lo, hi) in _FIELD.items():
        assert _cron_field_ok(fields[i], lo, hi), f"bad {name} field {fields[i]!r}"
    assert fields[:5] == ["*"] * 5  # every minute: service.cron_period_ms = 60000
    assert fields[5] == "root"
    command = fields[6]
    assert command.startswith("flock -n /run/lock/")
    argv = command.split("|")[0].split()
    assert "timeout" in argv and "/usr/local/bin/dbha" in argv
    timeout = argv[argv.index("timeout") :]
    limit = int(timeout[3] if timeout[1] == "-k" else timeout[1])
    assert limit < 60  # a hung round ends before the next one is due
    assert argv[argv.index("/usr/local/bin/dbha") :][:4] == [
        "/usr/local/bin/dbha",
        "check",
        "-c",
        "/etc/dbha/pg.toml",
    ]
    assert CFG.service.cron_period_ms == 60_000


# ------------------------------------------------------------------ the command


def test_check_without_a_usable_config_is_critical_in_one_line() -> None:
    """No supervisor answers for conf/postgresql-a.toml here and the files it names
    do not exist: the check says CRITICAL (exit 2) and why, in the plugin's format."""
    from click.testing import CliRunner

    from dbha.cli import main

    config = str(ROOT / "conf" / "postgresql-a.toml")
    res = CliRunner().invoke(main, ["check", "-c", config])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("DBHA CRITICAL - config ") and res.output.count("\n") == 1
    res = CliRunner().invoke(main, ["check", "--json", "-c", config])
    doc = json.loads(res.output)
    assert (res.exit_code, doc["status"], doc["code"]) == (2, "CRITICAL", 2)


STRICT = replace(LIMITS, sync="strict", config="/etc/dbha/pg.toml")
SYNC_PRIMARY_DB = replace(PRIMARY_DB, sync_replication=True, sync_standbys=1)
NO_STANDBY = {
    "database down": replace(PEER_REPLICA, db_reachable=False, eligible=False),
    "needs a resync": replace(PEER_REPLICA, role="fenced", needs_resync=True, eligible=False),
    "fenced": replace(PEER_REPLICA, role="fenced", eligible=False),
    "not eligible": replace(PEER_REPLICA, eligible=False),
}


@pytest.mark.parametrize("case", list(NO_STANDBY))
def test_no_standby_is_warning_except_in_strict_synchronous_mode(case: str) -> None:
    """A primary whose heard peer cannot take over: WARNING in asynchronous and
    fallback modes; CRITICAL in strict synchronous mode (its commits wait for that
    peer), naming the way out; WARNING again once synchronous commit is relaxed."""
    view = _v(PRIMARY, db=SYNC_PRIMARY_DB, peer=NO_STANDBY[case])
    for sync in ("async", "fallback"):
        a = assess(view, replace(LIMITS, sync=sync))
        assert a.status is Status.WARNING and "no standby: b" in a.summary, a.summary
    a = assess(view, STRICT)
    assert a.status is Status.CRITICAL, a.summary
    assert "no standby: b" in a.summary and "strict synchronous mode" in a.summary
    assert "dbha sync relax -c /etc/dbha/pg.toml" in a.summary
    relaxed = _v(view, db=replace(SYNC_PRIMARY_DB, sync_replication=False))
    a = assess(relaxed, STRICT)
    assert a.status is Status.WARNING and "relaxed" in a.summary, a.summary


def test_a_working_standby_is_no_finding_and_a_replica_is_not_judged_for_it() -> None:
    """Only a primary judges its standby; a replica whose primary is fine says OK
    whatever the mode, and a healthy pair in strict mode is OK."""
    assert assess(_v(PRIMARY, db=SYNC_PRIMARY_DB), STRICT).status is Status.OK
    assert assess(_v(PRIMARY, peer=replace(PEER_REPLICA, eligible=None)), STRICT).status is (
        Status.OK
    )  # an older peer that does not say: not judged
    assert assess(REPLICA, STRICT).status is Status.OK


def test_the_status_reply_carries_the_peers_eligibility_to_the_check() -> None:
    reply = {
        "service": "pg",
        "node": "a",
        "peer": "b",
        "role": "primary",
        "epoch": 1,
        "vip": {"held_here": True},
        "database": {"reachable": True, "role": "primary", "writable": True},
        "paths": {"lan": {"up": True}, "hb": {"up": True}},
        "keeper_alive": True,
        "peer_state": {"role": "replica", "epoch": 1, "db_reachable": True, "eligible": False},
    }
    a = assess(view_from_status(reply, LIMITS), LIMITS)
    assert a.status is Status.WARNING and "b is not eligible" in a.summary, a.summary
    reply["peer_state"] = {**reply["peer_state"], "eligible": True}  # type: ignore[dict-item]
    assert assess(view_from_status(reply, LIMITS), LIMITS).status is Status.OK
