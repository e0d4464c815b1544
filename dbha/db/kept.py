"""The probe's kept session: the protocol both engines' probe links share.

A new authenticated session per probe costs a login (most of a probe's CPU), so
each driver keeps one session for its probe. How a session is opened, bounded
and closed is the engine's (:class:`dbha.db.postgres.conn.ProbeLink`,
:class:`dbha.db.mysql.conn.ProbeLink`); what they share is here:

- one use at a time: the lock is taken within the use's budget, or DbTimeout;
- the session is held by the use and kept again only if the use went well and
  no ``close()`` came meanwhile; after any error none is kept;
- a reused session that turns out to be gone (DbUnreachable: a restarted
  server, or a fence that ended it) is replaced by one new session at once,
  within the same budget (when at least RECONNECT_MIN of it is left);
- ``close()`` is idempotent, never raises and never waits for a use in flight
  (that use ends the session when it is done).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from dbha.db.base import DbTimeout, DbUnreachable

# A use whose reused session is gone connects anew only with this much left (s).
RECONNECT_MIN = 0.1


class Budget(Protocol):
    def remaining(self) -> float: ...


S = TypeVar("S")
D = TypeVar("D", bound=Budget)
T = TypeVar("T")


class KeptSession(Generic[S, D]):
    """Keeps one session of type ``S`` for uses bounded by a budget ``D``.

    Subclasses give ``_open`` (a new session, or DbError), ``_use`` (run the
    observation on a session within the budget: its result and whether the
    session may be kept; on an error it closes the session and raises DbError),
    ``_discard`` (close a session, never raising) and optionally ``_detach``.
    """

    def __init__(self) -> None:
        self._session: S | None = None
        self._lock = threading.Lock()
        self._closes = 0  # close() calls so far: a use in flight keeps nothing after one

    def _run(self, deadline: D, what: str, observe: Callable[[S], T]) -> T:
        if not self._lock.acquire(timeout=max(0.0, deadline.remaining())):
            raise DbTimeout(f"{what}: another probe still holds the session")
        try:
            closes = self._closes
            s, self._session = self._session, None  # held by this use
            if s is not None:
                try:
                    return self._once(s, deadline, observe, closes)
                except DbUnreachable:
                    if deadline.remaining() < RECONNECT_MIN:
                        raise
            return self._once(self._open(deadline, what), deadline, observe, closes)
        finally:
            self._lock.release()

    def _once(self, s: S, deadline: D, observe: Callable[[S], T], closes: int) -> T:
        out, keep = self._use(s, deadline, observe)
        if keep and closes == self._closes:
            self._session = s
        else:
            self._discard(s)
        return out

    def close(self) -> None:
        """End the kept session, if any (a use in flight ends it when it is done).
        Idempotent; never raises; never waits for a use."""
        self._closes += 1
        if not self._lock.acquire(blocking=False):
            return
        try:
            s, self._session = self._session, None
            then = self._detach()
        finally:
            self._lock.release()
        if then is not None:
            then()
        if s is not None:
            self._discard(s)

    # -- the engine's parts

    def _open(self, deadline: D, what: str) -> S:
        raise NotImplementedError

    def _use(self, s: S, deadline: D, observe: Callable[[S], T]) -> tuple[T, bool]:
        raise NotImplementedError

    def _discard(self, s: S) -> None:
        raise NotImplementedError

    def _detach(self) -> Callable[[], None] | None:
        """Called by close() under the lock: take what the link holds besides its
        session; the callable returned (if any) releases it once the lock is free."""
        return None
