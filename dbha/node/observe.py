"""What a node saw, turned into the core's :class:`~dbha.core.model.Observation`.

The database observer probes the local server on a thread of its own; the
supervisor's loop (:mod:`dbha.node.daemon`) and a cron round
(:mod:`dbha.monitor.round`) gather what the parts saw and build the one
Observation with :func:`observation`, the lag judged against the peer's newest
known position (:func:`with_newest_position`)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from dbha.core.model import (
    Announce,
    DbStatus,
    Observation,
    PeerView,
    Position,
    Request,
    Role,
    SafetyView,
)
from dbha.db import gtid
from dbha.db.base import DatabaseDriver


def lag_units(local: DbStatus, peer: Announce | None) -> int | None:
    """How far the local replica's received data is behind the peer's announced
    position: bytes (PostgreSQL, same timeline) or transactions (MySQL/MariaDB).
    None when it cannot be known (no peer position, another timeline, ...)."""
    if peer is None or peer.position is None:
        return None
    return behind(local.received or local.position, peer.position)


def peer_lag_units(local: DbStatus, peer: Announce | None) -> int | None:
    """On a primary: how far the peer is behind, in the same units as
    :func:`lag_units`: its own account when it announces one (fresh on its side:
    comparing its announced position with ours now would count what we wrote since
    its last probe), else how far its announced replay position is behind ours."""
    if local.role is not Role.PRIMARY or peer is None:
        return None
    if peer.behind is not None:
        return peer.behind
    if local.position is None or peer.position is None:
        return None
    return behind(peer.position, local.position)


def behind(mine: Position | None, theirs: Position) -> int | None:
    """How far ``mine`` is behind ``theirs`` (None: not comparable)."""
    if mine is None or mine.engine != theirs.engine:
        return None
    if theirs.lsn is not None and mine.lsn is not None:
        if theirs.timeline != mine.timeline:
            return None
        return max(0, theirs.lsn - mine.lsn)
    if theirs.gtid is not None:
        engine = "mysql" if theirs.engine == "mysql" else "mariadb"
        return gtid.behind(engine, theirs.gtid, mine.gtid or "")
    return None


def with_newest_position(last: Announce | None, newest: Announce | None) -> Announce | None:
    """The peer's last beat ``last``, with the position of ``newest`` (the newest of
    its beats that had one) when ``last`` has none: a primary whose database died
    announces no position, and the lag must still be judged against what it had."""
    if last is None or last.position is not None or newest is None:
        return last
    return last._replace(position=newest.position)


def observation(
    now: float,
    local: DbStatus,
    peer: PeerView,
    *,
    newest: Announce | None,
    vip_held: bool,
    safety: SafetyView | None,
    checks_ok: bool,
    keeper_ok: bool,
    covers: Callable[[Position, Position], bool],
    wall: float,
    request: Request | None = None,
    probe_at: float | None = None,
) -> Observation:
    """The core's view of one moment: the local probe, the peer as heard (``newest``:
    its newest beat that announced a position), the VIP, the safety verdict, the
    check scripts and the keeper."""
    return Observation(
        now=now,
        local=local,
        peer=peer,
        vip_held=vip_held,
        safety=safety,
        lag_units=lag_units(local, with_newest_position(peer.last, newest)),
        peer_lag_units=peer_lag_units(local, peer.last),
        checks_ok=checks_ok,
        keeper_ok=keeper_ok,
        request=request,
        covers=covers,
        wall=wall,
        probe_at=probe_at,
    )


def _probe_gist(st: DbStatus) -> tuple[object, ...]:
    """What of a probe is news when it changes: all but positions and lag figures."""
    return (
        st.reachable,
        st.role,
        st.writable,
        st.streaming,
        st.upstream,
        st.sync_replication,
        bool(st.sync_waiting),
        tuple((r.name, r.state, r.sync) for r in st.replicas),
        st.error is None,
    )


class DbObserver:
    """Probes the local database on its own thread, one probe every ``every``
    seconds (``database.probe_interval_ms``: a cadence of its own, usually rarer
    than ticks); ``latest`` never blocks.

    Each answer is stamped with the time it arrived (``Observation.probe_at``), so
    the core counts a failed probe once however many ticks see it. When no answer
    has come for longer than a probe may take (``timeout`` plus three intervals),
    ``latest_probe`` says the database is unreachable itself, stamped anew each
    interval that passes without an answer: a probe that never returns still
    counts as one more failed probe per interval.
    """

    def __init__(
        self, driver: DatabaseDriver, every: float, timeout: float, retry_every: float | None = None
    ) -> None:
        self.driver, self.every, self.timeout = driver, every, timeout
        # After a failed probe the next comes this soon (the tick interval): a dead
        # database is noticed in PROBE_FALL quick probes, not PROBE_FALL intervals;
        # and a probe that does not answer is counted on this cadence too.
        self.retry_every = every if retry_every is None else min(every, retry_every)
        self._latest: tuple[DbStatus, float] | None = None
        # Called when a probe's answer differs from the last one in more than its
        # positions and lag figures (see _probe_gist).
        self.on_change: Callable[[], None] | None = None
        self.on_probe: Callable[[float], None] | None = None  # each probe's duration, s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dbha-db", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def probe_once(self) -> DbStatus:
        began = time.monotonic()
        st = self.driver.probe(self.timeout)
        if self.on_probe is not None:
            self.on_probe(time.monotonic() - began)
        with self._lock:
            before = self._latest
            self._latest = (st, time.monotonic())
        if self.on_change is not None and (
            before is None or _probe_gist(before[0]) != _probe_gist(st)
        ):
            self.on_change()
        return st

    def latest(self, now: float) -> DbStatus | None:
        """The newest probe, or an unreachable status if probes stopped answering."""
        got = self.latest_probe(now)
        return None if got is None else got[0]

    def latest_probe(self, now: float) -> tuple[DbStatus, float] | None:
        """``latest`` with the time the probe was taken (see the class)."""
        with self._lock:
            got = self._latest
        if got is None:
            return None
        at = got[1]
        late = now - at
        step = self.retry_every
        if late > self.stale_after:
            missed = at + step * math.floor(late / step)
            return DbStatus.unreachable(f"no probe answer for {late:.1f}s"), missed
        return got

    @property
    def stale_after(self) -> float:
        """How long after the last answer, with no newer one, ``latest_probe`` says
        unreachable: longer than a probe may take."""
        return self.timeout + 3 * self.retry_every

    def overdue_at(self) -> float | None:
        """When ``latest_probe`` starts saying unreachable if no answer comes first
        (None: no answer yet): a time the loop must tick at, as nothing else tells it."""
        with self._lock:
            got = self._latest
        return None if got is None else got[1] + self.stale_after

    def next_wait(self, st: DbStatus) -> float:
        """How long after a probe with status ``st`` the next one starts."""
        return self.every if st.reachable else self.retry_every

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            st = self.probe_once()
            self._stop.wait(max(0.0, self.next_wait(st) - (time.monotonic() - started)))
