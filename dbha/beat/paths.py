"""Heartbeat path tracking and counters: pure values, no sockets, no clock.

:class:`PathTracker` follows one path, :class:`PathSet` all paths to the peer,
:class:`DropCounters` the per-path tallies status shows. Time is a float
argument (seconds, monotonic) and nothing here reads a clock, so the
supervisor's core, the simulation and table tests drive it alike; the UDP
service in :mod:`dbha.beat.service` is the only caller that feeds it real time.

A path is *down* when nothing admitted was heard on it for
``interval × misses``; it is *up* again only after ``rise`` consecutive beats
(flap damping). The peer is *silent* only when every path is down: one path
going quiet is a broken path, reported, and nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from dbha.beat.wire import DropReason

__all__ = ["DropCounters", "EventKind", "PathEvent", "PathSet", "PathState", "PathTracker"]


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
        if not any(ev for _, ev in moved):
            return self, ()  # nothing went down: the same set (asked every tick and wake-up)
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

    def next_down(self) -> float | None:
        """When the first path now up goes down if nothing more is heard on it
        (None: no path is up): a wake-up time, so path_down is queued on time."""
        ends = [
            t.last_heard + t.timeout for t in self.trackers if t.up and t.last_heard is not None
        ]
        return min(ends) if ends else None

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
