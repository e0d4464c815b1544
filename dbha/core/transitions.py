"""The legal transitions of a node, written down once.

Each :class:`Row` says: from which roles, under which condition, to which role,
with which actions (in order; ``?`` marks an action that appears only when
needed, e.g. ``ReleaseVip?`` only when the VIP is held), and why.
:func:`dbha.core.decide.decide` names the row of every decision it makes
(``Decision.rule``); :func:`check` verifies that a decision follows its row,
and the tests run it on every decision they see, the simulation's included.

One action is implicit in every row whose target is primary, promoting,
replica or fenced: while the peer is quiet, a leading ``RunSafetyCheck`` (see
:data:`AMBIENT`).

``docs/state-machine.md`` is rendered from this table (:mod:`dbha.core.tablepage`);
``scripts/state-machine-doc`` rewrites its generated part, and a test checks
that it is up to date.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbha.core.model import (
    AcquireVip,
    Action,
    ArbiterMark,
    ArbiterPromote,
    ArbiterUnmark,
    Decision,
    Fence,
    FencePeer,
    NodeRole,
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

R = NodeRole
ALL = (R.REPLICA, R.PROMOTING, R.PRIMARY, R.HANDOVER, R.FENCED)
SAME = None  # target of rows that keep the role as it is

Step = tuple[type[Action], bool]  # (action class, optional)

# A leading RunSafetyCheck is allowed on any row whose target is one of these.
AMBIENT: tuple[type[Action], tuple[NodeRole, ...]] = (
    RunSafetyCheck,
    (R.PRIMARY, R.PROMOTING, R.REPLICA, R.FENCED),
)


def _steps(spec: str) -> tuple[Step, ...]:
    """``"ReleaseVip? Fence Notify"`` -> ((ReleaseVip, True), (Fence, False), (Notify, False))."""
    out = []
    for word in spec.split():
        optional = word.endswith("?")
        out.append((_ACTIONS[word.rstrip("?")], optional))
    return tuple(out)


_ACTIONS: dict[str, type[Action]] = {
    c.__name__: c
    for c in (
        AcquireVip,
        ArbiterMark,
        ArbiterPromote,
        ArbiterUnmark,
        Fence,
        FencePeer,
        Notify,
        PersistState,
        PrePromote,
        PrepareReplica,
        Promote,
        Rejoin,
        ReleaseVip,
        RunSafetyCheck,
        SetSynchronous,
        Unfence,
        WaitReplayed,
    )
}


@dataclass(frozen=True, slots=True)
class Row:
    rule: str
    sources: tuple[NodeRole, ...]
    condition: str
    target: NodeRole | None  # None: the role does not change
    actions: tuple[Step, ...]
    reason: str
    # The role persisted by a PersistState action before the risky ones (the new
    # epoch before a promotion): where the node stays if a later action fails.
    via: NodeRole | None = None

    def target_for(self, source: NodeRole) -> NodeRole:
        return source if self.target is None else self.target

    def actions_text(self) -> str:
        return " → ".join(c.__name__ + ("?" if opt else "") for c, opt in self.actions) or "—"


def _row(
    rule: str,
    sources: NodeRole | tuple[NodeRole, ...],
    condition: str,
    target: NodeRole | None,
    actions: str,
    reason: str,
) -> Row:
    src = sources if isinstance(sources, tuple) else (sources,)
    via = R.PROMOTING if target is R.PRIMARY and "PersistState" in actions.split() else None
    return Row(rule, src, condition, target, _steps(actions), reason, via)


_PROMOTE_HANDOVER = (
    "PrePromote ArbiterPromote? PersistState Notify WaitReplayed Promote SetSynchronous? "
    "AcquireVip Notify"
)
_PROMOTE_ALONE = (
    "PrePromote ArbiterPromote? PersistState Notify FencePeer WaitReplayed Promote "
    "SetSynchronous? AcquireVip Notify"
)
_PROMOTE_FORCED = (
    "PrePromote ArbiterPromote? PersistState Notify FencePeer? WaitReplayed Promote "
    "SetSynchronous? AcquireVip Notify"
)
# Stop serving: a database that answers is fenced before the VIP goes (its
# sessions end where their clients still hear them); one that does not answer
# loses the VIP first, then gets a best-effort fence (decide.base._stop_serving).
_STOP = "Fence? ReleaseVip? Fence?"

TABLE: tuple[Row, ...] = (
    # ---- start-up: nothing serves until the peer confirms it (LAB-NOTES: a
    # restarted host may still carry the VIP)
    _row(
        "start-primary",
        R.PRIMARY,
        "first tick after a start",
        R.FENCED,
        _STOP,
        "a restarted primary cannot know whether its peer took over meanwhile",
    ),
    _row(
        "start-handover",
        R.HANDOVER,
        "first tick after a start",
        R.FENCED,
        _STOP,
        "an interrupted handover is finished by the peer or resumed by confirmation",
    ),
    _row(
        "start-promoting",
        R.PROMOTING,
        "first tick after a start",
        SAME,
        "ReleaseVip?",
        "the new epoch is persisted: the promotion is finished, not undone",
    ),
    _row(
        "start-replica",
        R.REPLICA,
        "first tick after a start",
        SAME,
        _STOP,
        "a replica never holds the VIP nor a writable database",
    ),
    _row(
        "start-fenced",
        R.FENCED,
        "first tick after a start",
        SAME,
        _STOP,
        "a fenced node never holds the VIP nor a writable database",
    ),
    # ---- epochs beat everything
    _row(
        "newer-epoch",
        (R.PRIMARY, R.PROMOTING, R.HANDOVER, R.FENCED),
        "the peer announces a higher epoch",
        R.FENCED,
        _STOP + " Notify",
        "someone promoted since: this node never serves again until resynced",
    ),
    _row(
        "switchover-follow",
        R.HANDOVER,
        "planned switchover, and the peer is primary at a higher epoch",
        R.REPLICA,
        "Rejoin Notify",
        "the switchover completed: the old primary follows the new one",
    ),
    _row(
        "newer-epoch-adopt",
        R.REPLICA,
        "the peer is primary at a higher epoch and the local replica streams from it",
        SAME,
        "",
        "the replica already follows the new timeline",
    ),
    _row(
        "newer-epoch-replica",
        R.REPLICA,
        "the peer announces a higher epoch, the local replica does not stream from it",
        SAME,
        "Notify",
        "its data may be on an old timeline: resync before it may serve",
    ),
    _row(
        "epoch-tie",
        (R.PRIMARY, R.PROMOTING),
        "both nodes serve at the same epoch, and this node's name sorts after the peer's",
        R.FENCED,
        _STOP + " Notify",
        "a deterministic tie-break; cannot happen without two simultaneous forced failovers",
    ),
    # ---- operator requests
    _row(
        "maintenance",
        ALL,
        "maintenance on/off requested",
        SAME,
        "",
        "maintenance pauses automatic failover on both nodes",
    ),
    _row(
        "switchover-start",
        R.PRIMARY,
        "switchover requested; the peer is an eligible replica at our epoch, its database "
        "answers; no mark; maintenance off on both and the peer within the lag bound "
        "(or --force)",
        R.HANDOVER,
        "Notify Fence ReleaseVip?",
        "the planned switchover: read-only first, the replica takes over once it has all",
    ),
    _row(
        "switchover-dry-run",
        R.PRIMARY,
        "switchover --dry-run requested; every condition of switchover-start holds",
        SAME,
        "",
        "changes nothing; the answer says who would hand over to whom, and the lag",
    ),
    _row(
        "failover-forced",
        (R.REPLICA, R.FENCED),
        "failover requested; the peer silent as for failover-promote (a)-(c), or heard "
        "not serving and unable to resume; data checks pass (or --force)",
        R.PRIMARY,
        _PROMOTE_FORCED,
        "the operator takes responsibility for what --force skips",
    ),
    _row(
        "resync",
        (R.REPLICA, R.FENCED),
        "resync requested; the peer is a heard primary",
        R.REPLICA,
        _STOP + " Rejoin Notify",
        "rejoin through the driver (rewind/clone)",
    ),
    _row(
        "sync-relax",
        R.PRIMARY,
        "sync relax requested (sync mode, no mark); the replica silent and found dead, or "
        "heard needing a resync or not eligible (or --force)",
        SAME,
        "PersistState SetSynchronous Notify",
        "the operator accepts asynchronous commits until the replica is back and caught up",
    ),
    _row(
        "request-refused",
        ALL,
        "a request whose conditions do not hold",
        SAME,
        "Notify?",
        "the answer says which condition failed",
    ),
    # ---- replica
    _row(
        "replica-writable-db",
        R.REPLICA,
        "the local database accepts writes",
        SAME,
        "Fence Notify",
        "a replica's database must never accept writes",
    ),
    _row(
        "rejoin-auto",
        (R.REPLICA, R.FENCED),
        "needs a resync, auto_rejoin on, the peer is a heard primary, maintenance off on both",
        R.REPLICA,
        _STOP + " Rejoin Notify",
        "automatic rejoin, only when configured",
    ),
    _row(
        "replica-resync-wait",
        R.REPLICA,
        "needs a resync and cannot rejoin now",
        SAME,
        "",
        "not eligible for promotion until resynced",
    ),
    _row(
        "handover-promote",
        R.REPLICA,
        "the peer announces handover at our epoch; we have its last position (or, its "
        "database being dead, the data checks pass)",
        R.PRIMARY,
        _PROMOTE_HANDOVER,
        "the primary fenced itself and gave the role away",
    ),
    _row(
        "handover-not-ready",
        R.REPLICA,
        "the peer hands over but a condition is missing",
        SAME,
        "",
        "e.g. still receiving its last commits",
    ),
    _row(
        "failover-promote",
        R.REPLICA,
        "(a) every path silent, (b) safety peer_dead after the last beat, (c) the "
        "self-fence deadline passed since the last beat and the peer's database "
        "unreachable for the deadline plus the safety timeout, (d) data within bounds, "
        "(e) maintenance off",
        R.PRIMARY,
        _PROMOTE_ALONE,
        "the primary is dead or has fenced itself",
    ),
    _row(
        "failover-blocked",
        R.REPLICA,
        "the peer is silent but a condition is missing",
        SAME,
        "",
        "the reason names the missing condition",
    ),
    _row(
        "replica-prepare",
        R.REPLICA,
        "sync mode, the peer heard, and the local replica does not acknowledge "
        "synchronous commits (asked at most every 5 s)",
        SAME,
        "PrepareReplica Notify",
        "a pair built without dbha: its standby names itself otherwise, or semi-sync is "
        "off on the replica side, so the primary's commits would wait for nobody",
    ),
    _row("replica-follow", R.REPLICA, "the peer is heard", SAME, "", "steady state"),
    # ---- promoting
    _row(
        "promoting-done",
        R.PROMOTING,
        "the local database is a writable primary",
        R.PRIMARY,
        "AcquireVip? Notify",
        "finish: take the VIP",
    ),
    _row(
        "promoting-retry",
        R.PROMOTING,
        "the database is not promoted yet; lease valid",
        R.PRIMARY,
        "WaitReplayed Promote SetSynchronous? AcquireVip? Notify",
        "retry the promotion (the epoch is already persisted)",
    ),
    _row(
        "promoting-wait", R.PROMOTING, "no lease yet", SAME, "", "take the VIP only under a lease"
    ),
    # ---- primary
    _row(
        "primary-isolated",
        R.PRIMARY,
        "safety verdict i_am_isolated taken after the last beat",
        R.FENCED,
        _STOP + " Notify",
        "the isolated node must stop serving within the deadline",
    ),
    _row(
        "primary-lease-lost",
        R.PRIMARY,
        "no evidence renews the lease",
        R.FENCED,
        _STOP + " Notify",
        "the peer may promote soon: stop serving first",
    ),
    _row(
        "primary-db-lost",
        R.PRIMARY,
        "the local database does not answer and the peer is quiet",
        R.FENCED,
        _STOP + " Notify",
        "the peer's safety check finds our database dead and may promote",
    ),
    _row(
        "primary-db-failed",
        R.PRIMARY,
        "the local database failed (probe fall count or a check script), the peer is an "
        "eligible replica, and no replica-not-in-sync mark",
        R.HANDOVER,
        _STOP + " Notify",
        "hand the role over rather than serve from a failed database",
    ),
    _row(
        "primary-db-failing",
        R.PRIMARY,
        "the local database fails (or is counting failures) and no one can take over (or "
        "the replica is marked not in sync)",
        SAME,
        "",
        "keep the role; the reason says why",
    ),
    _row(
        "primary-sync-fallback",
        R.PRIMARY,
        "sync mode (fallback/arbiter): the replica gone for three deadlines, or heard "
        "needing a resync; our safety check passes",
        SAME,
        "ArbiterMark? PersistState SetSynchronous Notify",
        "persist and announce the replica-not-in-sync mark before acknowledging alone",
    ),
    _row(
        "primary-sync-on",
        R.PRIMARY,
        "sync mode: no mark, or the replica back and streaming (or back for 30 s), and the "
        "database not synchronous",
        SAME,
        "SetSynchronous",
        "commits wait for the replica",
    ),
    _row(
        "primary-sync-catchup",
        R.PRIMARY,
        "marked, the replica back but not yet streaming (caught up), for less than 30 s",
        SAME,
        "",
        "commits would wait out its catch-up; the mark keeps it ineligible meanwhile",
    ),
    _row(
        "primary-sync-off",
        R.PRIMARY,
        "marked, the replica gone again, the database synchronous",
        SAME,
        "SetSynchronous",
        "the mark already protects the replica's eligibility",
    ),
    _row(
        "primary-sync-armed",
        R.PRIMARY,
        "marked, synchronous again",
        SAME,
        "",
        "remember the position the replica must reach",
    ),
    _row(
        "primary-sync-restored",
        R.PRIMARY,
        "marked, and a synchronous replica has flushed that position",
        SAME,
        "ArbiterUnmark? Notify",
        "clear the mark: the replica is eligible again",
    ),
    _row(
        "primary-db-fenced",
        R.PRIMARY,
        "the database answers as a fenced primary (keeper, peer or operator fenced it)",
        R.FENCED,
        _STOP + " Notify",
        "never undo someone else's fence: resume only through the peer's confirmation",
    ),
    _row(
        "primary-take-vip",
        R.PRIMARY,
        "lease valid, database writable, VIP not held",
        SAME,
        "AcquireVip",
        "clients find the primary through the VIP",
    ),
    _row("primary-serving", R.PRIMARY, "lease valid, nothing to change", SAME, "", "steady state"),
    # ---- handover
    _row(
        "handover-timeout",
        R.HANDOVER,
        "the peer did not take over in time",
        R.FENCED,
        _STOP + " Notify",
        "resume only through the peer's confirmation",
    ),
    _row(
        "handover-wait",
        R.HANDOVER,
        "waiting for the peer",
        SAME,
        _STOP,
        "fenced and without the VIP meanwhile",
    ),
    # ---- fenced
    _row(
        "fenced-db-failed",
        R.FENCED,
        "no resync needed, the local database failed (probe fall count), the peer is an "
        "eligible replica at our epoch, no replica-not-in-sync mark",
        R.HANDOVER,
        "Notify",
        "a fenced node whose database died cannot resume: let the replica take over",
    ),
    _row(
        "fenced-resume",
        R.FENCED,
        "no resync needed; the peer is a heard replica (or fenced needing a resync) at no "
        "higher epoch, has heard us since we fenced, the lease holds, our database answers",
        R.PRIMARY,
        "Unfence AcquireVip? Notify",
        "nobody took over: the rightful primary serves again",
    ),
    _row("fenced-wait", R.FENCED, "otherwise", SAME, _STOP, "no preemption"),
)

ROWS: dict[str, Row] = {r.rule: r for r in TABLE}
assert len(ROWS) == len(TABLE), "rule names must be unique"


def check(state: NodeState, decision: Decision) -> str | None:
    """None when ``decision`` (made in ``state``) follows its row, else what is wrong."""
    row = ROWS.get(decision.rule)
    if row is None:
        return f"rule {decision.rule!r} is not in the table"
    if state.role not in row.sources:
        return f"rule {row.rule}: from {state.role.value} is not allowed"
    target = row.target_for(state.role)
    if decision.next_state.role is not target:
        return f"rule {row.rule}: goes to {decision.next_state.role.value}, not {target.value}"
    acts = list(decision.actions)
    ambient, roles = AMBIENT
    if acts and isinstance(acts[0], ambient) and target in roles:
        acts.pop(0)
    i = 0
    for cls, optional in row.actions:
        if i < len(acts) and type(acts[i]) is cls:
            i += 1
        elif not optional:
            return f"rule {row.rule}: missing {cls.__name__} in {_names(decision.actions)}"
    if i != len(acts):
        return f"rule {row.rule}: unexpected {_names(decision.actions)}"
    for a in acts:
        if isinstance(a, PersistState) and a.state.role not in (row.via, target):
            return f"rule {row.rule}: persists role {a.state.role.value} on the way"
    return None


def _names(actions: tuple[Action, ...]) -> str:
    return "[" + ", ".join(type(a).__name__ for a in actions) + "]"
