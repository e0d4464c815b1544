"""A fake database driver for the deterministic simulation and unit tests.

No I/O, no sleeps, no clock: a ``FakeServer`` is plain state that the
simulation drives (``write``, ``ship``, ``replay``, ``crash``, ``restart``,
``hang``), and ``FakeDriver`` implements ``DatabaseDriver`` on top of it with
the same contract as the real drivers (the shared contract suite in
``tests/lab/test_driver_contract.py`` runs against all of them).

The model, kept deliberately small:

- Every server holds a write-ahead log: a list of ``Entry`` (timeline, lsn,
  commit time, payload). A primary appends to it (``write``); a replica gets
  entries from its upstream (``ship``) and applies them (``replay``).
  Positions are ``Position(engine="fake", timeline=..., lsn=...)``; every entry
  advances the LSN by one.
- A clean stop of a primary (``stop``, a hard fence) appends a checkpoint entry
  and first ships everything to its streaming replicas, as a real primary does
  on a clean shutdown. A crash appends nothing.
- A promotion applies everything received, then starts a new timeline (one past
  the highest timeline known in the cluster).
- ``hung`` models a frozen (SIGSTOPped) server: verbs raise ``DbTimeout`` and
  ``probe`` reports it unreachable; ``up=False`` models a stopped or crashed
  one: verbs raise ``DbUnreachable``.
- Time is ``FakeCluster.now``, set by the simulation; it stamps each write and
  gives the replica lag in seconds (the age of the oldest entry received but
  not applied yet).
- Synchronous-commit acknowledgement is modelled by the caller (e.g. a write
  counts as acknowledged once ``ship`` brought it to the synchronous replica).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbha.core.model import DbStatus, Position, ReplicaInfo, Role
from dbha.db.base import DbRefused, DbTimeout, DbUnreachable, PromoteResult, RejoinReport, Upstream

ENGINE = "fake"


@dataclass(frozen=True, slots=True)
class Entry:
    """One WAL record: a committed write (``payload`` set) or a checkpoint (None)."""

    timeline: int
    lsn: int
    at: float
    payload: str | None = None


class FakeCluster:
    """The servers of one simulated pair, by name, and the simulated clock.

    ``rejoin_needs_force``: when True, a rejoin that has to set aside committed
    writes is refused without ``force`` (the MySQL/MariaDB rule for errant
    transactions); when False it sets them aside and proceeds (PostgreSQL).
    """

    def __init__(self, rejoin_needs_force: bool = False) -> None:
        self.servers: dict[str, FakeServer] = {}
        self.now: float = 0.0
        self.rejoin_needs_force = rejoin_needs_force

    def add(self, name: str, upstream: str | None = None) -> FakeServer:
        """A new server: a primary, or (with ``upstream``) a replica holding a copy of
        the upstream's log up to now, as a fresh base backup would."""
        if name in self.servers:
            raise ValueError(f"server {name!r} exists")
        srv = FakeServer(self, name)
        if upstream is not None:
            src = self.servers[upstream]
            srv.role = Role.REPLICA
            srv.upstream = upstream
            srv.wal = list(src.wal)
            srv.applied = len(srv.wal)
            srv.timeline = src.timeline
            srv.streaming = True
        self.servers[name] = srv
        return srv

    def max_timeline(self) -> int:
        return max((s.timeline for s in self.servers.values()), default=1)


@dataclass(eq=False)
class FakeServer:
    """One simulated database server. Attributes are public for the simulation to
    read; change them through the methods so the model stays consistent."""

    cluster: FakeCluster
    name: str
    role: Role = Role.PRIMARY
    up: bool = True
    hung: bool = False
    fenced: bool = False  # persisted like ALTER SYSTEM: survives restarts
    timeline: int = 1
    wal: list[Entry] = field(default_factory=list)
    applied: int = 0  # number of wal entries applied (== len(wal) on a primary)
    upstream: str | None = None
    streaming: bool = False  # a replica's connection to its upstream is up
    replay_paused: bool = False
    acks: bool = True  # a replica acknowledges synchronous commits (prepare_replica)
    sync_names: frozenset[str] = frozenset()  # replicas whose acks commits wait for
    aside: list[tuple[Entry, ...]] = field(default_factory=list)  # what rejoins set aside
    version: str = "fake-1"

    # -- reading ------------------------------------------------------------

    @property
    def writable(self) -> bool:
        """Accepts application writes right now."""
        return self.up and not self.hung and self.role is Role.PRIMARY and not self.fenced

    def lsn(self) -> int:
        """The LSN of the last log entry (0 for an empty log)."""
        return self.wal[-1].lsn if self.wal else 0

    def position(self) -> Position:
        """A primary's write position, a replica's replayed position."""
        if self.role is Role.PRIMARY:
            return Position(engine=ENGINE, timeline=self.timeline, lsn=self.lsn())
        return self.replayed()

    def received(self) -> Position:
        return Position(engine=ENGINE, timeline=self._tl_at(len(self.wal)), lsn=self.lsn())

    def replayed(self) -> Position:
        lsn = self.wal[self.applied - 1].lsn if self.applied else 0
        return Position(engine=ENGINE, timeline=self._tl_at(self.applied), lsn=lsn)

    def rows(self) -> list[str]:
        """Payloads of the applied writes: what a client reading this server sees."""
        return [e.payload for e in self.wal[: self.applied] if e.payload is not None]

    def _tl_at(self, count: int) -> int:
        return self.wal[count - 1].timeline if count else self.timeline

    # -- driving (the simulation's side) ------------------------------------

    def write(self, payload: str | None = None) -> Position | None:
        """A client commits one write. Returns its position, or None when this server
        does not accept writes (down, hung, replica or fenced)."""
        if not self.writable:
            return None
        entry = Entry(self.timeline, self.lsn() + 1, self.cluster.now, payload)
        self.wal.append(entry)
        self.applied = len(self.wal)
        return Position(engine=ENGINE, timeline=entry.timeline, lsn=entry.lsn)

    def ship(self, to: FakeServer, upto: int | None = None) -> int:
        """Stream log entries (up to LSN ``upto``, default all) to replica ``to``.

        Works only when ``to`` follows this server, both are up and not hung, and
        ``to``'s log is a prefix of this one (otherwise replication is broken, as
        a replica ahead of or diverged from its upstream cannot stream). Sets
        ``to.streaming`` accordingly. Returns how many entries were shipped."""
        ok = (
            to.role is Role.REPLICA
            and to.upstream == self.name
            and self.up
            and to.up
            and not self.hung
            and not to.hung
            and _is_prefix(to.wal, self.wal)
        )
        to.streaming = ok
        if not ok:
            return 0
        new = [e for e in self.wal[len(to.wal) :] if upto is None or e.lsn <= upto]
        to.wal.extend(new)
        if new:
            to.timeline = max(to.timeline, new[-1].timeline)
        return len(new)

    def replay(self, upto: int | None = None) -> int:
        """Apply received entries (up to LSN ``upto``) unless replay is paused or the
        server is down or hung. Returns how many were applied."""
        if not self.up or self.hung or self.replay_paused:
            return 0
        n = 0
        while self.applied < len(self.wal) and (upto is None or self.wal[self.applied].lsn <= upto):
            self.applied += 1
            n += 1
        return n

    def disconnect(self) -> None:
        """The replication connection to the upstream dropped (a network fault)."""
        self.streaming = False

    def crash(self) -> None:
        """The server dies without a shutdown record (kill -9, host death)."""
        self.up = False
        self.hung = False
        self.streaming = False

    def stop(self) -> None:
        """Clean shutdown. A primary first ships everything to its streaming replicas
        and writes a checkpoint entry that they receive too (real servers do this on
        a clean stop). Stopping a stopped server does nothing."""
        if not self.up:
            return
        if self.role is Role.PRIMARY:
            entry = Entry(self.timeline, self.lsn() + 1, self.cluster.now)
            self.wal.append(entry)
            self.applied = len(self.wal)
            for other in self.cluster.servers.values():
                if other is not self and other.upstream == self.name and other.streaming:
                    self.ship(other)
        self.up = False
        self.hung = False
        self.streaming = False

    def restart(self) -> None:
        """Start a stopped or crashed server (a running one is left alone). A replica
        applies what it had received; it streams again once its upstream ships."""
        if self.up:
            return
        self.up = True
        self.hung = False
        if self.role is Role.REPLICA:
            self.replay()

    def hang(self, hung: bool = True) -> None:
        """Freeze (SIGSTOP) or thaw (SIGCONT) the server."""
        if self.up:
            self.hung = hung


def _is_prefix(short: list[Entry], long: list[Entry]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


def _common_prefix(a: list[Entry], b: list[Entry]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class FakeDriver:
    """``DatabaseDriver`` over a ``FakeServer``. Timeouts are accepted and ignored:
    nothing here waits; a hung server raises ``DbTimeout`` at once."""

    engine = ENGINE

    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def _reachable(self) -> FakeServer:
        s = self.server
        if s.hung:
            raise DbTimeout(f"{s.name}: no answer within the timeout")
        if not s.up:
            raise DbUnreachable(f"{s.name}: connection refused (server down)")
        return s

    def probe(self, timeout: float) -> DbStatus:
        s = self.server
        if s.hung:
            return DbStatus.unreachable(f"{s.name}: timeout: no answer within {timeout:g} s")
        if not s.up:
            return DbStatus.unreachable(f"{s.name}: connection refused (server down)")
        if s.role is Role.PRIMARY:
            reps = tuple(
                ReplicaInfo(
                    name=o.name,
                    state="streaming",
                    sync=o.name in s.sync_names and o.acks,
                    sent=o.received(),
                    flushed=o.received(),
                    replayed=o.replayed(),
                    lag_bytes=s.lsn() - (o.replayed().lsn or 0),
                )
                for o in s.cluster.servers.values()
                if o is not s and o.upstream == s.name and o.up and o.streaming
            )
            return DbStatus(
                reachable=True,
                role=Role.PRIMARY,
                writable=s.writable,
                version=s.version,
                flavour=ENGINE,
                position=s.position(),
                replicas=reps,
                sync_replication=bool(s.sync_names),
                sync_waiting=0,  # commits never block here: the simulation models acks
            )
        pending = s.wal[s.applied :]
        return DbStatus(
            reachable=True,
            role=Role.REPLICA,
            writable=False,
            version=s.version,
            flavour=ENGINE,
            position=s.replayed(),
            received=s.received(),
            lag_bytes=s.lsn() - (s.replayed().lsn or 0),
            lag_seconds=max(0.0, s.cluster.now - pending[0].at) if pending else 0.0,
            streaming=s.streaming,
            upstream=s.upstream,
            sync_ready=s.acks,
            replay_paused=s.replay_paused,
        )

    def fence(self, timeout: float, hard: bool = False) -> None:
        s = self.server
        if hard and not s.up:
            return  # a stopped server accepts no writes
        s = self._reachable()
        s.fenced = True
        if hard:
            s.stop()

    def unfence(self, timeout: float) -> None:
        self._reachable().fenced = False

    def wait_replayed(self, timeout: float) -> Position:
        s = self._reachable()
        if s.role is Role.PRIMARY:
            return s.position()
        s.replay_paused = False  # resumed: the step before a promotion applies everything
        s.replay()
        return s.replayed()

    def promote(self, timeout: float) -> PromoteResult:
        s = self._reachable()
        if s.role is Role.PRIMARY:
            return PromoteResult(already_primary=True, position=s.position())
        s.replay_paused = False  # a promotion ends a paused recovery
        s.replay()
        s.role = Role.PRIMARY
        s.timeline = s.cluster.max_timeline() + 1
        s.upstream = None
        s.streaming = False
        s.fenced = False
        return PromoteResult(already_primary=False, position=s.position())

    def follow(self, upstream: Upstream, timeout: float) -> None:
        s = self.server
        if s.hung:
            raise DbTimeout(f"{s.name}: no answer within the timeout")
        if s.up and s.role is Role.REPLICA and s.upstream == upstream.name and s.streaming:
            return
        src = s.cluster.servers.get(upstream.name)
        if s.role is Role.PRIMARY:
            s.stop()  # becoming a standby needs a restart
            if src is not None:
                keep = _common_prefix(s.wal, src.wal)
                extra = tuple(s.wal[keep:])
                if any(e.payload for e in extra):
                    raise DbRefused(
                        f"{s.name}: committed writes past the fork from {upstream.name}; "
                        "left stopped: rejoin it"
                    )
                if extra:  # only a checkpoint past the fork: rewound, kept aside
                    s.aside.append(extra)
                    del s.wal[keep:]
                    s.applied = min(s.applied, keep)
        s.role = Role.REPLICA
        s.upstream = upstream.name
        s.restart()
        if src is not None:
            src.ship(s)
        if not s.streaming:
            raise DbTimeout(
                f"{s.name}: configured to follow {upstream.name} but not streaming "
                "(upstream unreachable, or this server diverged: rejoin it)"
            )
        s.replay()

    def rejoin(
        self,
        upstream: Upstream,
        timeout: float,
        force: bool = False,
        unacknowledged: bool = False,
    ) -> RejoinReport:
        s = self.server
        if s.hung:
            raise DbTimeout(f"{s.name}: no answer within the timeout")
        src = s.cluster.servers.get(upstream.name)
        if src is None or not src.up or src.hung:
            raise DbUnreachable(f"{s.name}: upstream {upstream.name} unreachable")
        errant = sum(1 for e in s.wal[_common_prefix(s.wal, src.wal) :] if e.payload)
        if s.cluster.rejoin_needs_force and errant and not (force or unacknowledged):
            raise DbRefused(
                f"{s.name}: {errant} writes that {upstream.name} lacks; "
                "rejoin with force to set them aside"
            )
        s.stop()
        keep = _common_prefix(s.wal, src.wal)
        extra = tuple(s.wal[keep:])
        set_aside: tuple[str, ...] = ()
        if extra:
            s.aside.append(extra)
            set_aside = (f"fake:{s.name}/aside-{len(s.aside)}",)
        del s.wal[keep:]
        s.applied = min(s.applied, keep)
        s.role = Role.REPLICA
        s.upstream = upstream.name
        s.fenced = False
        s.restart()
        src.ship(s)
        s.replay()
        return RejoinReport(
            method="reclone" if extra else "follow",
            set_aside=set_aside,
            notes=(f"{len(extra)} log entries set aside",) if extra else (),
        )

    def prepare_replica(self, timeout: float) -> None:
        """The replica acknowledges synchronous commits from now on. Refused on a
        primary; idempotent."""
        s = self._reachable()
        if s.role is not Role.REPLICA:
            raise DbRefused(f"{s.name}: not a replica")
        s.acks = True

    def set_synchronous(self, on: bool, timeout: float) -> None:
        """On: commits wait for every other server of the cluster (the peer); off:
        for none. Refused on a replica when ``on``; idempotent."""
        s = self._reachable()
        if on and s.role is not Role.PRIMARY:
            raise DbRefused(f"{s.name}: a replica: commits happen on the primary")
        s.sync_names = frozenset(n for n in s.cluster.servers if n != s.name) if on else frozenset()

    def covers(self, candidate: Position, reference: Position) -> bool:
        return covers(candidate, reference)

    def close(self) -> None:
        """Nothing to end: the fake keeps no session."""


def covers(candidate: Position, reference: Position) -> bool:
    """Same timeline and at least as far; anything else is not provably covered."""
    if candidate.engine != ENGINE or reference.engine != ENGINE:
        return False
    if candidate.lsn is None or reference.lsn is None:
        return False
    return candidate.timeline == reference.timeline and candidate.lsn >= reference.lsn
