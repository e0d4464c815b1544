"""Run one schedule: the world, its step loop, and the result.

One step (half a heartbeat interval) does, in order: fault edges, beat
deliveries, replication, the client's write, each node's beats and
supervisor tick (each on its own phase), safety-check results, the lease
keepers, and the invariant checks of :mod:`dbha.sim.invariants`.
"""

from __future__ import annotations

import random

from dbha.core.model import (
    Action,
    ArbiterMark,
    ArbiterPromote,
    ArbiterUnmark,
    ArbiterView,
    NodeRole,
    NodeState,
    Request,
    RequestKind,
    Role,
)
from dbha.core.params import FALLBACK_DEADLINES
from dbha.db.fake import Entry, FakeCluster, FakeServer
from dbha.sim.clocks import Clock
from dbha.sim.invariants import Checker
from dbha.sim.network import PATHS, Beat, Network
from dbha.sim.nodes import ActionFailed, SimNode
from dbha.sim.schedules import NODES, Fault, Schedule, config_for, generate
from dbha.sim.world import NodeView, Result

RING = 8  # beats are delayed by at most RING - 1 steps
CLIENT_TIMEOUT_S = 2.0
CLIENT_EVERY = 4  # steps between two writes of the client (two heartbeat intervals)


class World:
    """Everything of one simulated run."""

    def __init__(self, sched: Schedule, verbose: bool = False, check_table: bool = True) -> None:
        self.sched = sched
        self.verbose = verbose
        self.check_table = check_table
        self.rng = random.Random(sched.seed * 7919 + 1)
        self.step = 0
        self.t = 0.0
        self.result = Result(sched.seed)
        self.kinds: set[str] = set()
        self.net = Network(self.rng)
        self.cluster = FakeCluster()
        first = sched.first_primary
        self.cluster.add(NODES[first])
        self.cluster.add(NODES[1 - first], upstream=NODES[first])
        self.nodes = [
            SimNode(self, i, config_for(i, sched.profile, sched.mode, sched.auto_rejoin), Clock(*c))
            for i, c in enumerate(sched.clocks)
        ]
        self.step_s = sched.step_s
        p = self.nodes[0].p
        self.deadline = p.deadline
        self.safety_steps = max(
            1,
            round(
                config_for(0, sched.profile, sched.mode, False).safety.timeout_ms
                / 1000.0
                / self.step_s
            ),
        )
        self.sync = sched.mode != "async"
        # Both nodes start from a persisted state, as a pair built by the lab would.
        for i, n in enumerate(self.nodes):
            role = NodeRole.PRIMARY if i == first else NodeRole.REPLICA
            n.disk = NodeState(role=role, epoch=1)
            n.vip = i == first
            n.tick_phase = self.rng.randrange(2)
            n.beat_phase = self.rng.randrange(2)
            n.start_at = self.rng.randrange(3)
        if self.sync:
            self.cluster.servers[NODES[first]].sync_names = frozenset({NODES[1 - first]})
        self.arbiter_record = (1, False, NODES[first])
        self.arbiter_view = ArbiterView(1, False)
        self.inbox: list[list[tuple[int, Beat]]] = [[] for _ in range(RING)]
        self.pending: list[tuple[Entry, int, FakeServer]] = []  # (entry, step, written on)
        self.acked: list[tuple[Entry, bool]] = []  # (entry, exempt)
        self.writes = 0
        self.starts: dict[int, list[Fault]] = {}
        self.ends: dict[int, list[Fault]] = {}
        for f in sched.faults:
            self.starts.setdefault(f.start, []).append(f)
            self.ends.setdefault(f.end, []).append(f)
        self.active: list[Fault] = []
        self.operator_at: float | None = None  # last answered operator request
        self.undecidable_at: float | None = None  # last step the network was undecidable
        self.undecided = False  # undecidable(), recomputed at each fault edge
        self.repl_stalled = False
        self.replay_paused = [False, False]
        self.checker = Checker(self)

    # ------------------------------------------------------------- helpers

    def trace(self, line: str) -> None:
        self.result.trace.append(f"{self.t:7.2f} {line}")

    def violation(self, kind: str, detail: str) -> None:
        if kind in self.kinds:
            return  # the first of each kind tells the story
        self.kinds.add(kind)
        self.result.violations.append(f"t={self.t:.2f} {kind}: {detail}")
        if self.verbose:
            self.trace(f"VIOLATION {kind}: {detail}")

    def on_promote(self, node: NodeView) -> None:
        self.result.promotions += 1
        self.checker.on_promote(node)

    def set_sync(self, node: NodeView, on: bool) -> None:
        srv = node.server
        srv.sync_names = frozenset({NODES[1 - node.index]}) if on else frozenset()
        # Falling back during the partition two nodes cannot judge: what this node
        # acknowledges alone until it is in sync again may be lost (docs/design.md).
        node.split_fallback = not on and self.sched.mode == "fallback" and self.split_recent()
        if not on:  # commits waiting for the replica are released: acknowledged now
            keep = []
            exempt = node.split_fallback
            for item in self.pending:
                if _has(srv, item[0]):
                    self.acked.append((item[0], exempt))
                else:
                    keep.append(item)
            self.pending = keep

    def arbiter_cas(self, node: NodeView, a: Action) -> None:
        """The arbiter's compare-and-set on its record (epoch, marked, owner)."""
        if not self.net.gateway(node.index):
            raise ActionFailed("arbiter unreachable")
        epoch, marked, owner = self.arbiter_record
        me = node.name
        if isinstance(a, ArbiterPromote):
            want = (a.epoch + 1, a.mark, me)
            if self.arbiter_record != want and (epoch, marked) != (a.epoch, False):
                raise ActionFailed(f"arbiter record {self.arbiter_record}")
            self.arbiter_record = want
        elif isinstance(a, ArbiterMark):
            if epoch != a.epoch or (marked and owner != me):
                raise ActionFailed(f"arbiter record {self.arbiter_record}")
            self.arbiter_record = (epoch, True, me)
        elif isinstance(a, ArbiterUnmark):
            if epoch != a.epoch or (marked and owner != me):
                raise ActionFailed(f"arbiter record {self.arbiter_record}")
            self.arbiter_record = (epoch, False, me)
        self.arbiter_view = ArbiterView(self.arbiter_record[0], self.arbiter_record[1])

    # --------------------------------------------------------------- faults

    def _apply(self, f: Fault, on: bool) -> None:
        net = self.net
        node = self.nodes[f.node]
        kind = f.kind
        if self.verbose:
            self.trace(f"{'FAULT' if on else 'HEAL '} {f.describe()}")
        if on:
            self.active.append(f)
        else:
            self.active.remove(f)
        if kind == "kill_host":
            if on:
                node.kill()
            else:
                node.revive(self.rng.randint(0, 3))
        elif kind == "kill_db":
            if on:
                node.server.crash()
            elif node.alive:
                node.server.restart()
        elif kind == "hang_db":
            node.server.hang(on)
        elif kind == "freeze":
            node.frozen = on
        elif kind == "restart":
            # The supervisor process dies (a crash, its watchdog, an upgrade) and its
            # service manager starts it again when the fault ends; the host, its
            # database and the lease keeper stay.
            if on:
                node.crash_supervisor()
            elif node.alive:
                node.start_at = self.step
        elif kind == "stall":
            node.stalled = on
        elif kind == "check_fail":
            node.checks_ok = not on
        elif kind == "unknown_safety":
            node.safety_unknown = on
        elif kind == "replay_pause":
            self.replay_paused[f.node] = on
            node.server.replay_paused = on
        elif kind == "client_cut":
            net.client_cut[f.node] = on
        elif kind == "isolate":
            net.isolated[f.node] = on
            self.checker.isolated_since[f.node] = self.t if on else None
        elif kind == "path_down":
            net.up[f.path] = [not on, not on]
        elif kind == "path_oneway":
            net.up[f.path][f.node] = not on
        elif kind == "path_loss":
            net.loss[f.path] = f.value if on else 0.0
            net.jitter[f.path] = f.jitter if on else 0
        elif kind == "path_dup":
            net.dup[f.path] = f.value if on else 0.0
        elif kind == "beats_blocked":
            for p in range(len(PATHS)):
                net.beats_blocked[p] = on
        elif kind == "split":
            for p in range(len(PATHS)):
                net.up[p] = [not on, not on]
        elif kind == "gateway_down":
            net.gateway_up = not on
        elif kind == "repl_stall":
            self.repl_stalled = on
        elif kind == "switchover":
            if on:
                for n in self.nodes:
                    if n.state.role is NodeRole.PRIMARY:
                        n.request(Request(RequestKind.SWITCHOVER))
        elif kind == "failover":
            if on:
                for n in self.nodes:
                    if n.state.role is not NodeRole.PRIMARY:
                        # without --force: a forced failover skips the data checks
                        # by the operator's choice (tests/unit cover it)
                        n.request(Request(RequestKind.FAILOVER))
                        break
        elif kind == "maintenance":
            node.request(Request(RequestKind.MAINTENANCE_ON if on else RequestKind.MAINTENANCE_OFF))

    # ------------------------------------------------------------ the loop

    def run(self) -> Result:
        sched = self.sched
        for step in range(sched.steps):
            self.step = step
            self.t = step * self.step_s
            self.cluster.now = self.t
            for n in self.nodes:
                n.t_local = n.clock.offset + n.clock.rate * self.t
            ends = self.ends.get(step)
            starts = self.starts.get(step)
            if ends or starts:
                for f in ends or ():
                    self._apply(f, False)
                for f in starts or ():
                    self._apply(f, True)
                self.net.refresh()
                self.undecided = self.undecidable()
            if self.undecided:
                self.undecidable_at = self.t
            self._deliver(step)
            self._replicate()
            if step % CLIENT_EVERY == 0:
                self._client(step)
            self._acks(step)
            for n in self.nodes:
                self._node_step(n, step)
            for n in self.nodes:
                # the keeper is a process the supervisor starts: it outlives a hung or
                # stopped loop, not the host
                if (n.supervisor_up or n.keeper_alone) and n.keep():
                    self.result.keeper_fences += 1
                    if self.verbose:
                        self.trace(f"{n.name} keeper fenced (lease {n.lease})")
            self.checker.step()
            if self.checker.settled():
                break
        self.checker.finish()
        self.result.steps = self.step + 1
        self.result.acked = len(self.acked)
        return self.result

    def _node_step(self, n: SimNode, step: int) -> None:
        if not n.alive:
            return
        if not n.supervisor_up:
            if step < n.start_at:
                return
            n.start_supervisor()
        if n.frozen:
            return
        if n.safety_due is not None and n.safety_due[0] <= step:
            n.safety = n.safety_due[1]
            n.safety_due = None
        if step % 2 == n.beat_phase:
            self._send(n, step)
        if step % 2 == n.tick_phase and not n.stalled:
            n.tick()

    def _send(self, n: SimNode, step: int) -> None:
        boot, seq, eboot, eseq = n.hb.send(n.now())
        ann = n.announce
        net = self.net
        for path in range(len(PATHS)):
            for delay in net.deliveries(path, n.index):
                self.inbox[(step + delay) % RING].append(
                    (1 - n.index, (n.index, path, boot, seq, eboot, eseq, ann))
                )

    def _deliver(self, step: int) -> None:
        box = self.inbox[step % RING]
        if not box:
            return
        self.inbox[step % RING] = []
        for dst, beat in box:
            n = self.nodes[dst]
            if n.alive and n.supervisor_up and not n.frozen:
                n.hb.receive(beat, n.now())

    def _replicate(self) -> None:
        servers = self.cluster.servers
        lan = self.net.tcp_lan
        for n in self.nodes:
            r = n.server
            if r.role is not Role.REPLICA or r.upstream is None:
                continue
            u = servers.get(r.upstream)
            if u is None or not lan or self.repl_stalled or not n.alive:
                r.disconnect()
                continue
            if (
                r.streaming
                and len(r.wal) == len(u.wal)
                and (not r.wal or r.wal[-1] is u.wal[-1])
                and u.up
                and not u.hung
                and r.up
                and not r.hung
            ):
                pass  # nothing new to ship and nothing changed
            else:
                u.ship(r)
            if r.applied < len(r.wal):
                r.replay()

    def _client(self, step: int) -> None:
        target = None
        for n in self.nodes:
            if (
                n.alive
                and n.vip
                and self.net.client(n.index)
                and (target is None or n.vip_since > target.vip_since)
            ):
                target = n
        if target is None:
            return
        srv = target.server
        if not srv.writable:
            return
        self.writes += 1
        pos = srv.write(str(self.writes))
        if pos is None:
            return
        entry = srv.wal[-1]
        if not srv.sync_names:
            self.acked.append((entry, target.split_fallback))
        else:
            self.pending.append((entry, step, srv))

    def _acks(self, step: int) -> None:
        if not self.pending:
            return
        servers = self.cluster.servers
        keep = []
        limit = CLIENT_TIMEOUT_S / self.step_s
        for item in self.pending:
            entry, at, srv = item
            # acknowledged once a replica the writing primary waits for has it
            if _has(srv, entry) and any(_has(servers[n], entry) for n in srv.sync_names):
                self.acked.append((entry, False))
            elif step - at < limit:
                keep.append(item)
        self.pending = keep

    def undecidable(self) -> bool:
        """The partition two nodes cannot judge: both alive and reaching the gateway,
        and no path (heartbeats or TCP) between them."""
        net = self.net
        a, b = self.nodes
        return a.alive and b.alive and net.gateway(0) and net.gateway(1) and not net.tcp_any()

    def split_recent(self) -> bool:
        """The undecidable partition is on, or ended within the fallback wait (a
        primary falls back FALLBACK_DEADLINES deadlines after its replica went quiet:
        a replica that promoted in the partition may be lost to it until then)."""
        last = self.undecidable_at
        return last is not None and self.t - last <= FALLBACK_DEADLINES * self.deadline


def _has(srv: FakeServer, entry: Entry) -> bool:
    wal = srv.wal
    return len(wal) >= entry.lsn and wal[entry.lsn - 1] is entry


def run_seed(seed: int, verbose: bool = False, check_table: bool = True) -> Result:
    """Generate and run the schedule of ``seed``."""
    sched = generate(seed)
    world = World(sched, verbose=verbose, check_table=check_table)
    if verbose:
        world.result.trace.append(sched.describe())
    return world.run()
