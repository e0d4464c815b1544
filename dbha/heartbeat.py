"""Heartbeats over N paths: path up/down tracking (pure) and the UDP service (threads).

The pure part (:class:`PathTracker`, :class:`PathSet`, :class:`DropCounters`)
takes time as a float argument and reads no clock, so the supervisor's core and
the simulation can drive it. :class:`HeartbeatService` is the thin shell: one
UDP socket per path, a sender thread, a receiver thread, a lock.

A path is *down* when nothing admitted was heard on it for
``interval × misses``; it is *up* again only after ``rise`` consecutive beats
(flap damping). The peer is *silent* only when every path is down: one path
going quiet is a broken path, reported, and nothing more.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType

from dbha.beatwire import (
    MAX_INT,
    Beat,
    BeatEncodeError,
    DbSummary,
    Drop,
    DropReason,
    ReplayGuard,
    Role,
    encode,
    new_boot_id,
    verify,
)
from dbha.errors import DbhaError

log = logging.getLogger(__name__)


class HeartbeatError(DbhaError):
    """The heartbeat service could not start (a path socket could not be bound)."""


# ------------------------------------------------------------------ pure part


class EventKind(StrEnum):
    PATH_DOWN = "path_down"
    PATH_UP = "path_up"
    PEER_SILENT = "peer_silent"  # the last path went down
    PEER_HEARD = "peer_heard"  # the first path came up while the peer was silent


@dataclass(frozen=True)
class PathEvent:
    """A transition, stamped with when it happened (not when it was noticed)."""

    kind: EventKind
    at: float
    path: str | None = None  # None for the peer-level events


@dataclass(frozen=True)
class PathState:
    """What status shows for one path at one instant."""

    name: str
    up: bool
    last_heard: float | None  # None: never heard
    streak: int  # consecutive beats in the current run
    changes: int  # how many times the path went up or down
    since: float | None  # when it last changed (None: never changed)


@dataclass(frozen=True)
class PathTracker:
    """Up/down state of one path, as a value. Starts down (never heard).

    - down after ``interval_ms × misses`` without an admitted beat; the
      PATH_DOWN event is stamped ``last_heard + timeout``;
    - up again after ``rise`` consecutive beats, each arriving within
      ``2 × interval`` of the previous one (one interval plus up to one interval
      of jitter); a longer gap means beats were lost and restarts the count.
    """

    name: str
    interval_ms: int
    misses: int = 3
    rise: int = 3
    up: bool = False
    last_heard: float | None = None
    streak: int = 0
    changes: int = 0
    since: float | None = None

    def __post_init__(self) -> None:
        for what in ("interval_ms", "misses", "rise"):
            value = getattr(self, what)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{what} must be a positive integer, not {value!r}")

    @property
    def timeout(self) -> float:
        """Seconds of silence after which the path is down."""
        return self.interval_ms * self.misses / 1000.0

    @property
    def window(self) -> float:
        """Longest gap (seconds) between two beats that still continues a rise streak."""
        return 2 * self.interval_ms / 1000.0

    def advance(self, now: float) -> tuple[PathTracker, tuple[PathEvent, ...]]:
        """Let time pass until ``now``: the path goes down if it has been silent too long."""
        if self.up and self.last_heard is not None and now - self.last_heard > self.timeout:
            at = self.last_heard + self.timeout
            down = replace(self, up=False, streak=0, changes=self.changes + 1, since=at)
            return down, (PathEvent(EventKind.PATH_DOWN, at, self.name),)
        return self, ()

    def on_beat(self, now: float) -> tuple[PathTracker, tuple[PathEvent, ...]]:
        """Record an admitted beat heard at ``now``."""
        t, events = self.advance(now)
        if t.up:
            return replace(t, last_heard=now, streak=t.streak + 1), events
        gap_ok = t.last_heard is not None and now - t.last_heard <= t.window
        streak = t.streak + 1 if gap_ok else 1
        if streak < t.rise:
            return replace(t, last_heard=now, streak=streak), events
        risen = replace(t, up=True, last_heard=now, streak=streak, changes=t.changes + 1, since=now)
        return risen, (*events, PathEvent(EventKind.PATH_UP, now, t.name))

    def state(self, now: float) -> PathState:
        """The path as it stands at ``now`` (silence up to ``now`` taken into account)."""
        t = self.advance(now)[0]
        return PathState(t.name, t.up, t.last_heard, t.streak, t.changes, t.since)


@dataclass(frozen=True)
class PathSet:
    """All paths to the peer. The peer is silent only when every path is down."""

    trackers: tuple[PathTracker, ...]

    @classmethod
    def create(
        cls, names: Iterable[str], *, interval_ms: int, misses: int = 3, rise: int = 3
    ) -> PathSet:
        """One tracker per name, all down. Raises ValueError on no or duplicate names."""
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"path names must be non-empty and distinct: {names!r}")
        return cls(tuple(PathTracker(n, interval_ms, misses, rise) for n in names))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.trackers)

    @staticmethod
    def _up(trackers: Iterable[PathTracker]) -> set[str]:
        return {t.name for t in trackers if t.up}

    def _with(
        self, trackers: Sequence[PathTracker], events: Iterable[PathEvent]
    ) -> tuple[PathSet, tuple[PathEvent, ...]]:
        # Replay the path events in time order to find when the peer as a whole
        # fell silent or was heard again (both can happen within one call).
        up = self._up(self.trackers)
        out: list[PathEvent] = []
        for e in sorted(events, key=lambda e: e.at):
            was_heard = bool(up)
            if e.kind is EventKind.PATH_UP:
                up.add(e.path or "")
            else:
                up.discard(e.path or "")
            out.append(e)
            if was_heard and not up:
                out.append(PathEvent(EventKind.PEER_SILENT, e.at))
            elif up and not was_heard:
                out.append(PathEvent(EventKind.PEER_HEARD, e.at))
        return PathSet(tuple(trackers)), tuple(out)

    def advance(self, now: float) -> tuple[PathSet, tuple[PathEvent, ...]]:
        """Let time pass until ``now`` on every path; return the transitions, oldest first."""
        moved = [t.advance(now) for t in self.trackers]
        return self._with([t for t, _ in moved], [e for _, ev in moved for e in ev])

    def on_beat(self, path: str, now: float) -> tuple[PathSet, tuple[PathEvent, ...]]:
        """Record an admitted beat on ``path`` at ``now``. Raises KeyError on an unknown path."""
        if path not in self.names:
            raise KeyError(path)
        trackers: list[PathTracker] = []
        events: list[PathEvent] = []
        for t in self.trackers:
            t, ev = t.on_beat(now) if t.name == path else t.advance(now)
            trackers.append(t)
            events.extend(ev)
        return self._with(trackers, events)

    def states(self, now: float) -> tuple[PathState, ...]:
        return tuple(t.state(now) for t in self.trackers)

    def silent(self, now: float) -> bool:
        """True when every path is down at ``now`` (also before the peer was ever heard)."""
        return not any(s.up for s in self.states(now))


@dataclass(frozen=True)
class DropCounters:
    """Per-path counts for status. Every path lists every drop reason, zeros included."""

    drops: Mapping[str, Mapping[str, int]]
    accepted: Mapping[str, int]
    sent: Mapping[str, int]
    send_errors: Mapping[str, int]

    @classmethod
    def of(
        cls,
        paths: Iterable[str],
        drops: Mapping[tuple[str, DropReason], int],
        accepted: Mapping[str, int],
        sent: Mapping[str, int],
        send_errors: Mapping[str, int],
    ) -> DropCounters:
        """A frozen copy of the given tallies (missing entries count as 0)."""
        names = list(paths)
        by_path = {
            p: MappingProxyType({r.value: drops.get((p, r), 0) for r in DropReason}) for p in names
        }

        def frozen(m: Mapping[str, int]) -> Mapping[str, int]:
            return MappingProxyType({p: m.get(p, 0) for p in names})

        return cls(MappingProxyType(by_path), frozen(accepted), frozen(sent), frozen(send_errors))

    def total(self, reason: DropReason) -> int:
        return sum(d[reason.value] for d in self.drops.values())

    def as_dict(self) -> dict[str, dict[str, object]]:
        """Plain dicts for JSON: {path: {accepted, sent, send_errors, drops: {reason: n}}}."""
        return {
            p: {
                "accepted": self.accepted[p],
                "sent": self.sent[p],
                "send_errors": self.send_errors[p],
                "drops": dict(self.drops[p]),
            }
            for p in self.drops
        }


# ------------------------------------------------------------------ I/O shell


@dataclass(frozen=True)
class PathConfig:
    """One heartbeat path: we bind ``(local_addr, port)`` and send to ``(peer_addr, port)``."""

    name: str
    local_addr: str
    peer_addr: str
    port: int

    def __post_init__(self) -> None:
        if not self.name or not self.name.isprintable():
            raise ValueError(f"path name must be printable and non-empty: {self.name!r}")
        local, peer = ipaddress.ip_address(self.local_addr), ipaddress.ip_address(self.peer_addr)
        if local.version != peer.version:
            raise ValueError(f"path {self.name}: local and peer addresses differ in family")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"path {self.name}: port {self.port} out of range")

    @property
    def family(self) -> socket.AddressFamily:
        v6 = ipaddress.ip_address(self.local_addr).version == 6
        return socket.AF_INET6 if v6 else socket.AF_INET


@dataclass(frozen=True)
class LocalStatus:
    """What our beats say about us; replaced whole by ``update_status``."""

    epoch: int = 0
    role: Role = Role.UNKNOWN
    db: DbSummary = field(default_factory=DbSummary)
    maintenance: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.epoch, int) or isinstance(self.epoch, bool):
            raise ValueError("epoch must be an integer")
        if not 0 <= self.epoch <= MAX_INT:
            raise ValueError("epoch out of range")
        object.__setattr__(self, "role", Role(self.role))
        if not isinstance(self.maintenance, bool):
            raise ValueError("maintenance must be a bool")


@dataclass(frozen=True)
class HeartbeatSnapshot:
    """An immutable view of the heartbeat layer at ``at`` (monotonic seconds)."""

    at: float
    boot_id: str
    paths: tuple[PathState, ...]
    peer_silent: bool
    last_beat: Beat | None  # the newest admitted beat from the peer, on any path
    last_beat_at: float | None
    peer_hears_us: bool  # the newest peer beat echoes our boot id
    counters: DropCounters
    events_lost: int  # transitions dropped because nobody drained them


class HeartbeatService:
    """Signed UDP heartbeats with the peer over every configured path.

    Contract:

    - The constructor validates its arguments (ValueError; BeatEncodeError when
      the names cannot fit a datagram) and opens nothing.
    - ``start()`` binds every path socket or raises HeartbeatError (nothing left
      open); then a sender thread sends one beat per path every interval and a
      receiver thread verifies what arrives.
    - ``update_status()``, ``snapshot()`` and ``drain_events()`` are thread-safe
      and only ever wait for a short in-memory lock; beats go out at the
      interval whatever the database is doing, with the latest status given.
    - Send and receive errors (OSError) are counted and logged on change,
      never raised out of the threads.
    - ``stop()`` returns within ``timeout`` seconds; it is idempotent.

    SO_REUSEADDR is deliberately not set: UDP has no TIME_WAIT to skip, and on
    Linux it would let a second supervisor bind the same address and silently
    take every beat; we want that second bind to fail loudly instead.
    """

    def __init__(
        self,
        *,
        paths: Sequence[PathConfig],
        key: bytes,
        service: str,
        node: str,
        peer: str,
        interval_ms: int,
        misses: int = 3,
        rise: int = 3,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("heartbeat key must be at least 16 bytes")  # never echo the key
        if node == peer:
            raise ValueError("node and peer must differ")
        self._cfg = {p.name: p for p in paths}
        self._path_set = PathSet.create(
            [p.name for p in paths], interval_ms=interval_ms, misses=misses, rise=rise
        )
        self._key = key
        self.service, self.node, self.peer = service, node, peer
        self.interval = interval_ms / 1000.0
        self.boot_id = new_boot_id()
        self._clock, self._wall = clock, wall_clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._status = LocalStatus()
        self._guard = ReplayGuard(own_boot=self.boot_id)
        self._seq = 0
        self._last_beat: Beat | None = None
        self._last_beat_at: float | None = None
        self._events: deque[PathEvent] = deque(maxlen=1024)
        self._events_lost = 0
        self._drops: dict[tuple[str, DropReason], int] = {}
        self._accepted: dict[str, int] = {}
        self._sent: dict[str, int] = {}
        self._send_errors: dict[str, int] = {}
        self._send_failing: dict[str, bool] = {}
        self._trimming = False
        self._socks: dict[str, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        # Fail now, not in the sender thread: names and service must fit a datagram.
        self._encode(self._beat(paths[0].name, 1, LocalStatus(), "", 0))

    # -- public API

    def start(self) -> None:
        """Bind every path and start the threads. Raises HeartbeatError on a bind failure."""
        if self._threads:
            raise HeartbeatError("heartbeat service already started")
        try:
            for cfg in self._cfg.values():
                sock = socket.socket(cfg.family, socket.SOCK_DGRAM)
                self._socks[cfg.name] = sock
                sock.setblocking(False)
                sock.bind((cfg.local_addr, cfg.port))
        except OSError as exc:
            self._close_sockets()
            raise HeartbeatError(
                f"heartbeat path {cfg.name}: cannot bind {cfg.local_addr}:{cfg.port}: "
                f"{exc.strerror or exc}"
            ) from exc
        for target, name in ((self._send_loop, "send"), (self._recv_loop, "recv")):
            thread = threading.Thread(target=target, name=f"dbha-heartbeat-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info(
            "heartbeat: boot %s, %d path(s), every %g s",
            self.boot_id[:8],
            len(self._cfg),
            self.interval,
        )

    def update_status(
        self,
        *,
        epoch: int,
        role: Role | str,
        reachable: bool,
        writable: bool,
        position: str,
        maintenance: bool,
    ) -> None:
        """Make the next beats carry this status. Never blocks on I/O; raises ValueError."""
        status = LocalStatus(
            epoch, Role(role), DbSummary(reachable, writable, position), maintenance
        )
        with self._lock:
            self._status = status

    def snapshot(self, now: float | None = None) -> HeartbeatSnapshot:
        """An immutable view at ``now`` (default: the service's monotonic clock).

        Every transition the view reflects is already queued for ``drain_events``.
        """
        with self._lock:
            real = self._clock()
            # Catch up with the clock here rather than wait for the receiver's next
            # tick, so a path shown down always has its path_down event queued.
            self._path_set, events = self._path_set.advance(real)
            self._record(events)
            at = real if now is None else now
            last = self._last_beat
            return HeartbeatSnapshot(
                at=at,
                boot_id=self.boot_id,
                paths=self._path_set.states(at),
                peer_silent=self._path_set.silent(at),
                last_beat=last,
                last_beat_at=self._last_beat_at,
                peer_hears_us=last is not None and last.echo_boot == self.boot_id,
                counters=DropCounters.of(
                    self._cfg, self._drops, self._accepted, self._sent, self._send_errors
                ),
                events_lost=self._events_lost,
            )

    def drain_events(self) -> tuple[PathEvent, ...]:
        """Return and forget the transitions seen since the last call, oldest first."""
        with self._lock:
            events = tuple(self._events)
            self._events.clear()
            return events

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the threads and close the sockets; True if every thread ended in time."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        ended = not any(t.is_alive() for t in self._threads)
        if not ended:
            log.warning("heartbeat: threads did not stop within %g s", timeout)
        self._close_sockets()
        return ended

    def __enter__(self) -> HeartbeatService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sending

    def _beat(self, path: str, seq: int, st: LocalStatus, echo_boot: str, echo_seq: int) -> Beat:
        return Beat(
            self.service,
            self.node,
            path,
            self.boot_id,
            seq,
            st.epoch,
            st.role,
            st.db,
            st.maintenance,
            self._wall(),
            echo_boot,
            echo_seq,
        )

    def _encode(self, beat: Beat) -> bytes:
        try:
            data = encode(beat, self._key)
            trimmed = False
        except BeatEncodeError:
            # Liveness matters more than the position: send without it rather than not at all.
            data = encode(replace(beat, db=replace(beat.db, position="")), self._key)
            trimmed = True
        if trimmed != self._trimming:
            self._trimming = trimmed
            if trimmed:
                log.warning("heartbeat: database position too long for a beat, sent empty")
            else:
                log.info("heartbeat: database position fits in beats again")
        return data

    def _send_loop(self) -> None:
        next_at = self._clock()
        while not self._stop.is_set():
            try:
                self._send_round()
            except Exception:  # a bug here must not silence us: log it, keep beating
                log.exception("heartbeat: send round failed")
            next_at += self.interval
            now = self._clock()
            if now - next_at > self.interval:
                next_at = now  # we were suspended; skip the missed rounds rather than burst
            self._stop.wait(max(0.0, next_at - now))

    def _send_round(self) -> None:
        with self._lock:
            self._seq += 1
            seq, status, guard = self._seq, self._status, self._guard
        echo = (guard.boot, guard.last_seq()) if guard.boot is not None else ("", 0)
        for name, cfg in self._cfg.items():
            data = self._encode(self._beat(name, seq, status, *echo))
            try:
                self._socks[name].sendto(data, (cfg.peer_addr, cfg.port))
                failed: OSError | None = None
            except OSError as exc:  # e.g. ENETUNREACH while the link is down
                failed = exc
            with self._lock:
                counter = self._send_errors if failed else self._sent
                counter[name] = counter.get(name, 0) + 1
                changed = self._send_failing.get(name, False) != (failed is not None)
                self._send_failing[name] = failed is not None
            if changed and failed is not None:
                log.warning("heartbeat path %s: send failing: %s", name, failed.strerror or failed)
            elif changed:
                log.info("heartbeat path %s: sending again", name)

    # -- receiving

    def _recv_loop(self) -> None:
        # Bounds stop() latency and how late a path_down event is queued when no
        # datagram wakes us; snapshot() catches up with the clock on its own.
        tick = min(0.1, self.interval / 2)
        with selectors.DefaultSelector() as sel:
            for name, sock in self._socks.items():
                sel.register(sock, selectors.EVENT_READ, name)
            while not self._stop.is_set():
                try:
                    for key, _ in sel.select(tick):
                        self._drain(key.data)
                    self._advance(self._clock())
                except Exception:  # keep receiving whatever one datagram did
                    log.exception("heartbeat: receive failed")
                    self._stop.wait(tick)

    def _drain(self, path: str) -> None:
        sock = self._socks[path]
        for _ in range(64):  # bounded, so one flooded path cannot starve the others
            try:
                data = sock.recv(65536)  # whole datagram, so oversize is seen as such
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("heartbeat path %s: receive error: %s", path, exc)
                return
            self._on_datagram(path, data, self._clock())

    def _on_datagram(self, path: str, data: bytes, now: float) -> None:
        # Only this thread writes the guard, so verifying outside the lock is safe.
        guard, result = verify(
            data,
            key=self._key,
            service=self.service,
            me=self.node,
            peer=self.peer,
            path=path,
            guard=self._guard,
        )
        with self._lock:
            self._guard = guard
            if isinstance(result, Drop):
                k = (path, result.reason)
                n = self._drops[k] = self._drops.get(k, 0) + 1
            else:
                self._accepted[path] = self._accepted.get(path, 0) + 1
                self._last_beat, self._last_beat_at = result, now
                self._path_set, events = self._path_set.on_beat(path, now)
                self._record(events)
        if isinstance(result, Drop) and n & (n - 1) == 0:  # log drops 1, 2, 4, 8, ...
            log.warning(
                "heartbeat path %s: dropped datagram #%d for %s: %s",
                path,
                n,
                result.reason.value,
                result.detail,
            )

    def _advance(self, now: float) -> None:
        with self._lock:
            self._path_set, events = self._path_set.advance(now)
            self._record(events)

    def _record(self, events: Sequence[PathEvent]) -> None:
        # Called with the lock held.
        for event in events:
            if len(self._events) == self._events.maxlen:
                self._events_lost += 1
            self._events.append(event)

    def _close_sockets(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
