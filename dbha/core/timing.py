"""When a supervisor's loop ticks and when its heartbeats go out: pure functions of
the times they are given (the loop, dbha.node.daemon, and the heartbeat service,
dbha.beat.service, read the clock and pass it in)."""

from __future__ import annotations

from dbha.core.decide import SAFETY_NOTE
from dbha.core.model import Decision, NodeRole, NodeState, Observation

# A tick asked for at a wait's end (Decision.wake_at) runs this long after it.
WAKE_SLACK = 0.002

# A round due within this fraction of the interval is sent at once when a new
# round of the peer's has just been admitted (never later than its time).
EARLY_SEND = 0.5


def plan_wait(
    next_tick: float,
    began: float,
    now: float,
    period: float,
    d: Decision,
    steady: bool,
    overdue_at: float | None,
) -> tuple[float, float]:
    """The loop's next planned tick and how long to wait for it, after a tick that
    began at ``began`` and decided ``d``.

    The period runs from the planned tick before (``next_tick``), or afresh from
    ``began`` when news woke the loop early; a slow tick is followed at once,
    without catching up in a burst. A time within the wait at which something
    changes with nothing to announce it ends the wait just after it: the end of a
    wait of the decision (``d.wake_at``) and, in a steady state (where the period
    is long), ``overdue_at`` (the probe's answer goes stale) and the lease's end.
    """
    next_tick = min(next_tick + period, began + period)
    delay = next_tick - now
    if delay < 0:
        return now, 0.0
    wakes = [d.wake_at, overdue_at, d.lease_until] if steady else [d.wake_at]
    soon = [at for at in wakes if at is not None and now < at < now + delay]
    if soon:
        delay = min(soon) - now + WAKE_SLACK
        next_tick = now + delay
    return next_tick, delay


def steady(
    prev: Decision | None, d: Decision, before: NodeState, obs: Observation, paths: int
) -> bool:
    """Nothing is happening and nothing is on its way: the same decision as the
    tick before, no action, no wait ending, the state unchanged, a primary and a
    replica that each see the other whole (every path up, databases answering),
    no failed probe counted, no request. Then the loop may tick at its steady
    period; anything else keeps it at the heartbeat interval."""
    role = before.role
    partner = {NodeRole.PRIMARY: NodeRole.REPLICA, NodeRole.REPLICA: NodeRole.PRIMARY}.get(role)
    last = obs.peer.last
    return (
        partner is not None
        and prev is not None
        and gist(prev) == gist(d)
        and not d.actions
        and d.wake_at is None
        and d.next_state == before
        and before.db_fails == 0
        and before.dead_since is None
        and not before.switching
        and obs.request is None
        and obs.local.reachable
        and obs.checks_ok
        and obs.keeper_ok
        and obs.peer.paths_up == paths
        and last is not None
        and last.role is partner
        and last.db_reachable
        and not last.needs_resync
    )


def gist(d: Decision) -> tuple[str, str]:
    """A decision's rule and reason without the note that a safety check was asked."""
    return d.rule, d.reason.removesuffix(SAFETY_NOTE)


def round_due(next_send: float, now: float, interval: float, new_round: bool) -> float:
    """When our next round goes out, judged just after a wake-up at ``now``: at
    its time, or at once when the wake-up admitted a newer round of the peer's
    (``new_round``) and ours is due within EARLY_SEND of an interval. Awake for
    the peer's round anyway, we send ours rather than wake again for it: the two
    nodes' rounds fall into step, and one of them wakes once per round instead
    of twice. Never later than its time; never more than one round per half
    interval."""
    if new_round and next_send - now <= interval * EARLY_SEND:
        return min(now, next_send)
    return next_send
