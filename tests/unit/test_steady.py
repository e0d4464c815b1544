"""When the supervisor's loop may tick at its steady period, and what wakes it.

``steady()`` is judged on real decisions of the core (test_decide's builders);
the probe's gist and the path set's next silence deadline are pure values.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dbha.beat.paths import PathSet
from dbha.config.params import params
from dbha.core.decide import decide
from dbha.core.model import (
    DbStatus,
    NodeRole,
    NodeState,
    Observation,
    ReplicaInfo,
    Request,
    RequestKind,
    Role,
)
from dbha.core.timing import WAKE_SLACK, plan_wait, steady
from dbha.node.observe import _probe_gist
from tests.unit.test_decide import (
    CFG,
    NOW,
    PRIMARY_PEER,
    REPLICA_PEER,
    ann,
    heard,
    obs,
    primary_db,
    replica_db,
    silent,
    st,
)

R = NodeRole
PATHS = 2


def replica_state(**kw: Any) -> NodeState:
    kw.setdefault("dead_since", None)
    return st(R.REPLICA, asked=False, **kw)


def primary_state(**kw: Any) -> NodeState:
    return st(R.PRIMARY, asked=False, **kw)


REPLICA_OBS = obs(replica_db(), heard(PRIMARY_PEER))
PRIMARY_OBS = obs(primary_db(), heard(REPLICA_PEER), vip_held=True)


def judge(state: NodeState, observation: Observation, paths: int = PATHS) -> bool:
    """Two ticks on the same observation, as the loop runs them: steady after the second?"""
    cfg = CFG["async"]
    prev = decide(state, observation, params(cfg))
    before = prev.next_state
    d = decide(before, observation, params(cfg))
    return steady(prev, d, before, observation, paths)


@pytest.mark.parametrize(
    ("state", "observation"),
    [(replica_state(), REPLICA_OBS), (primary_state(), PRIMARY_OBS)],
    ids=["replica following", "primary serving"],
)
def test_a_healthy_pair_is_steady(state: NodeState, observation: Observation) -> None:
    assert judge(state, observation)


NOT_STEADY = [
    ("one path down", replica_state(), obs(replica_db(), heard(PRIMARY_PEER, up=1))),
    ("peer silent", replica_state(), obs(replica_db(), silent(PRIMARY_PEER))),
    ("never heard", replica_state(), obs(replica_db(), heard(None))),
    (
        "local database down",
        replica_state(),
        obs(DbStatus.unreachable("refused"), heard(PRIMARY_PEER)),
    ),
    ("a check fails", replica_state(), REPLICA_OBS._replace(checks_ok=False)),
    ("no lease keeper", primary_state(), PRIMARY_OBS._replace(keeper_ok=False)),
    (
        "an operator's request",
        primary_state(),
        PRIMARY_OBS._replace(request=Request(RequestKind.MAINTENANCE_ON)),
    ),
    (
        "peer's database down",
        primary_state(),
        obs(primary_db(), heard(ann(R.REPLICA, db_reachable=False)), vip_held=True),
    ),
    (
        "peer needs a resync",
        primary_state(),
        obs(primary_db(), heard(ann(R.REPLICA, needs_resync=True)), vip_held=True),
    ),
    ("two primaries", primary_state(), obs(primary_db(), heard(PRIMARY_PEER), vip_held=True)),
    ("primary without its VIP (acts)", primary_state(), PRIMARY_OBS._replace(vip_held=False)),
    ("fenced", st(R.FENCED, asked=False), obs(primary_db(writable=False), heard(PRIMARY_PEER))),
    ("switching over", primary_state(switching=True), PRIMARY_OBS),
]


@pytest.mark.parametrize(
    ("state", "observation"), [pytest.param(s, o, id=name) for name, s, o in NOT_STEADY]
)
def test_anything_going_on_keeps_the_heartbeat_period(
    state: NodeState, observation: Observation
) -> None:
    assert not judge(state, observation)


@pytest.mark.parametrize(
    "state",
    [
        replica_state(db_fails=1),
        replica_state(dead_since=NOW - 0.2),
        primary_state(switching=True),
    ],
    ids=["a failed probe counted", "peer_dead verdicts running", "switching over"],
)
def test_state_in_motion_is_not_steady_even_if_kept(state: NodeState) -> None:
    """The core clears these when all is well; were one kept, the loop stays quick."""
    observation = REPLICA_OBS if state.role is R.REPLICA else PRIMARY_OBS
    d = decide(state, observation, params(CFG["async"]))._replace(next_state=state)
    assert not steady(d, d, state, observation, PATHS)
    calm = replace(state, db_fails=0, dead_since=None, switching=False)
    d = d._replace(next_state=calm)
    assert steady(d, d, calm, observation, PATHS)


def test_more_paths_configured_than_up_is_not_steady() -> None:
    assert not judge(replica_state(), REPLICA_OBS, paths=3)


def test_a_changed_decision_or_a_wait_is_not_steady() -> None:
    cfg = CFG["async"]
    before = replica_state()
    d = decide(before, REPLICA_OBS, params(cfg))
    assert steady(d, d, before, REPLICA_OBS, PATHS)
    assert not steady(None, d, before, REPLICA_OBS, PATHS)  # the first tick
    other = d._replace(rule="replica-other", reason="something else")
    assert not steady(other, d, before, REPLICA_OBS, PATHS)
    assert not steady(d, d._replace(wake_at=NOW + 0.3), before, REPLICA_OBS, PATHS)
    moved = replace(before, since=NOW)  # the state changed on this tick
    assert not steady(d, d, moved, REPLICA_OBS, PATHS)


def test_the_probe_gist_ignores_positions_and_lag_only() -> None:
    base = replica_db()
    moved = replace(base, position=None, received=None, lag_bytes=123, lag_seconds=4.5)
    assert _probe_gist(moved) == _probe_gist(base)
    for change in (
        {"reachable": False},
        {"role": Role.PRIMARY},
        {"writable": True},
        {"streaming": False},
        {"upstream": "c"},
        {"sync_replication": True},
        {"sync_waiting": 2},
        {"error": "timeout"},
        {"replicas": (ReplicaInfo("b", state="streaming", sync=True),)},
    ):
        assert _probe_gist(replace(base, **change)) != _probe_gist(base), change
    p = primary_db(replicas=(ReplicaInfo("b", state="streaming", sync=True),))
    assert _probe_gist(replace(p, replicas=(ReplicaInfo("b", state="catchup", sync=True),))) != (
        _probe_gist(p)
    )


def test_next_down_is_the_first_silence_deadline_of_a_path_up() -> None:
    ps = PathSet.create(["lan", "hb"], interval_ms=100, misses=5, rise=1)
    assert ps.next_down() is None  # nothing up yet
    ps, _ = ps.on_beat("lan", 10.0)
    assert ps.next_down() == pytest.approx(10.5)
    ps, _ = ps.on_beat("hb", 10.2)
    ps, _ = ps.on_beat("lan", 10.3)
    assert ps.next_down() == pytest.approx(10.7)  # hb's, heard last at 10.2
    ps, events = ps.advance(10.71)
    assert [e.path for e in events] == ["hb"]
    assert ps.next_down() == pytest.approx(10.8)  # lan's; hb is down
    ps, _ = ps.advance(10.81)
    assert ps.next_down() is None


# ---- the loop's wait (plan_wait): period, early ticks, and the times it must wake at

QUIET = decide(replica_state(), REPLICA_OBS, params(CFG["async"]))._replace(
    wake_at=None, lease_until=None
)


def test_the_period_runs_from_the_planned_tick() -> None:
    # planned at 10.0, began on time, done at 10.01: the next at 10.25
    assert plan_wait(10.0, 10.0, 10.01, 0.25, QUIET, True, None) == pytest.approx((10.25, 0.24))


def test_an_early_tick_starts_the_period_afresh_and_a_slow_one_is_followed_at_once() -> None:
    # woken by news at 10.05 although 10.25 was planned: the next at 10.30, not 10.50
    assert plan_wait(10.25, 10.05, 10.06, 0.25, QUIET, True, None) == pytest.approx((10.30, 0.24))
    assert plan_wait(10.0, 10.0, 10.4, 0.1, QUIET, False, None) == (10.4, 0.0)


def test_a_decision_wait_that_ends_within_the_period_ends_the_wait() -> None:
    d = QUIET._replace(wake_at=10.05)
    nxt, delay = plan_wait(10.0, 10.0, 10.01, 0.1, d, False, None)
    assert delay == pytest.approx(0.04 + WAKE_SLACK) and nxt == pytest.approx(10.05 + WAKE_SLACK)


def test_a_steady_wait_ends_when_the_probe_goes_stale() -> None:
    """A hung server answers nothing: only the time says the probe failed. A steady
    loop must tick then, not at the end of its period (a hung primary handed over
    2-4 s late when it did not)."""
    nxt, delay = plan_wait(10.0, 10.0, 10.01, 0.25, QUIET, True, 10.1)
    assert delay == pytest.approx(0.09 + WAKE_SLACK) and nxt == pytest.approx(10.1 + WAKE_SLACK)
    leased = QUIET._replace(lease_until=10.2)
    _, delay = plan_wait(10.0, 10.0, 10.01, 0.25, leased, True, 10.3)
    assert delay == pytest.approx(0.19 + WAKE_SLACK)  # the lease's end, before the period's


def test_times_outside_the_wait_or_outside_a_steady_state_do_not_shorten_it() -> None:
    late = QUIET._replace(wake_at=10.5, lease_until=10.6)
    assert plan_wait(10.0, 10.0, 10.01, 0.25, late, True, 10.9) == pytest.approx((10.25, 0.24))
    past = QUIET._replace(lease_until=9.0)
    assert plan_wait(10.0, 10.0, 10.01, 0.25, past, True, 9.5) == pytest.approx((10.25, 0.24))
    # at the heartbeat interval the probe and the lease need no wake of their own
    leased = QUIET._replace(lease_until=10.05)
    assert plan_wait(10.0, 10.0, 10.01, 0.1, leased, False, 10.03) == pytest.approx((10.1, 0.09))
