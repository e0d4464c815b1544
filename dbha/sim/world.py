"""What the simulated nodes and the invariant checker see of the world that runs
them, and of each other: the runner (:class:`dbha.sim.runner.World`) implements
:class:`WorldView`, its nodes (:class:`dbha.sim.nodes.SimNode`) :class:`NodeView`.
Written down here so that the runner, the nodes and the checker never import
each other in a circle: the runner builds the other two; they know only this."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dbha.core.model import Action, ArbiterView, NodeState, Request
from dbha.db.fake import Entry, FakeCluster, FakeServer
from dbha.sim.network import HbLayer, Network
from dbha.sim.schedules import Fault, Schedule


@dataclass
class Result:
    seed: int
    violations: list[str] = field(default_factory=list)
    promotions: int = 0
    acked: int = 0
    lost_async: int = 0
    split_brain_documented: int = 0
    keeper_fences: int = 0
    converged_after: float = 0.0  # seconds from the end of the faults to convergence
    steps: int = 0
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


class NodeView(Protocol):
    """A simulated host, as the world and the checker read it."""

    name: str
    index: int
    state: NodeState
    server: FakeServer
    alive: bool
    vip: bool
    supervisor_up: bool
    split_fallback: bool
    revived_at: float
    t_local: float
    requests: list[Request]
    hb: HbLayer

    def accepting(self) -> bool: ...


class WorldView(Protocol):
    """The simulated world: time, network, databases, faults, and the log of what
    clients were told."""

    sched: Schedule
    deadline: float
    step_s: float
    step: int
    t: float
    rng: random.Random
    net: Network
    cluster: FakeCluster
    check_table: bool
    verbose: bool
    operator_at: float | None
    arbiter_view: ArbiterView
    safety_steps: int
    active: list[Fault]
    acked: list[tuple[Entry, bool]]
    sync: bool
    result: Result

    @property
    def nodes(self) -> Sequence[NodeView]: ...

    def trace(self, line: str) -> None: ...

    def split_recent(self) -> bool: ...

    def violation(self, kind: str, detail: str) -> None: ...

    def on_promote(self, node: NodeView) -> None: ...

    def set_sync(self, node: NodeView, on: bool) -> None: ...

    def arbiter_cas(self, node: NodeView, a: Action) -> None: ...
