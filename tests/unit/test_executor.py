"""The executor: actions in order, each bounded, stop at the first failure, retry the
idempotent ones. Acts on the fake driver (checked against the real ones by the
contract suite) and on plain recording callables."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dbha.core.model import (
    ACQUIRE_VIP,
    FENCE,
    PROMOTE,
    UNFENCE,
    WAIT_REPLAYED,
    ArbiterMark,
    Fence,
    NodeRole,
    NodeState,
    Notify,
    PersistState,
    Role,
)
from dbha.db.base import Upstream
from dbha.db.fake import FakeCluster, FakeDriver
from dbha.errors import DbhaError
from dbha.node.executor import Executor, Parts, Timeouts

T = Timeouts(fence=0.5, db=1.0, wait_replayed=1.0, rejoin=2.0, vip=1.0, fence_peer=1.0)


@dataclass
class Vip:
    fail_first: int = 0
    calls: int = 0
    held: bool = False

    aheads: list[object] = field(default_factory=list)  # what each acquire was given

    def probe_ahead(self) -> object:
        return ("ahead", self.calls)

    def acquire(self, ahead: object = None) -> object:
        self.aheads.append(ahead)
        self.calls += 1
        if self.calls <= self.fail_first:
            raise DbhaError("netlink busy")
        self.held = True
        return None

    def release(self) -> bool:
        was, self.held = self.held, False
        return was


@dataclass
class World:
    cluster: FakeCluster = field(default_factory=FakeCluster)
    vip: Vip = field(default_factory=Vip)
    saved: list[NodeState] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)

    def executor(self, node: str) -> Executor:
        parts = Parts(
            driver=FakeDriver(self.cluster.servers[node]),
            vip=self.vip,
            upstream=Upstream("a", "198.18.0.11", 5432),
            save_state=self.saved.append,
            notify=lambda e, d: self.events.append((e, d)),
            start_safety_check=lambda: None,
            fence_peer=lambda t: None,
            set_synchronous=lambda on, t: None,
        )
        return Executor(parts, T)


@pytest.fixture
def world() -> World:
    w = World()
    w.cluster.add("a")
    w.cluster.add("b", upstream="a")
    return w


def test_a_promotion_runs_in_order_and_persists_first(world: World) -> None:
    new = NodeState(role=NodeRole.PROMOTING, epoch=1)
    out = world.executor("b").run(
        (PersistState(new), WAIT_REPLAYED, PROMOTE, ACQUIRE_VIP, Notify("promoted", "epoch 1"))
    )
    assert out.ok and out.done == 5 and out.persisted == new
    assert world.saved == [new]
    assert world.cluster.servers["b"].role is Role.PRIMARY
    assert world.vip.held and world.events == [("promoted", "epoch 1")]


def test_the_first_failure_stops_the_rest(world: World) -> None:
    world.cluster.servers["b"].hang()
    new = NodeState(role=NodeRole.PROMOTING, epoch=1)
    out = world.executor("b").run((PersistState(new), PROMOTE, ACQUIRE_VIP))
    assert not out.ok and out.done == 1 and out.failed is PROMOTE
    assert out.persisted == new  # what was written stays written
    assert not world.vip.held  # nothing after the failure ran


def test_a_best_effort_failure_does_not_stop_the_rest(world: World) -> None:
    world.cluster.servers["a"].hang()
    out = world.executor("a").run((Fence(best_effort=True), Notify("fenced", "x")))
    assert out.ok and world.events == [("fenced", "x")]


def test_idempotent_actions_are_retried_within_their_budget(world: World) -> None:
    world.vip.fail_first = 2
    out = world.executor("a").run((ACQUIRE_VIP,))
    assert out.ok and world.vip.calls == 3


def test_the_vip_probe_starts_ahead_and_a_retry_probes_afresh(world: World) -> None:
    """The ARP probe is started before the first action (so it overlaps a promotion)
    and handed to the first AcquireVip only; its retries probe again themselves."""
    world.vip.fail_first = 1
    out = world.executor("a").run((Notify("x", "y"), ACQUIRE_VIP))
    assert out.ok and world.vip.aheads == [("ahead", 0), None]
    assert world.executor("a").run((Notify("x", "y"),)).ok
    assert world.vip.aheads == [("ahead", 0), None]  # no AcquireVip: no probe


def test_fence_then_unfence_on_the_fake(world: World) -> None:
    ex = world.executor("a")
    assert ex.run((FENCE,)).ok
    assert not world.cluster.servers["a"].writable
    assert ex.run((UNFENCE,)).ok
    assert world.cluster.servers["a"].writable


def test_an_unsupported_action_fails_clearly_and_changes_nothing(world: World) -> None:
    out = world.executor("a").run((ArbiterMark(epoch=1),))
    assert not out.ok and "not supported yet" in out.error
