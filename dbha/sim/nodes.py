"""A simulated node: the real decision core, a fake database, a simulated shell.

Each :class:`SimNode` holds what one host holds: its supervisor (a
:class:`~dbha.core.model.NodeState` in memory, the persisted copy "on disk", the
heartbeat layer), its database (a :class:`dbha.db.fake.FakeServer` driven
through :class:`~dbha.db.fake.FakeDriver`), whether the VIP is configured on
it, and its lease keeper (the independent fence timer). ``tick`` is one round
of the supervisor's loop: observe, :func:`dbha.core.decide.decide`, run the actions
in order (stopping at the first failure, as the real executor does), persist.
"""

from __future__ import annotations

from dbha.config import Config
from dbha.config.params import params
from dbha.core.decide import announce, decide
from dbha.core.decide.restart import Remembered, peer_view, remember, resume
from dbha.core.model import (
    AcquireVip,
    Action,
    Announce,
    ArbiterMark,
    ArbiterPromote,
    ArbiterUnmark,
    DbStatus,
    Decision,
    Fence,
    FencePeer,
    NodeRole,
    NodeState,
    Notify,
    Observation,
    PersistState,
    Position,
    PrepareReplica,
    PrePromote,
    Promote,
    Rejoin,
    ReleaseVip,
    Request,
    Role,
    RunSafetyCheck,
    SafetyView,
    SetSynchronous,
    Unfence,
    Verdict,
    WaitReplayed,
)
from dbha.core.transitions import check
from dbha.db.base import DbError, Upstream
from dbha.db.fake import FakeDriver, FakeServer, covers
from dbha.sim.clocks import Clock
from dbha.sim.network import HbLayer
from dbha.sim.world import WorldView

REQUEST_TIMEOUT_S = 2.0


class ActionFailed(Exception):
    """A simulated action failed (the real executor's DbError, VIP or arbiter error)."""


class SimNode:
    """One host of the pair."""

    def __init__(self, world: WorldView, index: int, cfg: Config, clock: Clock) -> None:
        self.world = world
        self.index = index
        self.name = cfg.node.name
        self.cfg = cfg
        self.p = params(cfg)
        self.clock = clock
        self.server: FakeServer = world.cluster.servers[self.name]
        self.driver = FakeDriver(self.server)
        self.disk: NodeState = NodeState()
        self.state: NodeState = NodeState()
        self.alive = True
        self.revived_at = -1.0  # when the host last came back
        self.supervisor_up = False  # the supervisor process runs
        self.start_at = 0  # step at which the supervisor (re)starts
        self.frozen = False  # the supervisor process is stopped (SIGSTOP)
        self.keeper_alone = False  # the supervisor died; its keeper enforces the last lease
        # What the supervisor keeps for a restart of its own process (the shell's
        # supervisor-memory.json): lost with the host, kept over a restart.
        self.memory: Remembered | None = None
        self.stalled = False  # its loop hangs, its heartbeat threads still send
        self.split_fallback = False  # fell back to async during the undecidable partition
        self.vip = False
        self.vip_since = -1  # step of the last VIP acquisition
        self.lease: float | None = None  # the keeper's lease, local clock
        self.boots = 0
        self.hb: HbLayer = self._new_hb()
        self.announce: Announce = Announce(epoch=0, role=NodeRole.REPLICA)
        self.safety: SafetyView | None = None
        self.safety_due: tuple[int, SafetyView] | None = None  # result ready at a step
        self.safety_unknown = False  # fault: the safety check cannot conclude
        self.checks_ok = True
        self.requests: list[Request] = []
        self.requests_at = 0.0  # when the oldest request was made (the CLI waits 2 s)
        self.t_local = clock.local(0.0)  # this node's clock, updated every step
        self.tick_phase = 0
        self.beat_phase = 0
        # probe cache
        self._probe_key: tuple[object, ...] | None = None
        self._probe: DbStatus | None = None
        self._ann_key: tuple[object, ...] | None = None

    def _new_hb(self) -> HbLayer:
        hb = self.cfg.heartbeat
        # Path timing is measured on the local clock: scale the interval by the rate
        # so the tracker's rule sees the local durations the real service would.
        self.boots += 1
        return HbLayer(self.boots, hb.interval_ms / 1000.0, hb.misses, hb.rise)

    # ------------------------------------------------------------ lifecycle

    def now(self) -> float:
        return self.t_local

    def kill(self) -> None:
        """Host death: everything stops; the VIP stays configured on the interface."""
        self.alive = False
        self.supervisor_up = False
        self.keeper_alone = False
        self.memory = None  # a new boot: its monotonic times mean nothing
        self.server.crash()
        self.lease = None
        self.safety_due = None

    def revive(self, delay_steps: int) -> None:
        """The host comes back: the database restarts at once, the supervisor after
        ``delay_steps`` (it loads the persisted state and starts from scratch)."""
        self.alive = True
        self.revived_at = self.world.t
        self.server.restart()
        self.start_at = self.world.step + delay_steps

    def crash_supervisor(self) -> None:
        """The supervisor process dies; its keeper goes on enforcing the last lease,
        and the supervisor starts again only when told (``start_at``)."""
        self.supervisor_up = False
        self.keeper_alone = True
        self.start_at = 1 << 62
        self.safety_due = None
        self.requests.clear()

    def start_supervisor(self) -> None:
        self.supervisor_up = True
        self.keeper_alone = False
        self.state = resume(self.disk.persisted(), self.memory)
        self.hb = self._new_hb()
        self.safety = None
        self.safety_due = None
        self.lease = None
        self._probe_key = None
        self._ann_key = None
        self.announce = Announce(epoch=self.state.epoch, role=self.state.role)

    def request(self, req: Request) -> None:
        """An operator's request through the CLI (it waits REQUEST_TIMEOUT_S for an answer)."""
        if not self.requests:
            self.requests_at = self.world.t
        self.requests.append(req)

    # -------------------------------------------------------------- observe

    def probe(self) -> DbStatus:
        s = self.server
        other = self.world.nodes[1 - self.index].server
        key = (
            s.up,
            s.hung,
            s.role,
            s.fenced,
            len(s.wal),
            s.applied,
            s.streaming,
            s.upstream,
            s.sync_names,
            s.timeline,
            s.replay_paused,
            s.acks,
            other.up,
            other.streaming,
            other.upstream,
            len(other.wal),
            other.applied,
        )
        if key == self._probe_key and self._probe is not None:
            return self._probe
        st = self.driver.probe(1.0)
        if s.applied == len(s.wal):  # no lag in seconds that depends on the clock
            self._probe_key = key
            self._probe = st
        else:
            self._probe_key = None
        return st

    def lag_units(self, local: DbStatus) -> int | None:
        """How far behind the peer's newest announced position we are (as the real
        shell would compute it: the driver's distance on one timeline)."""
        ref = self.hb.last_position
        if ref is None:
            return None
        mine = local.received if local.received is not None else local.position
        if mine is None or mine.timeline != ref.timeline or mine.lsn is None or ref.lsn is None:
            return None
        return max(0, ref.lsn - mine.lsn)

    def tick(self) -> Decision:
        world = self.world
        now = self.now()
        local = self.probe()
        peer = peer_view(self.hb.view(now), self.memory)
        arb = None
        if self.p.fallback == "arbiter" and world.net.gateway(self.index):
            arb = world.arbiter_view
        if self.requests and world.t - self.requests_at > REQUEST_TIMEOUT_S:
            self.requests.clear()  # the CLI gave up waiting for an answer
        request = self.requests[0] if self.requests else None
        obs = Observation(
            now,
            local,
            peer,
            self.vip,
            self.safety,
            self.lag_units(local) if self.state.role is NodeRole.REPLICA else None,
            self.checks_ok,
            True,
            arb,
            request,
            covers,
            world.t,
        )
        before = self.state
        d = decide(before, obs, self.p)
        if world.check_table:
            problem = check(before, d)
            if problem is not None:
                world.violation("table", f"{self.name}: {problem}")
        ok = self.execute(d)
        if ok:
            self.state = d.next_state
            if not self.state.same_persisted(self.disk):
                self.disk = self.state.persisted()
            if d.answer is not None and self.requests:
                self.requests.pop(0)
                world.operator_at = world.t
        role = self.state.role
        self.lease = d.lease_until if role in (NodeRole.PRIMARY, NodeRole.PROMOTING) else None
        self.memory = remember(self.state, obs)
        key = (id(self.state), id(local), id(peer.last))
        if key != self._ann_key:
            self._ann_key = key
            self.announce = announce(self.state, obs)
        if world.verbose and (d.actions or before.role is not role or not ok):
            acts = ", ".join(type(a).__name__ for a in d.actions)
            world.trace(
                f"{self.name} [{before.role.value}->{role.value} e{self.state.epoch}] "
                f"{d.rule}: {d.reason}" + (f" [{acts}]" if acts else "") + ("" if ok else " FAILED")
            )
        return d

    # -------------------------------------------------------------- execute

    def execute(self, d: Decision) -> bool:
        """Run the actions in order; False at the first failure that is not best-effort."""
        for a in d.actions:
            try:
                self.run(a)
            except (ActionFailed, DbError) as exc:
                if self.world.verbose:
                    self.world.trace(f"{self.name}   {type(a).__name__} failed: {exc}")
                if not a.best_effort:
                    return False
        return True

    def run(self, a: Action) -> None:
        world = self.world
        drv = self.driver
        if isinstance(a, PersistState):
            self.disk = a.state.persisted()
            if a.state.role is NodeRole.PROMOTING and self.state.role is not NodeRole.PROMOTING:
                world.on_promote(self)  # the failover begins: the new epoch is on disk
            self.state = a.state  # once persisted, it is the node's state
        elif isinstance(a, Fence):
            drv.fence(1.0, hard=a.hard)
        elif isinstance(a, Unfence):
            drv.unfence(1.0)
        elif isinstance(a, AcquireVip):
            if not self.vip:
                self.vip = True
                self.vip_since = world.step
        elif isinstance(a, ReleaseVip):
            self.vip = False
        elif isinstance(a, WaitReplayed):
            drv.wait_replayed(1.0)
        elif isinstance(a, Promote):
            drv.promote(1.0)
        elif isinstance(a, PrepareReplica):
            drv.prepare_replica(1.0)
        elif isinstance(a, SetSynchronous):
            if not self.server.up or self.server.hung:
                raise ActionFailed("database down")
            world.set_sync(self, a.on)
        elif isinstance(a, Rejoin):
            if not world.net.tcp_lan:
                raise ActionFailed("upstream unreachable")
            drv.rejoin(
                Upstream(a.upstream, "sim", 0), 1.0, force=a.force, unacknowledged=a.unacknowledged
            )
        elif isinstance(a, RunSafetyCheck):
            if self.safety_due is None:
                delay = world.rng.randint(1, world.safety_steps)
                self.safety_due = (world.step + delay, self.judge())
        elif isinstance(a, FencePeer):
            other = world.nodes[1 - self.index].server
            if world.net.tcp_any() and other.up and not other.hung:
                other.fenced = True
        elif isinstance(a, ArbiterPromote | ArbiterMark | ArbiterUnmark):
            world.arbiter_cas(self, a)
        elif isinstance(a, Notify | PrePromote):
            pass  # no hook in the simulation: a pre_promote check passes at once
        else:  # pragma: no cover - a new action kind needs a branch here
            raise ActionFailed(f"unknown action {a!r}")

    def judge(self) -> SafetyView:
        """The safety check's verdict as the real one would find it right now."""
        world = self.world
        net = world.net
        now = self.now()
        if self.safety_unknown:
            return SafetyView(Verdict.UNKNOWN, now)
        if not net.gateway(self.index):
            return SafetyView(Verdict.I_AM_ISOLATED, now)
        peer = world.nodes[1 - self.index]
        srv = peer.server
        if peer.alive and net.tcp_any() and srv.up and not srv.hung:
            return SafetyView(Verdict.PEER_ALIVE_HEARTBEAT_BROKEN, now)
        return SafetyView(Verdict.PEER_DEAD, now)

    # --------------------------------------------------------------- keeper

    def keep(self) -> bool:
        """The lease keeper, independent of the loop: True if it had to fence."""
        srv = self.server
        if not (self.vip or srv.writable):
            return False
        lease = self.lease
        if lease is not None and self.now() < lease:
            return False
        self.vip = False
        if srv.up and not srv.hung:
            srv.fenced = True
        # A hung database is left alone (killing it would leave nobody to start it
        # again): without the VIP no client reaches it, and the keeper fences it as
        # soon as it answers again, before the loop could unfence it.
        return True

    def accepting(self) -> bool:
        """Clients writing through the VIP get commits acknowledged by this node."""
        srv = self.server
        if not (self.alive and self.vip and srv.writable):
            return False
        if not srv.sync_names:
            return True
        for o in self.world.cluster.servers.values():
            if o is not srv and o.name in srv.sync_names and o.streaming and o.upstream == srv.name:
                return True
        return False


def position_of(srv: FakeServer) -> Position:
    return srv.position() if srv.role is Role.PRIMARY else srv.received()
