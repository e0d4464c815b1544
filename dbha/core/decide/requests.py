"""Operator requests: maintenance, switchover, failover, resync."""

from __future__ import annotations

from dataclasses import replace

from dbha.core.decide.rules import (
    SERVING,
    data_ok,
    dead_long_enough,
    decision,
    lease_until,
    notify,
    promotion,
    rejoin_decision,
    verdict_after_beat,
)
from dbha.core.model import (
    FENCE,
    RELEASE_VIP,
    SYNC_OFF,
    Action,
    Decision,
    NodeRole,
    NodeState,
    Observation,
    PersistState,
    RequestKind,
    Verdict,
)
from dbha.core.params import Params

# ----------------------------------------------------------------- requests


def request_rules(p: Params, state: NodeState, obs: Observation) -> Decision:
    req = obs.request
    assert req is not None
    kind = req.kind
    if kind in (RequestKind.MAINTENANCE_ON, RequestKind.MAINTENANCE_OFF):
        on = kind is RequestKind.MAINTENANCE_ON
        word = "on" if on else "off"
        return decision(
            replace(state, maintenance=on),
            "maintenance",
            f"maintenance {word}: automatic failover {'paused' if on else 'resumed'}",
            answer=f"maintenance {word}",
        )
    if kind is RequestKind.SWITCHOVER:
        why = _switchover_blocker(p, state, obs, req.force)
        if req.dry_run:
            if why is not None:
                return decision(
                    state, "request-refused", f"switchover refused: {why}", answer=f"refused: {why}"
                )
            return decision(
                state,
                "switchover-dry-run",
                f"switchover dry run: {p.peer} could take over; nothing changed",
                answer=f"switchover possible: {_plan(p, obs)}",
            )
        if why is None:
            # Read-only first, its sessions ended while their clients still reach this
            # address; this fence must succeed. Then the VIP goes. The event comes
            # first: the write pause it starts is measured from it.
            acts: list[Action] = [notify("switchover_started", _plan(p, obs)), FENCE]
            if obs.vip_held:
                acts.append(RELEASE_VIP)
            return decision(
                replace(state, role=NodeRole.HANDOVER, since=obs.now, switching=True),
                "switchover-start",
                f"switchover: fenced and VIP released, handing the role to {p.peer}",
                acts,
                answer="switchover started",
            )
        return _refuse(state, f"switchover refused: {why}")
    if kind is RequestKind.SYNC_RELAX:
        why = _relax_blocker(p, state, obs, req.force)
        if why is not None:
            return _refuse(state, f"sync relax refused: {why}")
        marked = replace(state, sync_mark=state.epoch, clear_pos=None)
        detail = "operator: commits no longer wait for the replica" + (
            " (forced)" if req.force else ""
        )
        return decision(
            marked,
            "sync-relax",
            f"operator: commits no longer wait for {p.peer} (replica-not-in-sync mark at "
            f"epoch {state.epoch}, kept until it is back and has caught up)",
            [PersistState(marked), SYNC_OFF, notify("sync_relaxed", detail)],
            answer=f"synchronous commit relaxed: commits no longer wait for {p.peer}; "
            "they wait again once it is back, and the mark clears once it has caught up",
        )
    if kind is RequestKind.FAILOVER:
        why = _failover_blocker(p, state, obs, req.force)
        if why is None:
            return promotion(
                p,
                state,
                obs,
                "failover-forced",
                "operator failover" + (" (forced)" if req.force else ""),
                unilateral=obs.peer.silent,
                answer="failover started",
            )
        return _refuse(state, f"failover refused: {why}")
    # RESYNC
    last = obs.peer.last
    if state.role not in (NodeRole.REPLICA, NodeRole.FENCED):
        return _refuse(state, f"resync refused: this node is {state.role.value}")
    if (
        last is None
        or obs.peer.silent
        or last.role is not NodeRole.PRIMARY
        or last.epoch < state.epoch
        or not last.db_reachable
    ):
        return _refuse(state, "resync refused: the peer is not a reachable primary")
    return rejoin_decision(p, state, obs, last, "resync", req.force, answer="resync done")


def _refuse(state: NodeState, why: str) -> Decision:
    event = (
        "request_refused"
        if why.startswith(("resync", "maintenance", "sync relax"))
        else "failover_refused"
    )
    # The answer's first word says it was refused: "refused: resync: ..."
    head, sep, rest = why.partition(" refused: ")
    answer = f"refused: {head}: {rest}" if sep else f"refused: {why}"
    return decision(state, "request-refused", why, [notify(event, why)], answer=answer)


# The words of a switchover refused only for the lag bound: ``dbha switchover``
# (dbha.node.switchover) asks again for a while, as a replica under load moves
# about its bound; every other refusal is final.
LAG_REFUSAL = "behind, more than the bound"


def _switchover_blocker(p: Params, state: NodeState, obs: Observation, force: bool) -> str | None:
    """Why a switchover to the peer may not start now (None: it may). ``force``
    passes maintenance and the lag bound, never the rest: the replica still takes
    over only once it has received everything (dbha.core.decide.roles)."""
    if state.role is not NodeRole.PRIMARY:
        return f"this node is {state.role.value}, not the primary"
    last = obs.peer.last
    if last is None or obs.peer.silent:
        return f"{p.peer} is not heard"
    if last.needs_resync:
        return f"{p.peer} needs a resync"
    if not last.db_reachable:
        return f"{p.peer}'s database does not answer"
    if not last.eligible or last.epoch != state.epoch:
        return f"{p.peer} is not an eligible replica ({last.role.value}, epoch {last.epoch})"
    if not obs.local.reachable:
        return "the local database does not answer"
    if state.sync_mark is not None:
        return f"{p.peer} is not in sync yet (replica-not-in-sync mark)"
    if not force:
        if state.maintenance or last.maintenance:
            who = p.me if state.maintenance else p.peer
            return f"maintenance is on ({who}): turn it off first, or --force"
        # An unknown lag does not refuse: the replica takes over only once it has
        # received everything, and the bound only keeps the write pause short.
        lag = obs.peer_lag_units
        if lag is not None and lag > p.lag_units:
            return f"{p.peer} is {lag} {LAG_REFUSAL} {p.lag_units}: --force"
    return None


def _plan(p: Params, obs: Observation) -> str:
    lag = obs.peer_lag_units
    return f"{p.me} hands over to {p.peer} (" + (
        "lag unknown)" if lag is None else f"{lag} behind, bound {p.lag_units})"
    )


def _relax_blocker(p: Params, state: NodeState, obs: Observation, force: bool) -> str | None:
    """Why this node may not stop waiting for its replica now (None: it may)."""
    if state.role is not NodeRole.PRIMARY:
        return f"this node is {state.role.value}, not the primary"
    if not p.sync:
        return "replication.mode is async: commits do not wait for the replica"
    if p.fallback == "arbiter":
        return "in arbiter mode the mark lives in the arbiter: not available in this release"
    if state.sync_mark is not None:
        return f"already relaxed (replica-not-in-sync mark at epoch {state.sync_mark})"
    if force:
        return None
    peer, last = obs.peer, obs.peer.last
    if peer.silent:
        if verdict_after_beat(obs, Verdict.PEER_DEAD):
            return None
        return (
            "the replica is silent but the safety check does not find its database dead: "
            "it may still take over without the commits acknowledged meanwhile (--force "
            "accepts that)"
        )
    if last is not None and (last.needs_resync or not last.eligible):
        return None  # it cannot be promoted before a rejoin from us brings it the mark
    return (
        "the replica is heard as an eligible replica: make it acknowledge (dbha status "
        "on it), or accept that it may miss what is acknowledged meanwhile (--force)"
    )


def _failover_blocker(p: Params, state: NodeState, obs: Observation, force: bool) -> str | None:
    if state.role not in (NodeRole.REPLICA, NodeRole.FENCED):
        return f"this node is {state.role.value}"
    if state.role is NodeRole.FENCED and not force:
        return "this node is a fenced former primary (use --force)"
    peer = obs.peer
    last = peer.last
    if peer.silent:
        ref = peer.heard_at if peer.heard_at is not None else state.since
        if ref is not None and obs.now < ref + p.deadline:
            return "the peer was heard less than the self-fence deadline ago"
        if not verdict_after_beat(obs, Verdict.PEER_DEAD):
            # --force skips data checks, never this: a peer whose database still
            # answers may still serve (fence it first, or use a switchover).
            return "the safety check does not say peer_dead"
        if obs.now >= obs.safety.at + p.lease:  # type: ignore[union-attr]
            return "the safety verdict is too old to serve under"
        why = dead_long_enough(p, state, obs.now)
        if why is not None:
            return why
    elif last is None or last.db_writable or last.role in SERVING:
        return "the peer is heard and serving: use switchover"
    elif last.role is NodeRole.FENCED and not last.needs_resync:
        # it resumes as soon as it hears us as a replica: promoting now would race it
        return "the peer is a fenced primary that may resume: use switchover once it has"
    if not obs.local.reachable:
        return "the local database does not answer"
    lease = lease_until(p, obs)
    if lease is None or obs.now >= lease:
        return "no lease: the peer has not confirmed hearing us, and no fresh safety verdict"
    if not force:
        if state.needs_resync:
            return "this node needs a resync (use --force)"
        why = data_ok(p, state, obs, unilateral=peer.silent)
        if why is not None:
            return why + " (use --force)"
    return None
