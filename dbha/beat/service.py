"""Heartbeats over N paths: the UDP service (threads).

The rules (when a path is up or down, when the peer is silent) are pure values
in :mod:`dbha.beat.paths`; the wire format and the replay guard are in
:mod:`dbha.beat.wire`. :class:`HeartbeatService` is the thin shell: one UDP
socket per path, one thread that sends each round and receives in between, a
lock.

A path is *down* when nothing admitted was heard on it for
``interval × misses``; it is *up* again only after ``rise`` consecutive beats
(flap damping). The peer is *silent* only when every path is down: one path
going quiet is a broken path, reported, and nothing more.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from dbha.beat.paths import DropCounters, PathEvent, PathSet, PathState
from dbha.beat.wire import (
    MAX_INT,
    Beat,
    BeatEncodeError,
    DbSummary,
    Drop,
    DropReason,
    ReplayGuard,
    encode_paths,
    new_boot_id,
    role_of,
    verify,
)
from dbha.core.model import NodeRole
from dbha.core.timing import round_due
from dbha.errors import DbhaError

log = logging.getLogger(__name__)


class HeartbeatError(DbhaError):
    """The heartbeat service could not start (a path socket could not be bound)."""


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


# Send times of our own rounds kept for matching the peer's echo (a few seconds'
# worth at any sane interval; an older echo means the peer hears nothing new).
SENT_TIMES_KEPT = 512
# The thread's longest wait for a datagram before it looks at the clock (seconds):
# it bounds stop()'s latency and how late a path_down event is queued.
RECV_IDLE_WAIT = 0.25
# The thread wakes this long after a path's silence deadline (a path is down only
# once the deadline has passed; epoll's timeout is whole milliseconds, rounded up).
DOWN_SLACK = 0.0005
# What snapshot(counters=False) carries instead of the tallies.
NO_COUNTERS = DropCounters.of((), {}, {}, {}, {})


@dataclass(frozen=True)
class LocalStatus:
    """What our beats say about us; replaced whole by ``update_status``."""

    epoch: int = 0
    role: NodeRole | None = None  # None: not known yet ("unknown" in the beats)
    db: DbSummary = field(default_factory=DbSummary)
    maintenance: bool = False
    needs_resync: bool = False
    sync_mark: int | None = None
    eligible: bool = False
    planned: bool = False  # handing over for a planned switchover
    behind: int | None = None  # a replica's own account of its lag

    def __post_init__(self) -> None:
        if not isinstance(self.epoch, int) or isinstance(self.epoch, bool):
            raise ValueError("epoch must be an integer")
        if not 0 <= self.epoch <= MAX_INT:
            raise ValueError("epoch out of range")
        if type(self.role) is not NodeRole and self.role is not None:
            object.__setattr__(self, "role", role_of(self.role))
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
    # When we sent the beat of ours that the peer's newest beat echoes (our
    # monotonic clock): the peer heard us at that time or later. None: no echo.
    echo_sent_at: float | None
    eligible_at: float | None  # when we admitted the newest beat announcing eligible
    counters: DropCounters
    events_lost: int  # transitions dropped because nobody drained them


class HeartbeatService:
    """Signed UDP heartbeats with the peer over every configured path.

    Contract:

    - The constructor validates its arguments (ValueError; BeatEncodeError when
      the names cannot fit a datagram) and opens nothing.
    - ``start()`` binds every path socket or raises HeartbeatError (nothing left
      open); then one thread sends a beat per path every interval and, between
      rounds, verifies what arrives. One thread rather than a sender and a
      receiver: an idle supervisor's cost is mostly its threads' wake-ups.
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
        settings: str = "",
    ) -> None:
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("heartbeat key must be at least 16 bytes")  # never echo the key
        if node == peer:
            raise ValueError("node and peer must differ")
        self._cfg = {p.name: p for p in paths}
        self._names = tuple(self._cfg)
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
        # The digest of the settings the pair shares (dbha.config.digest), in every beat.
        self.settings = settings
        self._guard = ReplayGuard(own_boot=self.boot_id)
        self._seq = 0
        self._last_beat: Beat | None = None
        self._last_beat_at: float | None = None
        self._eligible_at: float | None = None
        self._sent_times: dict[int, float] = {}
        self._events: deque[PathEvent] = deque(maxlen=1024)
        self._events_lost = 0
        self._drops: dict[tuple[str, DropReason], int] = {}
        self._accepted: dict[str, int] = {}
        self._sent: dict[str, int] = {}
        self._send_errors: dict[str, int] = {}
        self._send_failing: dict[str, bool] = {}
        self._trimming = False
        self._new_round = False  # the loop admitted a newer round of the peer's
        self._socks: dict[str, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        # Called, without the lock, when there is news: a path went up or down, or
        # the peer's beats say something new (see _gist); not for every beat.
        self.on_news: Callable[[], None] | None = None
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
        thread = threading.Thread(target=self._loop, name="dbha-heartbeat", daemon=True)
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
        role: NodeRole | str | None,
        reachable: bool,
        writable: bool,
        position: str,
        maintenance: bool,
        needs_resync: bool = False,
        sync_mark: int | None = None,
        eligible: bool = False,
    ) -> None:
        """Make the next beats carry this status. Never blocks on I/O; raises ValueError."""
        self.set_status(
            LocalStatus(
                epoch,
                role_of(role) if isinstance(role, str) and type(role) is not NodeRole else role,
                DbSummary(reachable, writable, position),
                maintenance,
                needs_resync,
                sync_mark,
                eligible,
            )
        )

    def set_status(self, status: LocalStatus) -> None:
        """Make the next beats carry ``status`` (see :func:`dbha.beat.announce.local_status`)."""
        with self._lock:
            self._status = status

    def snapshot(self, now: float | None = None, *, counters: bool = True) -> HeartbeatSnapshot:
        """An immutable view at ``now`` (default: the service's monotonic clock).

        Every transition the view reflects is already queued for ``drain_events``.
        ``counters=False`` leaves the tallies out (an empty DropCounters): copying
        them was the largest part of a supervisor tick, which never reads them.
        """
        with self._lock:
            real = self._clock()
            # Catch up with the clock here rather than wait for the receiver's next
            # tick, so a path shown down always has its path_down event queued.
            self._path_set, events = self._path_set.advance(real)
            self._record(events)
            at = real if now is None else now
            last = self._last_beat
            snap = HeartbeatSnapshot(
                at=at,
                boot_id=self.boot_id,
                paths=self._path_set.states(at),
                peer_silent=self._path_set.silent(at),
                last_beat=last,
                last_beat_at=self._last_beat_at,
                peer_hears_us=last is not None and last.echo_boot == self.boot_id,
                echo_sent_at=(
                    self._sent_times.get(last.echo_seq)
                    if last is not None and last.echo_boot == self.boot_id
                    else None
                ),
                eligible_at=self._eligible_at,
                counters=DropCounters.of(
                    self._cfg, self._drops, self._accepted, self._sent, self._send_errors
                )
                if counters
                else NO_COUNTERS,
                events_lost=self._events_lost,
            )
        if events:
            self._news()
        return snap

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
            st.needs_resync,
            st.sync_mark,
            st.eligible,
            st.planned,
            st.behind,
            self.settings,
        )

    def _encode(self, beat: Beat) -> list[bytes]:
        """The round's datagrams, one per path in the order of ``self._cfg``."""
        try:
            data = encode_paths(beat, self._key, self._names)
            trimmed = False
        except BeatEncodeError:
            # Liveness matters more than the position: send without it rather than not at all.
            short = replace(beat, db=replace(beat.db, position=""))
            data = encode_paths(short, self._key, self._names)
            trimmed = True
        if trimmed != self._trimming:
            self._trimming = trimmed
            if trimmed:
                log.warning("heartbeat: database position too long for a beat, sent empty")
            else:
                log.info("heartbeat: database position fits in beats again")
        return data

    def _loop(self) -> None:
        """Send a round every interval; between rounds wait for datagrams.

        A flood on a path cannot hold the rounds back: each wake-up drains at
        most 64 datagrams per path before the clock is looked at again."""
        poller = select.epoll()
        names = {sock.fileno(): name for name, sock in self._socks.items()}
        try:
            for fd in names:
                poller.register(fd, select.EPOLLIN)
            next_send = self._clock()
            while not self._stop.is_set():
                now = self._clock()
                if now >= next_send:
                    try:
                        self._send_round()
                    except Exception:  # a bug here must not silence us: log it, keep beating
                        log.exception("heartbeat: send round failed")
                    next_send += self.interval
                    now = self._clock()
                    if now - next_send > self.interval:
                        next_send = now  # we were suspended: skip the missed rounds, no burst
                wake = next_send
                down_at = self._path_set.next_down()  # swapped whole under the lock
                if down_at is not None and down_at + DOWN_SLACK < wake:
                    wake = down_at + DOWN_SLACK  # queue path_down on time, not a round late
                try:
                    for fd, _ in poller.poll(min(max(0.0, wake - now), RECV_IDLE_WAIT)):
                        self._drain(names[fd])
                    now = self._clock()
                    self._advance(now)
                    next_send = round_due(next_send, now, self.interval, self._new_round)
                    self._new_round = False
                except Exception:  # keep receiving whatever one datagram did
                    log.exception("heartbeat: receive failed")
                    self._stop.wait(min(self.interval, RECV_IDLE_WAIT))
        finally:
            poller.close()

    def _send_round(self) -> None:
        with self._lock:
            self._seq += 1
            seq, status, guard = self._seq, self._status, self._guard
            # Remember when each round left, so the peer's echo of it dates what the
            # peer has heard of us (the lease of dbha.core.decide rests on this).
            self._sent_times[seq] = self._clock()
            self._sent_times.pop(seq - SENT_TIMES_KEPT, None)
        echo = (guard.boot, guard.last_seq()) if guard.boot is not None else ("", 0)
        datagrams = self._encode(self._beat(self._names[0], seq, status, *echo))
        failures: dict[str, OSError | None] = {}
        for (name, cfg), data in zip(self._cfg.items(), datagrams, strict=True):
            try:
                self._socks[name].sendto(data, (cfg.peer_addr, cfg.port))
                failures[name] = None
            except OSError as exc:  # e.g. ENETUNREACH while the link is down
                failures[name] = exc
        changes = []
        with self._lock:
            for name, failed in failures.items():
                counter = self._send_errors if failed else self._sent
                counter[name] = counter.get(name, 0) + 1
                if self._send_failing.get(name, False) != (failed is not None):
                    changes.append((name, failed))
                self._send_failing[name] = failed is not None
        for name, failed in changes:
            if failed is not None:
                log.warning("heartbeat path %s: send failing: %s", name, failed.strerror or failed)
            else:
                log.info("heartbeat path %s: sending again", name)

    # -- receiving

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
        news = False
        with self._lock:
            self._guard = guard
            if isinstance(result, Drop):
                k = (path, result.reason)
                n = self._drops[k] = self._drops.get(k, 0) + 1
            else:
                self._accepted[path] = self._accepted.get(path, 0) + 1
                last = self._last_beat
                # Paths reorder against each other: only a newer round (or a new boot)
                # replaces what we know of the peer.
                if last is None or result.boot_id != last.boot_id or result.seq > last.seq:
                    self._last_beat, self._last_beat_at = result, now
                    self._new_round = True
                    if result.eligible:
                        self._eligible_at = now
                    news = last is None or self._gist(last) != self._gist(result)
                self._path_set, events = self._path_set.on_beat(path, now)
                self._record(events)
                news = news or bool(events)
        if news:
            self._news()
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
        if events:
            self._news()

    def _gist(self, beat: Beat) -> tuple[object, ...]:
        """What of a beat is news when it changes: everything but its sequence,
        send time, database position and the echo's number (whether the echo is of
        our own boot, i.e. whether the peer hears us, is news)."""
        return (
            beat.boot_id,
            beat.epoch,
            beat.role,
            beat.db.reachable,
            beat.db.writable,
            beat.maintenance,
            beat.needs_resync,
            beat.sync_mark,
            beat.eligible,
            beat.settings,
            beat.echo_boot == self.boot_id,
        )

    def _news(self) -> None:
        listener = self.on_news
        if listener is not None:
            try:
                listener()
            except Exception:  # a listener's bug must not stop the heartbeats
                log.exception("heartbeat: news listener failed")

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
