"""The deterministic simulation: many random schedules, replay, and proof that the
invariant checks are not vacuous (a sabotaged core is caught)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dbha.sim.nodes as sim_nodes
from dbha.beat.paths import PathTracker
from dbha.config import Config
from dbha.core.decide import decide
from dbha.core.model import (
    Decision,
    Fence,
    FencePeer,
    NodeRole,
    NodeState,
    Observation,
    ReleaseVip,
    SafetyView,
    Verdict,
)
from dbha.core.params import Params
from dbha.sim.__main__ import main, run_many
from dbha.sim.network import PathLink
from dbha.sim.runner import World, run_seed
from dbha.sim.schedules import Fault, Schedule
from dbha.sim.world import Result

SCHEDULES = 10_000
WORKERS = 2


def test_ten_thousand_random_schedules_keep_every_invariant(
    record_property: Callable[[str, object], None],
) -> None:
    """10,000 random fault schedules on 2 worker processes: no invariant is ever
    violated. The time is recorded (and printed with -s), never asserted."""
    started = time.perf_counter()
    results = list(run_many(0, SCHEDULES, WORKERS))
    took = time.perf_counter() - started
    bad = [f"seed {r.seed}: {v}" for r in results for v in r.violations]
    assert len(results) == SCHEDULES
    assert bad == [], "\n".join(bad[:20])
    promotions = sum(r.promotions for r in results)
    acked = sum(r.acked for r in results)
    assert promotions > SCHEDULES // 10  # the schedules do cause failovers
    assert acked > SCHEDULES * 10  # and clients do write through them
    record_property("sim_seconds", round(took, 1))
    print(
        f"\n{SCHEDULES} schedules in {took:.1f} s ({SCHEDULES / took:.0f}/s on {WORKERS} "
        f"workers); {promotions} promotions, {acked} acknowledged commits"
    )


def test_a_seed_replays_exactly() -> None:
    for seed in (3, 17, 2024):
        a, b = run_seed(seed, verbose=True), run_seed(seed, verbose=True)
        assert a.trace == b.trace and len(a.trace) > 3
        assert (a.promotions, a.acked, a.violations) == (b.promotions, b.acked, b.violations)


def test_cli_reports_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "0", "--schedules", "20"]) == 0
    out = capsys.readouterr().out
    assert "20 schedules, 0 with violations" in out


# ------------------------------------------------- the checks are not vacuous

Sabotage = Callable[[NodeState, Observation, Config], Decision]


@pytest.fixture
def sabotage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Sabotage], None]]:
    def install(core: Sabotage) -> None:
        monkeypatch.setattr(sim_nodes, "decide", core)

    yield install


def _find(kind: str, seeds: range) -> Result | None:
    for seed in seeds:
        r = run_seed(seed, check_table=False)
        if any(f" {kind}:" in v for v in r.violations):
            return r
    return None


def test_a_core_that_never_fences_is_caught(sabotage: Callable[[Sabotage], None]) -> None:
    """A primary that never steps down (no fence, no VIP release, an endless lease
    for its keeper): the isolated primary keeps serving and two nodes accept writes."""

    def core(state: NodeState, obs: Observation, p: Params) -> Decision:
        d = decide(state, obs, p)
        if state.role is NodeRole.PRIMARY and d.next_state.role is not NodeRole.PRIMARY:
            d = Decision(state, (), "primary-serving", "sabotaged", None, None)
        acts = tuple(a for a in d.actions if not isinstance(a, Fence | ReleaseVip | FencePeer))
        return d._replace(actions=acts, lease_until=float("inf"))

    sabotage(core)
    assert _find("isolated-primary", range(400)) is not None
    assert _find("two-writers", range(1000)) is not None


def test_a_core_that_trusts_one_silent_path_is_caught(
    sabotage: Callable[[Sabotage], None],
) -> None:
    """Count a peer silent as soon as one path is down, and believe it dead: a single
    path failure then causes a failover."""

    def core(state: NodeState, obs: Observation, p: Params) -> Decision:
        peer = obs.peer
        if peer.paths_up == 1 and peer.last is not None:
            # one path down: "the peer is gone" (silent for long, checked dead)
            obs = obs._replace(
                peer=peer._replace(paths_up=0, heard_at=obs.now - 5.0),
                safety=SafetyView(Verdict.PEER_DEAD, obs.now - 0.01),
            )
            state = replace(state, dead_since=obs.now - 5.0)
        return decide(state, obs, p)

    sabotage(core)
    assert _find("single-path-failover", range(600)) is not None


# The replica b is cut off for 3 s (the primary falls back and acknowledges alone),
# comes back with its replication link still down, then the primary's host dies.
MARK_SCENARIO = [
    Fault("isolate", 20, 80, node=1),
    Fault("path_down", 20, 240, path=0),
    Fault("kill_host", 100, 240, node=0),
]


def test_a_replica_behind_the_mark_is_not_promoted() -> None:
    _world, r = _scenario("fallback", MARK_SCENARIO)
    assert r.ok, r.violations
    assert any("primary-sync-fallback" in line for line in r.trace)
    assert not any("failover-promote" in line for line in r.trace)


def test_a_core_that_ignores_the_sync_mark_is_caught(
    sabotage: Callable[[Sabotage], None],
) -> None:
    """Same schedule, with a replica that ignores the replica-not-in-sync mark: it
    promotes without the commits the primary acknowledged alone."""

    def core(state: NodeState, obs: Observation, p: Params) -> Decision:
        last = obs.peer.last
        if last is not None and state.role is NodeRole.REPLICA:
            obs = obs._replace(peer=obs.peer._replace(last=last._replace(sync_mark=None)))
        return decide(state, obs, p)

    sabotage(core)
    _, r = _scenario("fallback", MARK_SCENARIO)
    assert any(" lost-commit:" in v for v in r.violations), r.violations


def test_a_core_that_never_resumes_is_caught(sabotage: Callable[[Sabotage], None]) -> None:
    def core(state: NodeState, obs: Observation, p: Params) -> Decision:
        d = decide(state, obs, p)
        if d.rule == "fenced-resume":
            return Decision(state, (), "fenced-wait", "sabotaged", None, None)
        return d

    sabotage(core)
    assert _find("no-convergence", range(200)) is not None


def test_failing_seed_is_printed_with_its_replay_command(
    sabotage: Callable[[Sabotage], None], capsys: pytest.CaptureFixture[str]
) -> None:
    def core(state: NodeState, obs: Observation, p: Params) -> Decision:
        d = decide(state, obs, p)
        if d.rule == "fenced-resume":
            return Decision(state, (), "fenced-wait", "sabotaged", None, None)
        return d

    sabotage(core)
    assert main(["--seed", "0", "--schedules", "5"]) == 1
    out = capsys.readouterr().out
    assert "no-convergence" in out
    seed = int(out.split("replay: python -m dbha.sim --seed ")[1].split()[0])
    assert main(["--seed", str(seed), "--schedules", "1", "-v"]) == 1
    trace = capsys.readouterr().out
    assert "VIOLATION no-convergence" in trace and f"seed {seed}:" in trace


# ------------------------------------------------- scenarios, as in the lab


def _scenario(
    mode: str,
    faults: list[Fault],
    *,
    seed: int = 1,
    primary: int = 0,
    profile: str = "default",
    tail: float = 8.0,
) -> tuple[World, Result]:
    step = 0.05 if profile == "default" else 0.025
    quiet = max((f.end for f in faults), default=20)
    last = max((f.start for f in faults), default=20)
    sched = Schedule(
        seed=seed,
        profile=profile,
        mode=mode,
        auto_rejoin=False,
        single_path=False,
        clocks=((0.0, 1.0), (5000.0, 1.0)),
        first_primary=primary,
        faults=tuple(faults),
        quiet_from=quiet,
        steps=max(last, min(quiet, 10**4)) + round(tail / step),
        step_s=step,
    )
    world = World(sched, verbose=True)
    return world, world.run()


def _serving(world: World) -> list[str]:
    return [
        n.name
        for n in world.nodes
        if n.state.role is NodeRole.PRIMARY and n.vip and n.server.writable
    ]


@pytest.mark.parametrize("mode", ["async", "strict", "fallback", "arbiter"])
def test_primary_host_death_fails_over(mode: str) -> None:
    """Host a (primary) dies for good at 2 s: b promotes, holds the VIP, loses nothing."""
    world, r = _scenario(mode, [Fault("kill_host", 40, 10**6, node=0)], tail=6.0)
    assert r.ok, r.violations
    assert r.promotions == 1 and world.nodes[1].state.role is NodeRole.PRIMARY
    assert world.nodes[1].vip and world.nodes[1].server.writable


@pytest.mark.parametrize("kind", ["path_down", "path_oneway", "path_loss"])
def test_one_path_failing_never_fails_over(kind: str) -> None:
    world, r = _scenario("async", [Fault(kind, 40, 240, node=0, path=1, value=0.3, jitter=2)])
    assert r.ok and r.promotions == 0
    assert _serving(world) == ["a"]


def test_heartbeats_blocked_while_databases_talk_never_fails_over() -> None:
    world, r = _scenario("strict", [Fault("beats_blocked", 40, 240)])
    assert r.ok and r.promotions == 0
    assert _serving(world) == ["a"]


def test_isolated_primary_fences_itself_and_the_replica_takes_over() -> None:
    world, r = _scenario("strict", [Fault("isolate", 40, 200, node=0)])
    assert r.ok, r.violations
    a, _b = world.nodes
    assert r.promotions == 1 and _serving(world) == ["b"]
    assert a.state.role is NodeRole.FENCED and a.state.needs_resync


def test_replica_beyond_the_lag_bound_is_not_promoted() -> None:
    """Replication stalls, writes go on, then the primary dies: no promotion."""
    world, r = _scenario(
        "async", [Fault("repl_stall", 20, 10**6), Fault("kill_host", 200, 10**6, node=0)], tail=4.0
    )
    del world
    assert r.promotions == 0


def test_planned_switchover_loses_nothing() -> None:
    world, r = _scenario("strict", [Fault("switchover", 40, 41)])
    assert r.ok, r.violations
    assert r.promotions == 1 and _serving(world) == ["b"]
    assert world.nodes[0].state.role is NodeRole.REPLICA


# ------------------------------------------------- the simulated path tracker


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.001, 1.5), st.booleans()), min_size=1, max_size=60))
def test_sim_path_tracker_agrees_with_beatpaths(events: list[tuple[float, bool]]) -> None:
    """The simulation's mutable path tracker follows dbha.beat.paths.PathTracker's rule
    exactly: same up/down after every beat and every silence."""
    interval, misses, rise = 0.1, 5, 3
    real = PathTracker("p", int(interval * 1000), misses, rise)
    fake = PathLink()
    now = 0.0
    for gap, beat in events:
        now += gap
        if beat:
            real, _ = real.on_beat(now)
            fake.on_beat(now, interval * misses, 2 * interval, rise)
        else:
            real, _ = real.advance(now)
            fake.advance(now, interval * misses)
        assert (fake.up, fake.streak) == (real.up, real.streak)


# ------------------------------------ a supervisor restarted during a failover


def _restart_during_failover(seed: int) -> tuple[Result, World]:
    """fallback mode, default timing: a (the primary) dies at 2 s and stays dead for
    20 s; b's supervisor dies 0.3 s later and is started again 0.3 s after that."""
    base = Schedule(
        seed=seed,
        profile="default",
        mode="fallback",
        auto_rejoin=False,
        single_path=False,
        clocks=((0.0, 1.0), (5000.0, 1.0)),
        first_primary=0,
        faults=(Fault("kill_host", 40, 440, node=0), Fault("restart", 46, 52, node=1)),
        quiet_from=440,
        steps=560,
        step_s=0.05,
    )
    world = World(base, verbose=True)
    return world.run(), world


def test_a_replica_restarted_while_its_primary_is_dead_still_takes_over() -> None:
    """The restarted replica remembers (in the same boot) what made the promotion
    safe: the newest beat of its own the primary echoed while it was eligible, and
    what the primary last said. It takes over while the primary is still dead, and
    every invariant holds."""
    for seed in range(5):
        result, world = _restart_during_failover(seed)
        assert result.violations == [], result.violations
        promoted = [t for t in result.trace if "failover-promote" in t and "PersistState" in t]
        assert promoted, "\n".join(result.trace[-30:])
        assert float(promoted[0].split()[0]) < 5.0  # within 3 s of the death, not at 22 s
        assert world.nodes[1].state.role is NodeRole.PRIMARY


def test_without_its_memory_the_restarted_replica_never_takes_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same run with the memory taken away (as before there was one): the new
    process never heard its primary, cannot prove the primary had not fallen back
    to asynchronous commits, and refuses until the old primary comes back."""
    monkeypatch.setattr(sim_nodes, "remember", lambda state, obs: None)
    result, _ = _restart_during_failover(0)
    early = [
        t
        for t in result.trace
        if "failover-promote" in t and "PersistState" in t and float(t.split()[0]) < 22.0
    ]
    assert early == []
    assert any("has not confirmed hearing this replica" in t for t in result.trace)
