"""The local probe runs at its own cadence: a failed probe counts once.

The database observer probes every ``database.probe_interval_ms``, usually
rarer than the ticks that read its latest answer. ``decide()`` counts a
failed probe by the time it was taken (``Observation.probe_at``), so one
failure seen by several ticks is one failure; the observer's staleness rule
turns a probe that never answers into one more failure per probe interval.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from dbha.config.params import params
from dbha.core.decide import PROBE_FALL, decide
from dbha.core.model import DbStatus, Decision, NodeRole, NodeState, Observation, Role
from dbha.db.fake import FakeCluster, FakeDriver
from dbha.node.observe import DbObserver
from tests.unit.test_decide import NOW, REPLICA_PEER, heard, make_cfg, primary_db, st

CFG = make_cfg()
DOWN = DbStatus.unreachable("connection refused")


def tick(state: NodeState, local: DbStatus, now: float, probe_at: float | None) -> Decision:
    # The peer is heard all along: its last beat 50 ms before ``now``.
    peer = heard(REPLICA_PEER, ago=0.05 - (now - NOW), echo_ago=0.1 - (now - NOW))
    return decide(
        state, Observation(now, local, peer, vip_held=True, probe_at=probe_at), params(CFG)
    )


def run(
    start: NodeState, ticks: list[tuple[DbStatus, float | None]], every: float = 0.1
) -> list[Decision]:
    """Ticks ``every`` seconds apart from NOW; each names its probe and its time."""
    out, state = [], start
    for i, (local, probe_at) in enumerate(ticks):
        d = tick(state, local, NOW + i * every, probe_at)
        out.append(d)
        state = d.next_state
    return out


def test_one_failed_probe_seen_by_many_ticks_counts_once() -> None:
    """Five ticks see the same failed probe (taken at NOW): one failure, no handover."""
    ds = run(st(NodeRole.PRIMARY, asked=False), [(DOWN, NOW)] * 5)
    assert [d.next_state.db_fails for d in ds] == [1, 1, 1, 1, 1]
    assert all(d.next_state.role is NodeRole.PRIMARY for d in ds)
    assert "primary-db-failed" not in {d.rule for d in ds}


def test_probe_fall_new_failed_probes_hand_over() -> None:
    """Probes every 0.5 s (every fifth tick), each failing: the handover comes with
    the PROBE_FALL-th new failure, not before."""
    ticks: list[tuple[DbStatus, float | None]] = []
    for i in range(5 * PROBE_FALL):
        ticks.append((DOWN, NOW + (i // 5) * 0.5))
    ds = run(st(NodeRole.PRIMARY, asked=False), ticks)
    fails = [d.next_state.db_fails for d in ds]
    first_handover = next(i for i, d in enumerate(ds) if d.rule == "primary-db-failed")
    assert first_handover == 5 * (PROBE_FALL - 1)  # the first tick that sees probe #3
    assert fails[: 5 * (PROBE_FALL - 1)] == [n for n in range(1, PROBE_FALL) for _ in range(5)]
    assert ds[first_handover].next_state.role is NodeRole.HANDOVER


def test_an_answer_resets_the_count() -> None:
    ds = run(
        st(NodeRole.PRIMARY, asked=False),
        [(DOWN, NOW), (DOWN, NOW + 0.1), (primary_db(), NOW + 0.2), (DOWN, NOW + 0.3)],
    )
    assert [d.next_state.db_fails for d in ds] == [1, 2, 0, 1]


def test_without_probe_times_every_observation_is_a_new_probe() -> None:
    """``probe_at`` None (the simulation, most unit tests): one probe per tick, as
    before the probe had a cadence of its own."""
    ds = run(st(NodeRole.PRIMARY, asked=False), [(DOWN, None)] * PROBE_FALL)
    assert [d.next_state.db_fails for d in ds] == list(range(1, PROBE_FALL + 1))
    assert ds[-1].rule == "primary-db-failed"


# ------------------------------------------------------------------- observer


class Clockwork:
    """A FakeDriver whose probe can be made to 'never return' by not calling it:
    the observer is driven by hand (probe_once), never by its thread."""

    def __init__(self) -> None:
        cluster = FakeCluster()
        self.server = cluster.add("a")
        self.driver = FakeDriver(self.server)


def observer(every: float = 0.5, timeout: float = 2.0) -> tuple[DbObserver, Any]:
    parts = Clockwork()
    return DbObserver(parts.driver, every, timeout), parts.server


def test_latest_probe_carries_the_time_it_was_taken() -> None:
    obs, _ = observer()
    assert obs.latest_probe(0.0) is None
    st_ = obs.probe_once()
    got = obs.latest_probe(0.0)  # a time before the probe: never stale
    assert got is not None and got[0] is st_ and st_.reachable and st_.role is Role.PRIMARY
    assert obs.latest_probe(got[1] + 0.1) == got
    assert obs.latest(got[1] + 0.1) is st_


def test_a_probe_that_never_answers_counts_once_per_interval() -> None:
    """No answer for longer than timeout + 3 intervals: unreachable, stamped on the
    probe cadence, so each interval without an answer is one new failed probe."""
    every, timeout = 0.5, 2.0
    obs, _ = observer(every, timeout)
    obs.probe_once()
    got = obs.latest_probe(0.0)  # any time: only differences matter
    assert got is not None
    at = got[1]
    limit = timeout + 3 * every
    just_fresh = obs.latest_probe(at + limit - 0.01)
    assert just_fresh is not None and just_fresh[0].reachable and just_fresh[1] == at
    stamps = []
    for k in range(12):
        got = obs.latest_probe(at + limit + 0.01 + k * 0.1)  # ticks every 0.1 s
        assert got is not None and not got[0].reachable
        stamps.append(got[1])
    distinct = sorted(set(stamps))
    assert len(distinct) == 3  # 1.2 s of ticks span three probe intervals
    assert [b - a for a, b in itertools.pairwise(distinct)] == pytest.approx([every, every])
    assert at not in distinct


def test_overdue_at_is_where_the_answer_goes_stale() -> None:
    """The loop ticks at ``overdue_at`` (nothing else says a probe went missing):
    just before it the answer stands, just after it the probe counts as failed."""
    every, timeout = 0.5, 2.0
    obs, _ = observer(every, timeout)
    assert obs.overdue_at() is None
    obs.probe_once()
    due = obs.overdue_at()
    got = obs.latest_probe(0.0)
    assert due is not None and got is not None
    assert due == pytest.approx(got[1] + timeout + 3 * every)
    before, after = obs.latest_probe(due - 0.001), obs.latest_probe(due + 0.001)
    assert before is not None and before[0].reachable
    assert after is not None and not after[0].reachable


def test_stale_answers_feed_decide_one_failure_per_interval() -> None:
    """The observer's stale answers, read by ticks every 0.1 s, reach PROBE_FALL
    failures after PROBE_FALL probe intervals, not after PROBE_FALL ticks."""
    every, timeout = 0.5, 2.0
    obs, _ = observer(every, timeout)
    obs.probe_once()
    got = obs.latest_probe(0.0)
    assert got is not None
    start = got[1] + timeout + 3 * every + 0.01
    state = st(NodeRole.PRIMARY, asked=False)
    fails = []
    for k in range(11):
        now = start + k * 0.1
        probed = obs.latest_probe(now)
        assert probed is not None
        d = tick(state, probed[0], NOW + k * 0.1, probed[1])
        state = d.next_state
        fails.append(state.db_fails)
    assert fails[0] == 1 and max(fails) == PROBE_FALL
    assert fails.index(PROBE_FALL) >= 2 * int(every / 0.1) - 1


def test_after_a_failed_probe_the_next_comes_at_the_retry_cadence() -> None:
    """Healthy: one probe per interval. Failed: the next one a tick later, so a dead
    database is noticed after PROBE_FALL quick probes; a hung one is counted on the
    quick cadence too."""
    parts = Clockwork()
    obs = DbObserver(parts.driver, 0.5, 2.0, retry_every=0.1)
    healthy = obs.probe_once()
    assert healthy.reachable and obs.next_wait(healthy) == 0.5
    parts.server.crash()
    failed = obs.probe_once()
    assert not failed.reachable and obs.next_wait(failed) == 0.1
    got = obs.latest_probe(0.0)
    assert got is not None
    stamps = {obs.latest_probe(got[1] + 2.0 + 0.31 + k * 0.1)[1] for k in range(3)}  # type: ignore[index]
    assert len(stamps) == 3  # three ticks past the bound: three missed probes
    assert DbObserver(parts.driver, 0.5, 2.0, retry_every=1.0).retry_every == 0.5
