"""The pre_promote hook: asked before a promotion changes anything; a non-zero exit,
a timeout or a program that cannot start vetoes it, and the executor then refuses
the decision with nothing changed. Real scripts, run by the real hook runner, in
front of the executor over the fake driver."""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

import pytest

from dbha.config.params import params
from dbha.core.decide import decide
from dbha.core.model import (
    ACQUIRE_VIP,
    PROMOTE,
    WAIT_REPLAYED,
    NodeRole,
    NodeState,
    Notify,
    PersistState,
    PrePromote,
    Role,
)
from dbha.errors import ConfigError
from dbha.node.alerts import Alerts
from dbha.node.hooks import OUTPUT_LIMIT, VETO_HOLD, PrePromoteHook, PromotionVetoed
from tests.unit.test_decide import CFG, DEAD, ann, obs, replica_db, silent, st
from tests.unit.test_executor import World


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _hook(program: Path | None, timeout: float = 5.0, clock: Clock | None = None) -> PrePromoteHook:
    return PrePromoteHook(
        program, timeout, service="pg", node="b", peer="a", clock=clock or time.monotonic
    )


def _promotion(world: World, hook: PrePromoteHook, kind: str = "failover") -> tuple:
    new = NodeState(role=NodeRole.PROMOTING, epoch=2)
    ex = world.executor("b")
    ex.parts.pre_promote = lambda a, t: hook.check(a.kind, a.epoch, a.reason)
    actions = (
        PrePromote(kind, 2, "a is silent and dead"),
        PersistState(new),
        WAIT_REPLAYED,
        PROMOTE,
        ACQUIRE_VIP,
        Notify("promoted", "epoch 2"),
    )
    return ex, actions


@pytest.fixture
def world() -> World:
    w = World()
    w.cluster.add("a")
    w.cluster.add("b", upstream="a")
    return w


def test_without_a_hook_the_promotion_goes_on(world: World) -> None:
    ex, actions = _promotion(world, _hook(None))
    out = ex.run(actions)
    assert out.ok and out.done == len(actions)
    assert world.cluster.servers["b"].role is Role.PRIMARY


def test_a_hook_that_exits_0_passes_and_is_told_what_promotes(world: World, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    hook = _hook(
        _script(
            tmp_path / "ok",
            f'echo "$1 $DBHA_PROMOTION $DBHA_EPOCH $DBHA_NODE '
            f'$DBHA_PEER $DBHA_SERVICE $DBHA_EVENT|$DBHA_DETAIL" > {seen}',
        )
    )
    ex, actions = _promotion(world, hook, kind="switchover")
    out = ex.run(actions)
    assert out.ok
    assert seen.read_text() == "switchover switchover 2 b a pg pre_promote|a is silent and dead\n"
    assert world.cluster.servers["b"].role is Role.PRIMARY and world.vip.held


def test_a_veto_refuses_the_decision_and_changes_nothing(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hook = _hook(_script(tmp_path / "no", 'echo "checking"; echo "DC in maintenance" >&2; exit 3'))
    ex, actions = _promotion(world, hook)
    with caplog.at_level(logging.INFO):
        out = ex.run(actions)
    assert not out.ok and out.refused and out.done == 0
    assert isinstance(out.failed, PrePromote)
    assert out.persisted is None and world.saved == []  # no epoch bumped or written
    assert world.cluster.servers["b"].role is Role.REPLICA and not world.vip.held
    assert "vetoed by the pre_promote hook" in out.error
    assert "(exit 3: DC in maintenance)" in out.error
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "checking" in logged and "DC in maintenance" in logged  # its output, logged


def test_a_vetoed_promotion_sends_no_arp_probe_and_a_passed_one_does(
    world: World, tmp_path: Path
) -> None:
    """The VIP's ARP probe starts ahead of a promotion's steps, but only once the
    hook has passed: a promotion vetoed at every tick must not probe at every tick."""
    probes: list[object] = []
    probe = world.vip.probe_ahead

    def counted() -> object:
        probes.append(probe())
        return probes[-1]

    world.vip.probe_ahead = counted  # type: ignore[method-assign]
    flag = tmp_path / "allow"
    hook = _hook(_script(tmp_path / "gate", f"test -e {flag}"), clock=Clock())
    ex, actions = _promotion(world, hook, kind="forced")  # forced: asked every time
    for _ in range(3):
        assert not ex.run(actions).ok
    assert probes == []
    flag.touch()
    assert ex.run(actions).ok
    assert len(probes) == 1 and world.vip.aheads == probes  # handed to AcquireVip


def test_a_hook_that_does_not_answer_in_time_is_a_veto_and_is_killed_whole(
    world: World, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    hook = _hook(_script(tmp_path / "slow", f"sleep 60 & echo $! > {pid_file}; wait"), timeout=0.5)
    ex, actions = _promotion(world, hook)
    out = ex.run(actions)
    assert not out.ok and out.refused and world.saved == []
    assert "did not answer within 0.5 s: a veto" in out.error
    child = int(pid_file.read_text())
    gone = False
    for _ in range(50):  # bounded: 5 s
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            gone = True
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            gone = True  # killed; a zombie until its (killed) parent is reaped
            break
        time.sleep(0.1)
    assert gone, "the hook's child outlived the hook's timeout"


def test_a_hook_that_cannot_start_is_a_veto(world: World, tmp_path: Path) -> None:
    not_exec = tmp_path / "plain"
    not_exec.write_text("#!/bin/sh\nexit 0\n")
    ex, actions = _promotion(world, _hook(not_exec))
    out = ex.run(actions)
    assert not out.ok and out.refused and "cannot run" in out.error


def test_its_output_is_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hook = _hook(
        _script(
            tmp_path / "loud",
            "yes xxxxxxxxxxxxxxx | head -c 200000; echo last words; exit 1",
        )
    )
    with caplog.at_level(logging.WARNING), pytest.raises(PromotionVetoed) as err:
        hook.check("failover", 2)
    assert "last words" in str(err.value)
    (record,) = [r for r in caplog.records if "vetoed" in r.getMessage()]
    logged = record.getMessage()
    assert OUTPUT_LIMIT - 100 < len(logged) < OUTPUT_LIMIT + 500  # its tail, not all 200 kB
    assert logged.rstrip().endswith("last words")


def test_after_a_veto_the_hook_runs_again_only_after_the_hold(tmp_path: Path) -> None:
    """A hook that always vetoes is not run at every tick: in between, the
    promotion is refused with the last veto; a forced failover always asks."""
    clock = Clock()
    hook = _hook(_script(tmp_path / "no", "echo nope; exit 1"), clock=clock)
    reasons = []
    for _ in range(5):
        with pytest.raises(PromotionVetoed) as err:
            hook.check("failover", 2)
        reasons.append(str(err.value))
        clock.now += 0.1
    assert hook.runs == 1 and len(set(reasons)) == 1
    with pytest.raises(PromotionVetoed):
        hook.check("forced", 2)
    assert hook.runs == 2
    clock.now += VETO_HOLD
    with pytest.raises(PromotionVetoed):
        hook.check("failover", 2)
    assert hook.runs == 3


def test_once_the_hook_passes_the_promotion_goes_on(world: World, tmp_path: Path) -> None:
    clock = Clock()
    flag = tmp_path / "allow"
    hook = _hook(_script(tmp_path / "gate", f"test -e {flag}"), clock=clock)
    ex, actions = _promotion(world, hook)
    assert not ex.run(actions).ok
    flag.touch()
    assert not ex.run(actions).ok  # within the hold: not asked again yet
    clock.now += VETO_HOLD
    assert ex.run(actions).ok
    assert world.cluster.servers["b"].role is Role.PRIMARY


def test_the_same_veto_is_logged_once(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The executor logs a refusal when it first happens (a warning) and at debug
    level while it repeats."""
    clock = Clock()
    hook = _hook(_script(tmp_path / "no", "echo nope; exit 1"), clock=clock)
    ex, actions = _promotion(world, hook, kind="switchover")
    with caplog.at_level(logging.DEBUG, logger="dbha.executor"):
        for _ in range(4):
            assert not ex.run(actions).ok
            clock.now += VETO_HOLD  # the hook runs every time, and says the same
    warnings = [r for r in caplog.records if r.name == "dbha.executor" and r.levelno >= 30]
    assert len(warnings) == 1 and "PrePromote refused" in warnings[0].getMessage()
    assert hook.runs == 4


def test_a_veto_is_an_alert_until_a_promotion_runs() -> None:
    """The failover_refused alert (an event once, a warning every 30 s, dbha status)
    names the veto, survives the ticks between two vetoed handovers, and ends
    when a promotion goes through."""
    events: list[tuple[str, str]] = []
    alerts = Alerts(CFG["async"], lambda e, d: events.append((e, d)))
    o = obs(replica_db(), silent(ann(NodeRole.PRIMARY)), safety=DEAD, lag_units=0)
    d = decide(st(NodeRole.REPLICA), o, params(CFG["async"]))
    assert d.rule == "failover-promote"
    follow = d._replace(rule="replica-follow", actions=())
    why = "vetoed by the pre_promote hook /x (exit 1: nope)"
    alerts.update(o, d, started_at=o.now - 100, vetoed=why)
    alerts.update(o._replace(now=o.now + 1), follow, started_at=o.now - 100)
    alerts.update(o._replace(now=o.now + 2), d, started_at=o.now - 100, vetoed=why)
    assert [e for e, _ in events] == ["failover_refused"]
    assert why in events[0][1] and why in alerts.texts()["failover_refused"]
    alerts.update(o._replace(now=o.now + 3), d, started_at=o.now - 100)  # it passed
    assert "failover_refused" not in alerts.texts()


# ------------------------------------------------------------------- config


def test_the_hook_is_configured_in_hooks() -> None:
    from dbha import config
    from dbha.node.executor import Timeouts
    from tests.unit.test_config import changed

    cfg = config.loads(changed(("hooks.pre_promote", "/usr/local/lib/dbha/pre-promote")))
    assert cfg.hooks.pre_promote == Path("/usr/local/lib/dbha/pre-promote")
    assert cfg.hooks.pre_promote_timeout_ms == config.DEFAULT_PRE_PROMOTE_TIMEOUT_MS == 2000
    assert config.loads(changed()).hooks.pre_promote is None
    assert Timeouts.of(cfg).pre_promote > cfg.hooks.pre_promote_timeout_ms / 1000
    assert "pre_promote /usr/local/lib/dbha/pre-promote" in config.summary(cfg)
    assert 'hooks.pre_promote = "/usr/local/lib/dbha/pre-promote": does not exist' in (
        config.missing_files(cfg)
    )
    for key, value, problem in (
        ("hooks.pre_promote", "relative/hook", "hooks.pre_promote"),
        ("hooks.pre_promote_timeout_ms", 60_001, "hooks.pre_promote_timeout_ms = 60001"),
    ):
        with pytest.raises(ConfigError) as e:
            config.loads(changed((key, value)))
        assert problem in str(e.value)
