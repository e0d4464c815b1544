"""What every rule of the decision core shares: its numbers, the lease, the
checks on data and eligibility, and the actions that promote, rejoin and stop
serving. Pure, like the rest of :mod:`dbha.core.decide`."""

from __future__ import annotations

from dataclasses import replace

from dbha.core.model import (
    ACQUIRE_VIP,
    FENCE,
    FENCE_PEER,
    PROMOTE,
    RELEASE_VIP,
    SYNC_OFF,
    SYNC_ON,
    WAIT_REPLAYED,
    Action,
    Announce,
    ArbiterPromote,
    Decision,
    Fence,
    NodeRole,
    NodeState,
    Notify,
    Observation,
    PersistState,
    Position,
    PrePromote,
    Rejoin,
    Role,
    Verdict,
)
from dbha.core.params import (
    Params,
)

# Consecutive failed probes of the local database before it counts as failed.
PROBE_FALL = 3
# A replica that does not acknowledge synchronous commits is asked to at most this
# often (seconds): a setting it cannot make is not tried every tick.
PREPARE_EVERY = 5.0
# A marked primary whose replica is back turns synchronous commit on again once the
# primary sees the replica caught up (streaming), or once it has been back this long
# (seconds) whatever it reports: until then the mark keeps the replica ineligible,
# and commits do not wait for a replica that is still catching up.
REARM_AFTER = 30.0

# What the pre_promote hook is told of each promotion rule (PrePromote.kind).
PROMOTION_KINDS = {
    "failover-promote": "failover",
    "handover-promote": "switchover",
    "failover-forced": "forced",
}

SERVING = (NodeRole.PRIMARY, NodeRole.PROMOTING)
ASK_SAFETY = (NodeRole.PRIMARY, NodeRole.PROMOTING, NodeRole.REPLICA, NodeRole.FENCED)
_GOOD_VERDICTS = (Verdict.PEER_DEAD, Verdict.PEER_ALIVE_HEARTBEAT_BROKEN)


# ------------------------------------------------------------------ helpers


def lease_until(p: Params, obs: Observation) -> float | None:
    """Until when this node may serve, from the evidence in ``obs`` (None: no evidence)."""
    peer = obs.peer
    until = None if peer.echo_sent_at is None else peer.echo_sent_at + p.lease
    s = obs.safety
    # A verdict renews the lease even after beats are heard again: it says the peer
    # could not have judged us dead at that time except in the partition two nodes
    # cannot judge, and a peer that hears us again has no reason to promote.
    if s is not None and s.verdict in _GOOD_VERDICTS:
        v = s.at + p.lease
        if until is None or v > until:
            until = v
    return until


def eligible(state: NodeState, obs: Observation) -> bool:
    """What this node announces as ``Announce.eligible``: it could be promoted."""
    local = obs.local
    last = obs.peer.last
    return (
        state.role is NodeRole.REPLICA
        and not state.needs_resync
        and local.reachable
        and local.role is Role.REPLICA
        and (last is None or last.epoch <= state.epoch)
    )


def replica_present(state: NodeState, obs: Observation) -> bool:
    """A primary's peer is heard as an eligible replica at its epoch: one its
    synchronous commits may wait for."""
    peer, last = obs.peer, obs.peer.last
    return last is not None and not peer.silent and last.eligible and last.epoch == state.epoch


def announce(state: NodeState, obs: Observation) -> Announce:
    """What this node's beats should say after deciding ``state`` on ``obs``."""
    local = obs.local
    return Announce(
        epoch=state.epoch,
        role=state.role,
        db_reachable=local.reachable,
        db_writable=local.writable,
        position=local.position,
        maintenance=state.maintenance,
        needs_resync=state.needs_resync,
        sync_mark=state.sync_mark,
        eligible=eligible(state, obs),
        planned=state.role is NodeRole.HANDOVER and state.switching,
        behind=behind(obs) if state.role is NodeRole.REPLICA else None,
    )


def behind(obs: Observation) -> int | None:
    """A replica's lag by its own account: not yet received (against the primary's
    announced position) plus received and not applied; None when neither is known."""
    local = obs.local
    backlog = local.lag_bytes if local.lag_bytes is not None else local.lag_transactions
    if obs.lag_units is None and backlog is None:
        return None
    return (obs.lag_units or 0) + (backlog or 0)


def verdict_after_beat(obs: Observation, verdict: Verdict) -> bool:
    s = obs.safety
    heard = obs.peer.heard_at
    return s is not None and s.verdict is verdict and (heard is None or s.at >= heard)


def wants_safety(p: Params, state: NodeState, obs: Observation) -> bool:
    """Ask for a safety check: the peer is quiet and no check was asked recently."""
    heard = obs.peer.heard_at
    now = obs.now
    if heard is not None and now - heard < p.quiet:
        return False
    asked = state.safety_asked_at
    return asked is None or now - asked >= p.safety_every


def _lag_ok(p: Params, obs: Observation) -> str | None:
    """None when the local replica is within the lag bound, else why not."""
    if obs.lag_units is None:
        return "its lag behind the primary is unknown"
    if obs.lag_units > p.lag_units:
        return f"it is {obs.lag_units} behind, more than the bound {p.lag_units}"
    secs = obs.local.lag_seconds
    if secs is not None and secs > p.lag_seconds:
        return f"it is {secs:.1f} s behind, more than the bound {p.lag_seconds:g} s"
    return None


def replay_ok(p: Params, obs: Observation) -> str | None:
    """None when this replica can apply what it received in bounded time: its replay
    is not paused with something left to apply (a pause is its operator's intent,
    and a promotion would have to override it), and it is not more than the bound
    in seconds behind. In synchronous mode the data is safe either way: this bounds
    the time a promotion waits for the replay, and never lets one start that would
    wait for ever."""
    local = obs.local
    backlog = local.lag_bytes if local.lag_bytes is not None else local.lag_transactions
    if local.replay_paused and backlog != 0:
        left = f" with {backlog} left to apply" if backlog is not None else ""
        return (
            f"its replay is paused{left} (resume it: SELECT pg_wal_replay_resume() on "
            "PostgreSQL, START SLAVE SQL_THREAD on MariaDB)"
        )
    secs = local.lag_seconds
    if secs is not None and secs > p.lag_seconds:
        return f"it is {secs:.1f} s behind, more than the bound {p.lag_seconds:g} s"
    return None


def data_ok(p: Params, state: NodeState, obs: Observation, unilateral: bool) -> str | None:
    """Condition (d): None when promoting this replica loses nothing it must not, and
    it can finish its replay in bounded time."""
    last = obs.peer.last
    if not p.sync:
        return _lag_ok(p, obs) or replay_ok(p, obs)
    why = replay_ok(p, obs)
    if why is not None:
        return why
    if last is not None and last.sync_mark is not None:
        return "the primary announced that this replica is not in sync"
    if p.fallback == "arbiter":
        arb = obs.arbiter
        if arb is None:
            return "the arbiter cannot be read"
        if arb.epoch != state.epoch or arb.marked:
            return f"the arbiter's record (epoch {arb.epoch}, marked {arb.marked}) forbids it"
    elif p.fallback == "fallback" and unilateral:
        echo = obs.peer.echo_sent_at
        since = state.eligible_since
        if echo is None or since is None or echo < since:
            return "the primary has not confirmed hearing this replica as eligible"
        if obs.now >= echo + p.fallback_window:
            return "the primary may have fallen back to asynchronous commits by now"
    return None


def received_position(obs: Observation) -> Position | None:
    local = obs.local
    return local.received if local.received is not None else local.position


def notify(event: str, detail: str = "") -> Notify:
    return Notify(event, detail)


def stop_serving(obs: Observation, fence: Fence = FENCE) -> list[Action]:
    """Fence, then drop the VIP. A database that answers is fenced first, while the
    VIP is still here: the fence ends its sessions, and the error and FIN it sends
    reach the clients only from an address the host still has (sent from a removed
    VIP they are lost, and a client without keepalives waits on a dead session for
    minutes). The fence is bounded and best effort, so the VIP goes whatever it
    gave. A database that does not answer has no session to end where a client
    would see it: the VIP goes first, then the (best-effort) fence."""
    acts: list[Action] = []
    local = obs.local
    fencing = not local.reachable or local.writable or fence.hard
    if fencing and local.reachable:
        acts.append(Fence(fence.hard, best_effort=True))
    if obs.vip_held:
        acts.append(RELEASE_VIP)
    if fencing and not local.reachable:
        acts.append(Fence(fence.hard, best_effort=True))
    return acts


def fenced_state(state: NodeState, obs: Observation, **changes: object) -> NodeState:
    return replace(
        state,
        role=NodeRole.FENCED,
        since=obs.now,
        fenced_at=obs.now,
        switching=False,
        clear_pos=None,
        eligible_since=None,
        **changes,  # type: ignore[arg-type]
    )


def decision(
    state: NodeState,
    rule: str,
    reason: str,
    actions: tuple[Action, ...] | list[Action] = (),
    lease: float | None = None,
    answer: str | None = None,
) -> Decision:
    return Decision(state, tuple(actions), rule, reason, lease, answer)


def dead_since(state: NodeState, obs: Observation) -> float | None:
    """When the current unbroken run of peer_dead verdicts began (None: no such run).
    Any beat, or any other verdict, ends the run."""
    s = obs.safety
    heard = obs.peer.heard_at
    if s is None or s.verdict is not Verdict.PEER_DEAD or (heard is not None and s.at < heard):
        return None
    since = state.dead_since
    if since is None or (heard is not None and since < heard) or since > s.at:
        return s.at
    return since


def dead_long_enough(p: Params, state: NodeState, now: float) -> str | None:
    """The peer renews its lease with its own verdicts while we cannot hear it (our
    isolation, its isolation, broken heartbeats), so silence alone proves nothing:
    its database must have been unreachable for a whole deadline, counted from the
    start of the first check that found it so (the probe may have run up to a
    timeout later), before its lease has surely ended."""
    since = state.dead_since
    if since is None:
        return "no run of peer_dead verdicts"
    left = since + p.deadline + p.safety_timeout - now
    if left > 0:
        return f"the peer's database must stay unreachable {left:.2f} s more"
    return None


def promotion(
    p: Params,
    state: NodeState,
    obs: Observation,
    rule: str,
    why: str,
    unilateral: bool,
    answer: str | None = None,
    event: str = "failover_started",
) -> Decision:
    """Ask the pre_promote hook, bump and persist the epoch, then promote, then take
    the VIP. ``event`` names the start in the node's history (``switchover_promoting``
    when the peer handed over for a planned switchover)."""
    last = obs.peer.last
    epoch = max(state.epoch, last.epoch if last is not None else 0) + 1
    # Alone after a unilateral promotion: in fallback/arbiter modes commit
    # without the (fenced, resync-bound) old primary, under a mark.
    mark = epoch if (p.sync and p.fallback != "strict" and unilateral) else None
    promoting = replace(
        state,
        role=NodeRole.PROMOTING,
        epoch=epoch,
        since=obs.now,
        sync_mark=mark,
        needs_resync=False,
        eligible_since=None,
        fenced_at=None,
        clear_pos=None,
    )
    # The operator's hook first: its veto must come before anything changes (the
    # arbiter's record, the new epoch on disk).
    acts: list[Action] = [PrePromote(PROMOTION_KINDS.get(rule, "failover"), epoch, why)]
    if p.sync and p.fallback == "arbiter":
        acts.append(ArbiterPromote(state.epoch, mark is not None))
    acts.append(PersistState(promoting))
    acts.append(notify(event, why))
    if unilateral:
        acts.append(FENCE_PEER)
    acts += [WAIT_REPLAYED, PROMOTE]
    if p.sync:  # before the VIP: the first commit through it already waits (or not)
        acts.append(SYNC_ON if mark is None else SYNC_OFF)
    acts += [ACQUIRE_VIP, notify("promoted", f"epoch {epoch}")]
    done = replace(promoting, role=NodeRole.PRIMARY, last_failover=obs.wall)
    return decision(
        done,
        rule,
        f"{why}: promoting at epoch {epoch}",
        acts,
        lease=lease_until(p, obs),
        answer=answer,
    )


def rejoin_decision(
    p: Params,
    state: NodeState,
    obs: Observation,
    last: Announce,
    rule: str,
    force: bool = False,
    answer: str | None = None,
) -> Decision:
    new = replace(
        state,
        role=NodeRole.REPLICA,
        epoch=max(state.epoch, last.epoch),
        needs_resync=False,
        since=obs.now,
        fenced_at=None,
        sync_mark=None,
        clear_pos=None,
        switching=False,
    )
    # A former primary that never acknowledged alone in synchronous mode holds, past
    # what the peer has, only commits that waited for an acknowledgement that never
    # came: no client was told they committed.
    unacked = (
        p.sync
        and p.fallback != "arbiter"
        and (state.role is NodeRole.FENCED and state.sync_mark is None)
    )
    acts = [
        *stop_serving(obs),
        Rejoin(p.peer, force, unacknowledged=unacked),
        notify("rejoined", f"epoch {last.epoch}"),
    ]
    return decision(
        new, rule, f"rejoining as a replica of {p.peer} (epoch {last.epoch})", acts, None, answer
    )


def can_rejoin(p: Params, state: NodeState, obs: Observation) -> Announce | None:
    """The peer to rejoin automatically (None: not now). Maintenance on either node
    pauses it, as it pauses failover: the operator's ``dbha resync`` still works."""
    last = obs.peer.last
    if (
        p.auto_rejoin
        and not state.maintenance
        and state.needs_resync
        and last is not None
        and not obs.peer.silent
        and last.role is NodeRole.PRIMARY
        and not last.maintenance
        and last.db_reachable
        and last.epoch >= state.epoch
    ):
        return last
    return None
