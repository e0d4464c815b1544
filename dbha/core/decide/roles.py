"""The rules of each role: replica, promoting, primary (with its synchronous
mode), handover and fenced."""

from __future__ import annotations

from dataclasses import replace

from dbha.core.decide.rules import (
    PREPARE_EVERY,
    PROBE_FALL,
    REARM_AFTER,
    can_rejoin,
    data_ok,
    dead_long_enough,
    decision,
    fenced_state,
    lease_until,
    notify,
    promotion,
    received_position,
    rejoin_decision,
    replay_ok,
    replica_present,
    stop_serving,
    verdict_after_beat,
)
from dbha.core.model import (
    ACQUIRE_VIP,
    FENCE,
    PREPARE_REPLICA,
    PROMOTE,
    SYNC_OFF,
    SYNC_ON,
    UNFENCE,
    WAIT_REPLAYED,
    Action,
    Announce,
    ArbiterMark,
    ArbiterUnmark,
    Decision,
    NodeRole,
    NodeState,
    Observation,
    PersistState,
    Role,
    Verdict,
)
from dbha.core.params import Params

# ------------------------------------------------------------------ replica


def replica_rules(p: Params, state: NodeState, obs: Observation) -> Decision:
    local = obs.local
    peer = obs.peer
    last = peer.last
    if local.reachable and local.writable:
        return decision(
            replace(state, needs_resync=True, eligible_since=None),
            "replica-writable-db",
            "this replica's database accepts writes: fenced, and it needs a resync",
            [FENCE, notify("resync_needed", "replica database was writable")],
        )
    if state.needs_resync:
        up = can_rejoin(p, state, obs)
        if up is not None:
            return rejoin_decision(p, state, obs, up, "rejoin-auto")
        return decision(state, "replica-resync-wait", "this replica needs a resync; not eligible")
    if not peer.silent:
        if last is not None and last.role is NodeRole.HANDOVER and last.epoch == state.epoch:
            why = _handover_blocker(p, state, obs, last)
            if why is None:
                planned = "switchover_promoting" if last.planned else "failover_started"
                said = f"{p.peer} handed over" + (" (planned switchover)" if last.planned else "")
                return promotion(p, state, obs, "handover-promote", said, False, event=planned)
            return decision(state, "handover-not-ready", f"{p.peer} hands over, but {why}")
        if (
            p.sync
            and local.reachable
            and local.role is Role.REPLICA
            and local.sync_ready is False
            and (
                state.prepare_asked_at is None or obs.now - state.prepare_asked_at >= PREPARE_EVERY
            )
        ):
            return decision(
                replace(state, prepare_asked_at=obs.now),
                "replica-prepare",
                "this replica does not acknowledge synchronous commits (a standby named "
                "otherwise, or semi-sync off on this side): making it",
                [PREPARE_REPLICA, notify("replica_prepared", "acknowledges synchronous commits")],
            )
        return decision(state, "replica-follow", "replica: following")
    why = _failover_blocker_auto(p, state, obs)
    if why is None:
        return promotion(p, state, obs, "failover-promote", f"{p.peer} is silent and dead", True)
    blocked = decision(state, "failover-blocked", f"{p.peer} is silent; not promoting: {why}")
    return blocked._replace(wake_at=_waits_end(p, state, obs))


def _waits_end(p: Params, state: NodeState, obs: Observation) -> float | None:
    """When the two waits of a unilateral promotion, (c) the peer's deadline after
    its last beat and a deadline of unreachable database, both end (None: a run of
    peer_dead verdicts has not begun, or both have ended)."""
    ref = obs.peer.heard_at if obs.peer.heard_at is not None else state.since
    if ref is None or state.dead_since is None:
        return None
    end = max(ref + p.deadline, state.dead_since + p.deadline + p.safety_timeout)
    return end if end > obs.now else None


def _handover_blocker(p: Params, state: NodeState, obs: Observation, last: Announce) -> str | None:
    local = obs.local
    if not local.reachable or local.role is not Role.REPLICA:
        return "the local database is not an answering replica"
    if not obs.keeper_ok:
        return "the lease keeper is not running"
    lease = lease_until(p, obs)
    if lease is None or obs.now >= lease:
        return "no lease: the peer has not confirmed hearing us yet"
    if last.db_reachable and last.position is not None:
        mine = received_position(obs)
        if mine is None or not obs.covers(mine, last.position):
            return f"this replica has not received everything yet ({mine} < {last.position})"
        if p.sync and p.fallback == "arbiter":
            return data_ok(p, state, obs, unilateral=False)
        return replay_ok(p, obs)
    return data_ok(p, state, obs, unilateral=False)


def _failover_blocker_auto(p: Params, state: NodeState, obs: Observation) -> str | None:
    """Conditions (b) to (e) and the local ones; (a) holds (every path silent)."""
    peer = obs.peer
    last = peer.last
    now = obs.now
    if not verdict_after_beat(obs, Verdict.PEER_DEAD):
        s = obs.safety
        got = "none yet" if s is None or (peer.heard_at and s.at < peer.heard_at) else s.verdict
        return f"the safety check does not say peer_dead ({got})"
    if now >= obs.safety.at + p.lease:  # type: ignore[union-attr]
        return "the safety verdict is too old to serve under"
    ref = peer.heard_at if peer.heard_at is not None else state.since
    if ref is None or now < ref + p.deadline:
        left = p.deadline - (now - ref) if ref is not None else p.deadline
        return f"waiting out the peer's self-fence deadline ({left:.2f} s left)"
    why = dead_long_enough(p, state, now)
    if why is not None:
        return why
    if state.maintenance or (last is not None and last.maintenance):
        return "maintenance is on"
    local = obs.local
    if not local.reachable or local.role is not Role.REPLICA:
        return "the local database is not an answering replica"
    if not obs.keeper_ok:
        return "the lease keeper is not running"
    return data_ok(p, state, obs, unilateral=True)


# ---------------------------------------------------------------- promoting


def promoting_rules(p: Params, state: NodeState, obs: Observation) -> Decision:
    lease = lease_until(p, obs)
    local = obs.local
    if lease is None or obs.now >= lease:
        return decision(state, "promoting-wait", "promotion under way, waiting for a lease")
    done = replace(state, role=NodeRole.PRIMARY, since=obs.now, last_failover=obs.wall)
    if local.reachable and local.role is Role.PRIMARY and local.writable:
        acts: list[Action] = [] if obs.vip_held else [ACQUIRE_VIP]
        acts.append(notify("promoted", f"epoch {state.epoch}"))
        return decision(done, "promoting-done", "promotion complete", acts, lease)
    acts = [WAIT_REPLAYED, PROMOTE]
    if p.sync:
        acts.append(SYNC_ON if state.sync_mark is None else SYNC_OFF)
    if not obs.vip_held:
        acts.append(ACQUIRE_VIP)
    acts.append(notify("promoted", f"epoch {state.epoch}"))
    return decision(done, "promoting-retry", "finishing the promotion", acts, lease)


# ------------------------------------------------------------------ primary


def primary_rules(p: Params, state: NodeState, obs: Observation) -> Decision:
    now = obs.now
    peer = obs.peer
    local = obs.local
    if verdict_after_beat(obs, Verdict.I_AM_ISOLATED):
        return decision(
            fenced_state(state, obs),
            "primary-isolated",
            "isolated (no path to the peer, no gateway): fenced and VIP released",
            [*stop_serving(obs), notify("fenced", "isolated")],
        )
    lease = lease_until(p, obs)
    if lease is None or now >= lease:
        return decision(
            fenced_state(state, obs),
            "primary-lease-lost",
            "no news that the peer still hears us, and no safety verdict: "
            "lease expired, fenced and VIP released",
            [*stop_serving(obs), notify("fenced", "lease expired")],
        )
    last = peer.last
    if not local.reachable and (peer.heard_at is None or now - peer.heard_at >= p.quiet):
        # The peer cannot hear us and its safety check will find our database dead:
        # it may promote. Our own verdicts say nothing about that, so stop serving
        # and resume only once the peer confirms it did not.
        return decision(
            fenced_state(state, obs),
            "primary-db-lost",
            f"the local database does not answer and {p.peer} is quiet: VIP released, "
            "fenced until the peer confirms this node may serve",
            [*stop_serving(obs), notify("fenced", "database lost while the peer is quiet")],
        )
    if state.db_fails >= PROBE_FALL or not obs.checks_ok:
        what = "failed its probe" if state.db_fails >= PROBE_FALL else "failed its checks"
        if (
            last is not None
            and not peer.silent
            and last.eligible
            and last.epoch == state.epoch
            and not state.maintenance
            and not last.maintenance
            and state.sync_mark is None
        ):
            return decision(
                replace(state, role=NodeRole.HANDOVER, since=now, switching=False),
                "primary-db-failed",
                f"the local database {what}: VIP released, fenced, handing over to {p.peer}",
                [
                    *stop_serving(obs),
                    notify("failover_started", f"local database {what}"),
                ],
                lease,
            )
        why = (
            f"{p.peer} is not in sync (replica-not-in-sync mark): it cannot take over "
            "without what was acknowledged since"
            if state.sync_mark is not None
            else f"{p.peer} cannot take over"
        )
        return decision(
            state, "primary-db-failing", f"the local database {what}, and {why}", lease=lease
        )
    if p.sync and local.reachable:
        d = _sync(p, state, obs, lease)
        if d is not None:
            return d
    if local.reachable and not local.writable and local.role is Role.PRIMARY:
        # The keeper (a stalled loop), the peer (before a promotion) or an operator
        # fenced it. Never undo someone else's fence here: resume as a fenced node
        # does, once the peer confirms.
        return decision(
            fenced_state(state, obs),
            "primary-db-fenced",
            "the database was fenced (keeper, peer or operator): fenced until the peer "
            "confirms this node may serve",
            [*stop_serving(obs), notify("fenced", "database found fenced")],
        )
    if local.writable and not obs.vip_held:
        return decision(state, "primary-take-vip", "taking the VIP", [ACQUIRE_VIP], lease)
    return decision(state, "primary-serving", "primary: serving", lease=lease)


def _sync(p: Params, state: NodeState, obs: Observation, lease: float) -> Decision | None:
    """Synchronous mode: keep the database's setting in line with the mark."""
    local = obs.local
    peer = obs.peer
    last = peer.last
    present = replica_present(state, obs)
    if state.sync_mark is None:
        if p.fallback != "strict" and not present:
            ref = peer.eligible_at
            if ref is None or (state.since is not None and state.since > ref):
                ref = state.since
            gone_for = obs.now - ref if ref is not None else 0.0
            # A replica heard saying it needs a resync cannot become eligible again
            # without a rejoin from us, which brings it our commits and the mark: no
            # need to wait out the time in which a vanished replica might promote.
            resyncing = last is not None and not peer.silent and last.needs_resync
            if (resyncing or gone_for >= p.fallback_wait) and (
                not peer.silent or verdict_after_beat(obs, Verdict.PEER_DEAD)
            ):
                why = "needs a resync" if resyncing else f"gone for {gone_for:.1f} s"
                marked = replace(state, sync_mark=state.epoch, clear_pos=None)
                acts: list[Action] = []
                if p.fallback == "arbiter":
                    acts.append(ArbiterMark(state.epoch))
                acts += [
                    PersistState(marked),
                    SYNC_OFF,
                    notify("sync_fallback", f"replica {why}"),
                ]
                return decision(
                    marked,
                    "primary-sync-fallback",
                    f"{p.peer} {why}: commits no longer wait for it "
                    f"(replica-not-in-sync mark at epoch {state.epoch})",
                    acts,
                    lease,
                )
        if not local.sync_replication:
            return decision(state, "primary-sync-on", "synchronous commit on", [SYNC_ON], lease)
        return None
    if not present:
        if local.sync_replication:
            return decision(
                replace(state, clear_pos=None),
                "primary-sync-off",
                f"{p.peer} is gone again: commits stop waiting for it",
                [SYNC_OFF],
                lease,
            )
        return None
    if not local.sync_replication:
        back = state.back_since if state.back_since is not None else obs.now  # set by decide()
        caught_up = any(r.state == "streaming" for r in local.replicas)
        if not caught_up and obs.now - back < REARM_AFTER:
            # Commits would wait until it has caught up: a write stall as long as its
            # catch-up. The mark keeps it ineligible meanwhile, so nothing is at risk.
            return decision(
                state,
                "primary-sync-catchup",
                f"{p.peer} is back and catching up: synchronous commit waits until it "
                f"streams (at most {REARM_AFTER:g} s), the mark is kept",
                lease=lease,
            )
        return decision(
            replace(state, clear_pos=None),
            "primary-sync-on",
            f"{p.peer} is back"
            + (" and streams" if caught_up else f" for {obs.now - back:.0f} s")
            + ": synchronous commit on, mark kept until it catches up",
            [SYNC_ON],
            lease,
        )
    if state.clear_pos is None:
        if local.position is None:
            return None
        return decision(
            replace(state, clear_pos=local.position),
            "primary-sync-armed",
            f"waiting for {p.peer} to reach {local.position} to clear the mark",
            lease=lease,
        )
    # Caught up: the primary's own view of the replica (PostgreSQL reports what each
    # replica flushed) or the replica's own word (its beats; MySQL/MariaDB primaries
    # do not see replica positions), while commits wait for it.
    said = last.position if last is not None else None
    seen = [r.flushed for r in local.replicas if r.sync and r.flushed is not None]
    if local.sync_replication and said is not None:
        seen.append(said)
    for pos in seen:
        if obs.covers(pos, state.clear_pos):
            acts = [ArbiterUnmark(state.epoch)] if p.fallback == "arbiter" else []
            acts.append(notify("sync_restored"))
            return decision(
                replace(state, sync_mark=None, clear_pos=None),
                "primary-sync-restored",
                f"{p.peer} has caught up: replica-not-in-sync mark cleared",
                acts,
                lease,
            )
    return None


# ------------------------------------------------------ handover and fenced


def handover_rules(p: Params, state: NodeState, obs: Observation) -> Decision:
    since = state.since if state.since is not None else obs.now
    if obs.now - since > p.handover_timeout:
        return decision(
            fenced_state(state, obs),
            "handover-timeout",
            f"{p.peer} did not take over within {p.handover_timeout:g} s: fenced, "
            "resuming only once the peer confirms",
            [*stop_serving(obs), notify("failover_refused", "handover timed out")],
        )
    return decision(
        state,
        "handover-wait",
        f"handing over to {p.peer}",
        stop_serving(obs) if (obs.vip_held or obs.local.writable) else (),
    )


def fenced_rules(p: Params, state: NodeState, obs: Observation) -> Decision:
    if state.needs_resync:
        up = can_rejoin(p, state, obs)
        if up is not None:
            return rejoin_decision(p, state, obs, up, "rejoin-auto")
        return decision(
            state,
            "fenced-wait",
            "fenced, needs a resync"
            + (
                " (automatic rejoin is off: run dbha resync)"
                if not p.auto_rejoin
                else " (maintenance is on: run dbha resync)"
                if state.maintenance or (obs.peer.last is not None and obs.peer.last.maintenance)
                else ""
            ),
            stop_serving(obs) if (obs.vip_held or obs.local.writable) else (),
        )
    last = obs.peer.last
    if (
        state.db_fails >= PROBE_FALL
        and last is not None
        and not obs.peer.silent
        and last.eligible
        and last.epoch == state.epoch
        and not state.maintenance
        and not last.maintenance
        and state.sync_mark is None
    ):
        # Our database is gone (e.g. the keeper killed it while it hung): this node
        # cannot resume, so let the replica take over.
        return decision(
            replace(state, role=NodeRole.HANDOVER, since=obs.now, switching=False),
            "fenced-db-failed",
            f"fenced, and the local database does not answer: handing over to {p.peer}",
            [notify("failover_started", "local database failed while fenced")],
        )
    why = _resume_blocker(p, state, obs)
    if why is None:
        lease = lease_until(p, obs)
        acts: list[Action] = [UNFENCE]
        if not obs.vip_held:
            acts.append(ACQUIRE_VIP)
        acts.append(notify("unfenced", "peer confirmed"))
        return decision(
            replace(state, role=NodeRole.PRIMARY, since=obs.now, fenced_at=None),
            "fenced-resume",
            f"{p.peer} hears us and has not taken over: resuming as primary",
            acts,
            lease,
        )
    return decision(
        state,
        "fenced-wait",
        f"fenced: {why}",
        stop_serving(obs) if (obs.vip_held or obs.local.writable) else (),
    )


def _resume_blocker(p: Params, state: NodeState, obs: Observation) -> str | None:
    peer = obs.peer
    last = peer.last
    if last is None or peer.silent:
        return f"{p.peer} is not heard"
    if last.db_writable or last.role not in (NodeRole.REPLICA, NodeRole.FENCED):
        return f"{p.peer} is {last.role.value}"
    if last.epoch > state.epoch or (
        last.epoch == state.epoch and last.role is NodeRole.FENCED and not last.needs_resync
    ):
        return f"{p.peer} might serve at epoch {last.epoch}"
    echo = peer.echo_sent_at
    if echo is None or state.fenced_at is None or echo <= state.fenced_at:
        return f"{p.peer} has not yet heard this node since it was fenced"
    lease = lease_until(p, obs)
    if lease is None or obs.now >= lease:
        return "no lease"
    local = obs.local
    if not local.reachable or local.role is not Role.PRIMARY:
        return "the local database is not an answering primary"
    if not obs.checks_ok:
        return "a check script fails"
    if not obs.keeper_ok:
        return "the lease keeper is not running"
    return None
