"""Plain data of the decision core: database status, node state, observations,
actions, decisions.

Everything here is an immutable value with no behaviour beyond small derived
properties: frozen dataclasses, and NamedTuples for the four values built on
every tick (:class:`Announce`, :class:`PeerView`, :class:`Observation`,
:class:`Decision`), which are five times cheaper to build, a difference the
simulation's millions of ticks feel. :func:`dbha.core.decide.decide` reads a :class:`NodeState`, an
:class:`Observation` and the config, and returns a :class:`Decision`; the
supervisor's shell gathers the observation and carries out the actions, and
the simulation (:mod:`dbha.sim`) does both with simulated parts.

Times are floats in seconds on the *local* monotonic clock of the node that
holds them (``Observation.now`` and every ``*_at`` field). Two nodes' clocks
are never compared with each other: a duration measured by one node is only
ever compared with a time stamped by the same node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import NamedTuple

# ---------------------------------------------- what a database probe reports


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    UNKNOWN = "unknown"  # unreachable, or an answer that does not say


@dataclass(frozen=True, slots=True, order=False)
class Position:
    """Where a server is in the replication stream, engine-neutral.

    PostgreSQL: ``timeline`` and ``lsn`` (an int, e.g. 0x3000060). MySQL/MariaDB:
    ``gtid`` (the normalized GTID set text, e.g. ``0-2-15`` or
    ``3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5``). Comparing positions is the
    driver's job (``DatabaseDriver.covers``), never ``<`` on this value.
    """

    engine: str
    timeline: int | None = None
    lsn: int | None = None
    gtid: str | None = None

    def __str__(self) -> str:
        if self.lsn is not None:
            return f"{self.lsn >> 32:X}/{self.lsn & 0xFFFFFFFF:X}@tl{self.timeline}"
        return self.gtid or ""


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A replica as its primary sees it."""

    name: str  # application_name / report_host / server id
    address: str | None = None
    state: str = ""  # e.g. "streaming", "catchup"
    sync: bool = False  # acknowledged synchronously (sync/semi-sync)
    sent: Position | None = None
    flushed: Position | None = None
    replayed: Position | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class DbStatus:
    """What one probe learned. ``reachable=False`` comes with ``error`` saying why."""

    reachable: bool
    role: Role = Role.UNKNOWN
    writable: bool = False
    version: str = ""
    flavour: str = ""  # "postgresql" | "mariadb" | "mysql"
    # Primary: the current write position. Replica: the replayed position.
    position: Position | None = None
    # Replica only.
    received: Position | None = None
    lag_bytes: int | None = None  # PostgreSQL
    lag_transactions: int | None = None  # MySQL/MariaDB
    lag_seconds: float | None = None
    streaming: bool = False
    upstream: str | None = None
    # Whether this replica acknowledges its primary's synchronous commits: PostgreSQL,
    # its WAL receiver names itself after this node (which the primary's
    # synchronous_standby_names lists); MySQL/MariaDB, the replica side of semi-sync
    # is on and the running receiver registered with it. None: not known.
    sync_ready: bool | None = None
    # Whether applying what was received is paused (PostgreSQL: pg_wal_replay_pause;
    # MySQL/MariaDB: the applier stopped without an error while the receiver runs).
    replay_paused: bool = False
    # Primary only.
    replicas: tuple[ReplicaInfo, ...] = field(default_factory=tuple)
    sync_replication: bool = False  # commits wait for the replica (sync / semi-sync on)
    # Sessions whose commit is waiting for the synchronous replica's acknowledgement
    # (PostgreSQL: wait_event SyncRep; MySQL/MariaDB: semi-sync wait sessions). A
    # count that stays above zero with no replica is a strict-mode primary that
    # waits for a replica which is gone. None: not known (not a primary, or no answer).
    sync_waiting: int | None = None
    # How long the commit that has waited longest for that acknowledgement has
    # waited (seconds; None: none waits, or not known). A standby that is connected
    # but does not answer shows here, not in ``sync_standbys``.
    sync_wait_longest: float | None = None
    error: str | None = None

    @classmethod
    def unreachable(cls, why: str) -> DbStatus:
        return cls(reachable=False, error=why)

    @property
    def sync_standbys(self) -> int:
        """Replicas that acknowledge this primary's commits synchronously now."""
        return sum(1 for r in self.replicas if r.sync)

    @property
    def commits_blocked(self) -> bool:
        """A primary whose commits wait for a synchronous replica while none is
        connected: every commit waits until one comes (or synchronous commit is
        turned off)."""
        return self.reachable and self.sync_replication and self.sync_standbys == 0


class NodeRole(StrEnum):
    """What a node is, for the pair.

    - ``replica``: follows the primary; may be promoted.
    - ``promoting``: has bumped and persisted a new epoch and is promoting its
      database; becomes ``primary`` once that and the VIP are done.
    - ``primary``: serves writes, but only while its lease holds (see
      :mod:`dbha.core.decide`).
    - ``handover``: a primary giving the role away (planned switchover, or its
      own database failed): fenced, VIP released, waiting for the peer to take
      over.
    - ``fenced``: a former primary that stopped serving (isolated, lease lost,
      restarted, or a newer epoch seen). It resumes only when its peer
      confirms it may; with ``needs_resync`` it never does until resynced.
    """

    REPLICA = "replica"
    PROMOTING = "promoting"
    PRIMARY = "primary"
    HANDOVER = "handover"
    FENCED = "fenced"


class Verdict(StrEnum):
    """The safety check's conclusion (:mod:`dbha.host.safety` reaches it)."""

    PEER_DEAD = "peer_dead"
    I_AM_ISOLATED = "i_am_isolated"
    PEER_ALIVE_HEARTBEAT_BROKEN = "peer_alive_heartbeat_broken"
    UNKNOWN = "unknown"


class RequestKind(StrEnum):
    """An operator's request, as the control socket hands it to the core."""

    SWITCHOVER = "switchover"  # run on the primary: give the role to the peer
    FAILOVER = "failover"  # run on the replica: take the role (``force`` skips data checks)
    RESYNC = "resync"  # rejoin the local node as a replica of the peer
    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_OFF = "maintenance_off"
    # run on a synchronous primary: stop waiting for the replica until it is back and
    # caught up (a replica-not-in-sync mark, as the fallback mode takes by itself)
    SYNC_RELAX = "sync_relax"


# ----------------------------------------------------------------- node state

# Fields of NodeState that are persisted; the others live only in memory and
# are reset when the supervisor starts.
PERSISTED = ("role", "epoch", "needs_resync", "maintenance", "last_failover", "sync_mark")


@dataclass(frozen=True, slots=True)
class NodeState:
    """The node's own state: persisted fields first, then in-memory bookkeeping.

    ``epoch`` grows by one with every promotion in the pair and is never
    lowered. ``sync_mark`` is set (to the epoch it was taken in) while a
    synchronous-mode primary acknowledges commits without its replica
    ("replica not in sync"); it is carried in every beat. ``last_failover`` is
    the wall-clock time of this node's last promotion, for status only.
    """

    role: NodeRole = NodeRole.REPLICA
    epoch: int = 0
    needs_resync: bool = False
    maintenance: bool = False
    last_failover: float | None = None
    sync_mark: int | None = None
    # ---- in memory only (reset at start)
    started: bool = False  # the start-up rule has run
    since: float | None = None  # when the current role was entered (local clock)
    fenced_at: float | None = None  # when we stopped serving; resuming needs news after it
    switching: bool = False  # the handover is a planned switchover
    db_fails: int = 0  # consecutive failed probes of the local database
    db_failed_at: float | None = None  # Observation.probe_at of the last one counted
    eligible_since: float | None = None  # replica: announcing itself eligible since then
    clear_pos: Position | None = None  # primary with a mark: covered by the replica -> clear
    back_since: float | None = None  # primary with a mark: the replica present again since
    safety_asked_at: float | None = None  # last RunSafetyCheck request
    prepare_asked_at: float | None = None  # last PrepareReplica request
    dead_since: float | None = None  # start of the current run of peer_dead verdicts

    def persisted(self) -> NodeState:
        """This state with the in-memory fields reset, as it would be loaded from disk."""
        return NodeState(
            self.role,
            self.epoch,
            self.needs_resync,
            self.maintenance,
            self.last_failover,
            self.sync_mark,
        )

    def same_persisted(self, other: NodeState) -> bool:
        return (
            self.role is other.role
            and self.epoch == other.epoch
            and self.needs_resync == other.needs_resync
            and self.maintenance == other.maintenance
            and self.last_failover == other.last_failover
            and self.sync_mark == other.sync_mark
        )


assert tuple(f.name for f in fields(NodeState))[: len(PERSISTED)] == PERSISTED


# ---------------------------------------------------------------- observation


class Announce(NamedTuple):
    """What a node says about itself in every beat (the beat minus its transport).

    ``eligible`` is the sender's own claim that it is a replica that could be
    promoted (replica role, database up as a replica, no resync needed, no
    newer epoch seen): a primary in synchronous mode counts its replica as
    present only while it hears this.
    """

    epoch: int
    role: NodeRole
    db_reachable: bool = False
    db_writable: bool = False
    position: Position | None = None
    maintenance: bool = False
    needs_resync: bool = False
    sync_mark: int | None = None
    eligible: bool = False
    # A node in the handover role says whether it hands over for an operator's
    # planned switchover (True) or because its database or checks failed (False).
    planned: bool = False
    # A replica's own account of how far it is behind: what it has not received of
    # the primary's announced position plus what it received and has not applied
    # (bytes for PostgreSQL, transactions for MySQL/MariaDB); None: unknown.
    behind: int | None = None


class PeerView(NamedTuple):
    """What the heartbeat layer knows about the peer at ``Observation.now``.

    - ``paths_up``: how many paths are up (0 = the peer is silent).
    - ``last``: the newest admitted beat's content (None: never heard).
    - ``heard_at``: when that beat was admitted (local clock).
    - ``echo_sent_at``: when *we* sent the newest beat of ours that the peer
      says it admitted (the echo in its newest beat); None if it echoes none.
    - ``eligible_at``: when we admitted the newest beat in which the peer
      announced itself eligible (None: never).
    """

    paths_up: int = 0
    last: Announce | None = None
    heard_at: float | None = None
    echo_sent_at: float | None = None
    eligible_at: float | None = None

    @property
    def silent(self) -> bool:
        return self.paths_up == 0


@dataclass(frozen=True, slots=True)
class SafetyView:
    """The newest safety-check result: its verdict, and when the check *started*."""

    verdict: Verdict
    at: float


@dataclass(frozen=True, slots=True)
class ArbiterView:
    """The arbiter's record as last read: the pair's epoch there and the sync mark."""

    epoch: int
    marked: bool


@dataclass(frozen=True, slots=True)
class Request:
    kind: RequestKind
    force: bool = False
    # Switchover only: run every check the request would, change nothing, and
    # answer what would happen.
    dry_run: bool = False


def _no_cover(candidate: Position, reference: Position) -> bool:
    return False


class Observation(NamedTuple):
    """Everything the core knows this tick.

    - ``local``: the probe of the local database.
    - ``lag_units``: how far the local replica was behind the peer's last
      announced position (bytes for PostgreSQL, transactions for
      MySQL/MariaDB), None when unknown.
    - ``peer_lag_units``: on a primary, how far the peer's last announced position
      is behind the local one (same units), None when unknown.
    - ``checks_ok``: every configured check script passes (after fall/rise).
    - ``keeper_ok``: the independent fence timer (lease keeper) is running, so
      the self-fence deadline would be enforced even if this loop hung.
    - ``covers``: the engine's position comparison (``DatabaseDriver.covers``).
    - ``wall``: wall-clock time, only recorded (``last_failover``), never decided on.
    - ``probe_at``: when ``local`` was taken (local clock). The database is probed
      at its own cadence, often rarer than ticks: a failed probe counts once,
      however many observations carry it. None: ``local`` is a new probe (every
      observation is one, as in the simulation and the unit tests).
    """

    now: float
    local: DbStatus
    peer: PeerView
    vip_held: bool = False
    safety: SafetyView | None = None
    lag_units: int | None = None
    checks_ok: bool = True
    keeper_ok: bool = True
    arbiter: ArbiterView | None = None
    request: Request | None = None
    covers: Callable[[Position, Position], bool] = _no_cover
    wall: float = 0.0
    probe_at: float | None = None
    peer_lag_units: int | None = None


# -------------------------------------------------------------------- actions


class Action:
    """Base of every action. Subclasses are frozen values; the executor runs them in
    order, each bounded in time, and stops at the first failure (unless the action
    says ``best_effort``)."""

    __slots__ = ()
    best_effort = False


@dataclass(frozen=True, slots=True)
class PrePromote(Action):
    """Before a promotion changes anything: ask the operator's ``pre_promote`` hook,
    if one is configured (none: it passes at once). A veto (non-zero exit, or no
    answer in its time) fails the decision as refused, so the node stays as it is.
    ``kind``: "failover" (automatic), "switchover" (the peer handed over) or
    "forced" (an operator's failover); ``epoch``: the one the node would promote
    at; ``reason``: why it promotes."""

    kind: str
    epoch: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PersistState(Action):
    """Write ``state`` to the state directory now; once it succeeded it is the
    node's state even if a later action fails."""

    state: NodeState


@dataclass(frozen=True, slots=True)
class Fence(Action):
    """Make the local database refuse writes (``hard``: stop it)."""

    hard: bool = False
    best_effort: bool = False


@dataclass(frozen=True, slots=True)
class Unfence(Action):
    pass


@dataclass(frozen=True, slots=True)
class AcquireVip(Action):
    """Add the VIP and announce it (gratuitous ARP)."""


@dataclass(frozen=True, slots=True)
class ReleaseVip(Action):
    pass


@dataclass(frozen=True, slots=True)
class WaitReplayed(Action):
    pass


@dataclass(frozen=True, slots=True)
class Promote(Action):
    pass


@dataclass(frozen=True, slots=True)
class Follow(Action):
    upstream: str  # the peer's node name


@dataclass(frozen=True, slots=True)
class Rejoin(Action):
    """Rejoin the local node as a replica of ``upstream`` (the peer's node name).
    ``unacknowledged``: the core knows that whatever this former primary holds and
    the upstream lacks was never acknowledged to a client (synchronous mode, and no
    replica-not-in-sync mark in its epoch); the driver may then set it aside without
    ``force``, once the server confirms it (dbha.db.base.DatabaseDriver.rejoin)."""

    upstream: str
    force: bool = False
    unacknowledged: bool = False


@dataclass(frozen=True, slots=True)
class PrepareReplica(Action):
    """Make the local replica acknowledge synchronous commits (a pair dbha did not
    build: its standby names itself otherwise, or its semi-sync replica side is off)."""


@dataclass(frozen=True, slots=True)
class RunSafetyCheck(Action):
    """Start the safety check; its result arrives in a later observation."""


@dataclass(frozen=True, slots=True)
class FencePeer(Action):
    """Before a unilateral promotion: soft-fence the peer's database if it answers
    (best effort) and run the configured fence command (which must succeed)."""


@dataclass(frozen=True, slots=True)
class SetSynchronous(Action):
    """Turn synchronous commit on the local (primary) database on or off."""

    on: bool


@dataclass(frozen=True, slots=True)
class ArbiterPromote(Action):
    """Compare-and-set in the arbiter: (epoch, unmarked) -> (epoch + 1, mark)."""

    epoch: int
    mark: bool


@dataclass(frozen=True, slots=True)
class ArbiterMark(Action):
    """Compare-and-set in the arbiter: (epoch, unmarked) -> (epoch, marked)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class ArbiterUnmark(Action):
    epoch: int


@dataclass(frozen=True, slots=True)
class Notify(Action):
    """Tell the hooks (``dbha.node.hooks.EVENTS`` names) and the log."""

    event: str
    detail: str = ""
    best_effort: bool = True


# Shared instances of the actions that carry nothing.
FENCE = Fence()
UNFENCE = Unfence()
ACQUIRE_VIP = AcquireVip()
RELEASE_VIP = ReleaseVip()
WAIT_REPLAYED = WaitReplayed()
PROMOTE = Promote()
RUN_SAFETY_CHECK = RunSafetyCheck()
FENCE_PEER = FencePeer()
PREPARE_REPLICA = PrepareReplica()
SYNC_ON = SetSynchronous(True)
SYNC_OFF = SetSynchronous(False)


class Decision(NamedTuple):
    """The outcome of one tick.

    ``next_state`` becomes the node's state once every action succeeded (the
    executor persists it when a persisted field changed). ``rule`` names the row
    of :data:`dbha.core.transitions.TABLE` this decision follows; ``reason`` is the one
    human line logged for it. ``lease_until`` is handed to the lease keeper: the
    local time until which this node may hold a writable database and the VIP
    (None: not at all). ``answer`` replies to the observation's operator request.
    ``wake_at``: the earliest time a condition this decision waits on can change
    (a replica waiting out its peer's deadline), so the loop can tick right then
    rather than at its next period; a hint, never needed for safety.
    """

    next_state: NodeState
    actions: tuple[Action, ...]
    rule: str
    reason: str
    lease_until: float | None = None
    answer: str | None = None
    wake_at: float | None = None
