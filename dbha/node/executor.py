"""Carry out a decision's actions, in order, each bounded in time.

The executor stops at the first action that fails (unless the action is
``best_effort``), and says so: the supervisor then keeps its previous state,
except what a ``PersistState`` that already succeeded made permanent. An
action that is idempotent is retried (tenacity) within its time budget;
one that is not (a rejoin) runs once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from dbha.config import Config
from dbha.core.model import (
    AcquireVip,
    Action,
    ArbiterMark,
    ArbiterPromote,
    ArbiterUnmark,
    Fence,
    FencePeer,
    Follow,
    NodeState,
    Notify,
    PersistState,
    PrepareReplica,
    PrePromote,
    Promote,
    Rejoin,
    ReleaseVip,
    RunSafetyCheck,
    SetSynchronous,
    Unfence,
    WaitReplayed,
)
from dbha.db.base import DatabaseDriver, Upstream
from dbha.errors import DbhaError, Refused

log = logging.getLogger("dbha.executor")


class VipControl(Protocol):
    def probe_ahead(self) -> Any: ...
    def acquire(self, ahead: Any = None) -> object: ...
    def release(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long each kind of action may take, in seconds."""

    fence: float
    db: float  # unfence, promote, follow, synchronous on/off
    wait_replayed: float
    rejoin: float
    vip: float
    fence_peer: float
    pre_promote: float = 3.0

    @classmethod
    def of(cls, cfg: Config) -> Timeouts:
        deadline = cfg.fence.self_fence_deadline_ms / 1000
        statement = cfg.database.statement_timeout_ms / 1000
        return cls(
            # A primary must be fenced within its deadline; leave room for the VIP.
            fence=max(0.5, 0.6 * deadline),
            db=max(5.0, 3 * statement),
            wait_replayed=max(5.0, float(cfg.replication.max_lag_seconds)),
            rejoin=600.0,
            vip=5.0,
            fence_peer=cfg.fence.command_timeout_ms / 1000 + 2 * statement,
            # The hook bounds itself (hooks.pre_promote_timeout_ms); this is its margin.
            pre_promote=cfg.hooks.pre_promote_timeout_ms / 1000 + 1.0,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    done: int  # how many actions succeeded
    failed: Action | None = None
    error: str = ""
    persisted: NodeState | None = None  # the last state a PersistState wrote
    # The failed action was refused as unsafe or vetoed (dbha.errors.Refused: a
    # database verb's DbRefused, a pre_promote hook's veto): nothing was changed.
    refused: bool = False


@dataclass
class Parts:
    """What the executor acts on. Everything is a narrow callable or a driver, so the
    simulation and unit tests can hand in fakes and the supervisor the real thing."""

    driver: DatabaseDriver
    vip: VipControl
    upstream: Upstream
    save_state: Callable[[NodeState], None]
    notify: Callable[[str, str], None]
    start_safety_check: Callable[[], None]
    fence_peer: Callable[[float], None]
    set_synchronous: Callable[[bool, float], None]
    # Ask the pre_promote hook (raises dbha.errors.Refused on a veto); none: passes.
    pre_promote: Callable[[PrePromote, float], None] = lambda _action, _timeout: None


_RETRIED = (Fence, Unfence, AcquireVip, ReleaseVip, Promote, Follow, SetSynchronous, PersistState)


class Executor:
    def __init__(self, parts: Parts, timeouts: Timeouts) -> None:
        self.parts = parts
        self.t = timeouts
        self._ahead: Any = None
        # The last refusal logged: the same one again (a vetoed promotion is decided
        # at every tick) is logged at debug level, until that action succeeds.
        self._refusal: tuple[str, str] | None = None

    def run(self, actions: tuple[Action, ...], deadline: float | None = None) -> Outcome:
        """Run ``actions`` in order until one fails. With ``deadline`` (monotonic), no
        action runs or retries past it: a serving primary's loop must come back to
        renew its lease before the lease keeper fences it; what failed is tried again
        at the next tick."""
        persisted: NodeState | None = None
        # The VIP's ARP probe listens for a while: start it now, so that it overlaps
        # the actions before AcquireVip (a promotion) rather than following them;
        # in a promotion, once the pre_promote hook has passed (a vetoed promotion,
        # decided again at every tick, must not send ARP probes at every tick).
        gated = any(isinstance(a, PrePromote) for a in actions)
        self._ahead = None if gated else self._probe_ahead(actions)
        for i, action in enumerate(actions):
            started = time.monotonic()
            try:
                self._run_one(action, None if deadline is None else deadline - started)
            except DbhaError as exc:
                if action.best_effort:
                    log.warning("%s failed (best effort, going on): %s", _name(action), exc)
                    continue
                refused = isinstance(exc, Refused)
                self._failed(action, exc, refused)
                return Outcome(False, i, action, str(exc), persisted, refused=refused)
            if self._refusal is not None and self._refusal[0] == _name(action):
                self._refusal = None
            if isinstance(action, PrePromote):
                self._ahead = self._probe_ahead(actions[i + 1 :])
            if isinstance(action, PersistState):
                persisted = action.state
            if isinstance(action, RunSafetyCheck):  # asked for every few ticks while quiet
                log.debug("%s done in %.3fs", _name(action), time.monotonic() - started)
            elif not isinstance(action, Notify):
                log.info("%s done in %.3fs", _name(action), time.monotonic() - started)
        return Outcome(True, len(actions), persisted=persisted)

    def _failed(self, action: Action, exc: DbhaError, refused: bool) -> None:
        if not refused:
            log.error("%s failed: %s", _name(action), exc)
            return
        seen = (_name(action), str(exc))
        if seen == self._refusal:
            log.debug("%s refused again: %s", _name(action), exc)
            return
        self._refusal = seen
        # A veto is also an alert (dbha.node.alerts: an event and dbha status).
        log.warning("%s refused: %s", _name(action), exc)

    def _probe_ahead(self, actions: tuple[Action, ...]) -> Any:
        if not any(isinstance(a, AcquireVip) for a in actions):
            return None
        try:
            return self.parts.vip.probe_ahead()
        except DbhaError as exc:  # AcquireVip probes again itself, and says why it fails
            log.debug("ARP probe ahead not started: %s", exc)
            return None

    def _budget(self, action: Action) -> float:
        t = self.t
        match action:
            case Fence():
                return t.fence
            case AcquireVip() | ReleaseVip():
                return t.vip
            case WaitReplayed():
                return t.wait_replayed
            case Rejoin():
                return t.rejoin
            case FencePeer():
                return t.fence_peer
            case PrePromote():
                return t.pre_promote
            case _:
                return t.db

    def _run_one(self, action: Action, left: float | None = None) -> None:
        budget = self._budget(action)
        if left is not None:
            if left <= 0:
                raise DbhaError(f"{_name(action)}: no time left before the lease must be renewed")
            budget = min(budget, left)
        if not isinstance(action, _RETRIED):
            self._act(action, budget)
            return
        end = time.monotonic() + budget
        for attempt in Retrying(
            stop=stop_after_delay(budget),
            wait=wait_fixed(0.1),
            retry=retry_if_exception_type(DbhaError),
            reraise=True,
        ):
            with attempt:
                self._act(action, max(0.2, end - time.monotonic()))

    def _act(self, action: Action, timeout: float) -> None:
        p = self.parts
        match action:
            case PersistState(state=state):
                p.save_state(state)
            case Fence(hard=hard):
                p.driver.fence(timeout, hard=hard)
            case Unfence():
                p.driver.unfence(timeout)
            case AcquireVip():
                ahead, self._ahead = self._ahead, None  # a retry probes afresh
                p.vip.acquire(ahead)
            case ReleaseVip():
                p.vip.release()
            case WaitReplayed():
                p.driver.wait_replayed(timeout)
            case Promote():
                p.driver.promote(timeout)
            case PrepareReplica():
                p.driver.prepare_replica(timeout)
            case Follow():
                p.driver.follow(p.upstream, timeout)
            case Rejoin(force=force, unacknowledged=unacked):
                report = p.driver.rejoin(p.upstream, timeout, force=force, unacknowledged=unacked)
                aside = ", ".join(report.set_aside) or "nothing"
                p.notify("rejoined", f"by {report.method}; set aside: {aside}")
            case RunSafetyCheck():
                p.start_safety_check()
            case FencePeer():
                p.fence_peer(timeout)
            case SetSynchronous(on=on):
                p.set_synchronous(on, timeout)
            case PrePromote():
                p.pre_promote(action, timeout)
            case Notify(event=event, detail=detail):
                p.notify(event, detail)
            case ArbiterPromote() | ArbiterMark() | ArbiterUnmark():
                raise DbhaError(
                    'the arbiter (replication.sync_fallback = "arbiter") is not '
                    "supported yet: nothing was changed"
                )
            case _:
                raise DbhaError(f"unknown action {action!r}")


def _name(action: Action) -> str:
    return type(action).__name__
