"""The decision core: ``decide(state, observation, config) -> Decision``.

Pure: no I/O, no clock, no randomness, no logging. Every decision names the
row of :data:`dbha.core.transitions.TABLE` it follows (a test checks that it only
ever follows rows of the table), and carries one human reason.

The rules that keep the pair safe, in short (docs/state-machine.md has them all):

**The lease.** A primary may hold a writable database and the VIP only until
its lease ends, and an independent keeper (the fence timer) enforces that
even when this loop hangs. The lease is renewed by evidence that the peer
cannot promote before it ends:

- the peer's newest beat echoes one of ours, sent at ``s``: the peer heard us
  at ``s`` or later, and a replica waits the self-fence deadline ``D`` after
  the last beat it heard before it promotes, so the lease runs to
  ``s + LEASE_FRACTION * D`` (the rest of ``D`` covers the keeper's own
  reaction and clock-rate differences);
- a safety check *started after the newest beat heard* that reached the
  gateway and found the peer's database dead (or alive with broken
  heartbeats): the lease runs to the check's start plus the same amount.
  The one partition two nodes cannot judge (both reach the gateway, not each
  other) passes this test on both sides; docs/state-machine.md says what
  that costs in each replication mode.

**Unilateral promotion** (a replica whose primary vanished) needs all of:
(a) every path silent, (b) a safety verdict ``peer_dead`` taken after the
last beat, (c) ``D`` elapsed since the last beat, (d) the data: in
asynchronous mode within the lag bound; in synchronous mode no "replica not
in sync" mark announced, plus the fallback window (``fallback``) or the
arbiter's record (``arbiter``); (e) maintenance off on both nodes. The new
epoch is persisted before the database is promoted.

**Epochs.** A node that sees a higher epoch than its own never serves again
until it is resynced; no node takes the role back by itself (no preemption).
"""

from __future__ import annotations

from dataclasses import replace

from dbha.core.decide.requests import request_rules
from dbha.core.decide.roles import (
    fenced_rules,
    handover_rules,
    primary_rules,
    promoting_rules,
    replica_rules,
)
from dbha.core.decide.rules import (
    ASK_SAFETY,
    PROBE_FALL,
    SERVING,
    announce,
    dead_since,
    decision,
    eligible,
    fenced_state,
    lease_until,
    notify,
    replica_present,
    stop_serving,
    wants_safety,
)
from dbha.core.model import (
    FENCE,
    RELEASE_VIP,
    RUN_SAFETY_CHECK,
    Announce,
    Decision,
    NodeRole,
    NodeState,
    Observation,
    Rejoin,
    Role,
)
from dbha.core.params import Params

__all__ = [
    "PROBE_FALL",
    "SAFETY_NOTE",
    "announce",
    "decide",
    "eligible",
    "lease_until",
]

# Added to a decision's reason when the core also asks for a safety check.
SAFETY_NOTE = "; peer quiet: safety check"

# ------------------------------------------------------------------- decide


def decide(state: NodeState, obs: Observation, p: Params) -> Decision:
    """The next state and actions for ``state`` given ``obs``, decided with the
    numbers ``p`` (:func:`dbha.config.params.params`). Pure."""
    if not state.started:
        return _startup(state, obs)
    # Bookkeeping that every rule below sees: probe failures, eligibility. A failed
    # probe counts once, however many ticks see it (probes may be rarer than ticks).
    fails, failed_at = state.db_fails, state.db_failed_at
    if obs.local.reachable:
        fails = 0
    elif obs.probe_at is None or obs.probe_at != failed_at:
        fails, failed_at = fails + 1, obs.probe_at
    elig = eligible(state, obs)
    dead = dead_since(state, obs)
    # A marked primary: since when its replica has been present again (catching up).
    back = (
        (obs.now if state.back_since is None else state.back_since)
        if state.sync_mark is not None
        and state.role is NodeRole.PRIMARY
        and replica_present(state, obs)
        else None
    )
    if (
        fails != state.db_fails
        or failed_at != state.db_failed_at
        or elig != (state.eligible_since is not None)
        or dead != state.dead_since
        or back != state.back_since
    ):
        state = replace(
            state,
            db_fails=fails,
            db_failed_at=failed_at,
            dead_since=dead,
            eligible_since=(
                (obs.now if state.eligible_since is None else state.eligible_since)
                if elig
                else None
            ),
            back_since=back,
        )
    last = obs.peer.last
    if last is not None and not state.needs_resync:
        d = _epochs(p, state, obs, last)
        if d is not None:
            return d
    role = state.role
    if obs.request is not None:
        d = request_rules(p, state, obs)
    elif role is NodeRole.PRIMARY:
        d = primary_rules(p, state, obs)
    elif role is NodeRole.REPLICA:
        d = replica_rules(p, state, obs)
    elif role is NodeRole.FENCED:
        d = fenced_rules(p, state, obs)
    elif role is NodeRole.PROMOTING:
        d = promoting_rules(p, state, obs)
    else:
        return handover_rules(p, state, obs)
    nxt = d.next_state
    if d.lease_until is None and nxt.role in SERVING:
        d = d._replace(lease_until=lease_until(p, obs))
    if nxt.role in ASK_SAFETY and wants_safety(p, nxt, obs):
        # While the peer is quiet, whatever else happens, keep asking for the
        # safety check: it may renew a primary's lease and it gates a promotion.
        return Decision(
            replace(nxt, safety_asked_at=obs.now),
            (RUN_SAFETY_CHECK, *d.actions),  # first: a later failure must not skip it
            d.rule,
            d.reason + SAFETY_NOTE,
            d.lease_until,
            d.answer,
            d.wake_at,
        )
    return d


def _startup(state: NodeState, obs: Observation) -> Decision:
    """The first tick after a start: nothing serves until the peer confirms it."""
    role = state.role
    base = replace(state, started=True, since=obs.now)
    if role in (NodeRole.PRIMARY, NodeRole.HANDOVER):
        acts = stop_serving(obs)
        return decision(
            fenced_state(base, obs),
            f"start-{role.value}",
            f"started as {role.value} (epoch {state.epoch}): fenced, without the VIP, "
            "until the peer confirms this node may serve",
            acts,
        )
    acts = [RELEASE_VIP] if obs.vip_held else []
    if role is not NodeRole.PROMOTING and obs.local.writable:
        acts.append(FENCE)
    if role is NodeRole.FENCED:
        base = replace(base, fenced_at=obs.now)
    return decision(
        base,
        f"start-{role.value}",
        f"started as {role.value} (epoch {state.epoch})"
        + (" needing a resync" if state.needs_resync else ""),
        acts,
    )


def _epochs(p: Params, state: NodeState, obs: Observation, last: Announce) -> Decision | None:
    """A newer epoch (or a tie between two primaries) beats everything else."""
    role = state.role
    if last.epoch > state.epoch:
        if role is NodeRole.REPLICA:
            local = obs.local
            if (
                last.role is NodeRole.PRIMARY
                and local.reachable
                and local.role is Role.REPLICA
                and local.streaming
                and local.upstream == p.peer
            ):
                return decision(
                    replace(state, epoch=last.epoch),
                    "newer-epoch-adopt",
                    f"the peer is primary at epoch {last.epoch} and this replica streams "
                    "from it: adopting the epoch",
                )
            return decision(
                replace(state, needs_resync=True, eligible_since=None),
                "newer-epoch-replica",
                f"the peer has epoch {last.epoch} > {state.epoch} and this replica does "
                "not stream from it: it needs a resync",
                [notify("resync_needed", f"peer epoch {last.epoch}")],
            )
        if role is NodeRole.HANDOVER and state.switching and last.role is NodeRole.PRIMARY:
            return decision(
                replace(
                    state,
                    role=NodeRole.REPLICA,
                    epoch=last.epoch,
                    since=obs.now,
                    switching=False,
                    fenced_at=None,
                    sync_mark=None,
                    clear_pos=None,
                ),
                "switchover-follow",
                f"the peer took over at epoch {last.epoch}: following it as a replica",
                [Rejoin(p.peer), notify("switchover_done")],
            )
        return decision(
            # The mark is kept: it records that this node acknowledged commits alone in
            # its epoch, which its resync must know (dbha.db.base.DatabaseDriver.rejoin).
            fenced_state(state, obs, needs_resync=True),
            "newer-epoch",
            f"the peer has epoch {last.epoch} > {state.epoch}: this node stops serving "
            "and needs a resync",
            [*stop_serving(obs), notify("resync_needed", f"peer epoch {last.epoch}")],
        )
    if last.epoch == state.epoch and role in SERVING and last.role in SERVING and p.me > p.peer:
        return decision(
            fenced_state(state, obs, needs_resync=True),
            "epoch-tie",
            f"both nodes serve at epoch {state.epoch}: {p.me} yields to {p.peer} "
            "and needs a resync",
            [*stop_serving(obs), notify("resync_needed", "epoch tie")],
        )
    return None
