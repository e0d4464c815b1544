"""What a supervisor carries over a restart of its own process, as pure rules.

A supervisor that crashes, is killed by its watchdog, or is restarted by a
package upgrade starts from its persisted state (role, epoch, marks), with
none of what it knew in memory. For most rules that is the safe direction: it
waits longer. One rule it would break for good: in ``sync_fallback =
"fallback"`` a replica whose primary died may promote only within the
fallback window after the newest beat of its own the primary echoed while it
announced itself eligible (the primary cannot have fallen back to
asynchronous commits before then). A replica restarted during that window
has never heard its dead primary since it started, so it would refuse for
ever, although the facts that made the promotion safe are still true.

So a replica remembers (:class:`Remembered`, kept by the shell in a file of
its state directory, stamped with the kernel's boot id) what the rule needs:
since when it has announced itself eligible, and its last view of the peer
(what the peer last said, when it was heard, the newest echo, the newest
eligible admission). After a restart in the same boot, :func:`resume` gives
the persisted state its eligibility back and :func:`peer_view` stands in for
the peer until the heartbeats hear it again. Everything else starts afresh,
the run of ``peer_dead`` verdicts above all: the peer's database must be
found unreachable for a whole deadline plus a safety timeout by checks this
process ran, since nothing was checked while it was down.

Why it is sound: every remembered fact is a statement about the past that a
restart does not change (the peer did admit a beat we sent while eligible at
that time; it did say this). Memory that is older than the truth only makes
the window end sooner. After a reboot the monotonic times mean nothing, and
the shell drops them (no memory: the old behaviour, which only waits longer).
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from dbha.core.model import NodeRole, NodeState, Observation, PeerView


class Remembered(NamedTuple):
    """A replica's memory across a restart of its supervisor (local monotonic times)."""

    role: NodeRole
    eligible_since: float | None
    peer: PeerView


def remember(state: NodeState, obs: Observation) -> Remembered | None:
    """What to keep after deciding ``state`` on ``obs`` (None: nothing worth
    keeping: not a replica, or the peer never heard)."""
    if state.role is not NodeRole.REPLICA or obs.peer.last is None:
        return None
    return Remembered(state.role, state.eligible_since, obs.peer)


def resume(state: NodeState, mem: Remembered | None) -> NodeState:
    """The persisted ``state`` of a supervisor that starts again, with what it may
    take back from ``mem``: a replica still a replica gets its eligibility back."""
    if mem is None or mem.role is not NodeRole.REPLICA or state.role is not NodeRole.REPLICA:
        return state
    if state.needs_resync or mem.eligible_since is None:
        return state
    return replace(state, eligible_since=mem.eligible_since)


def peer_view(now: PeerView, mem: Remembered | None) -> PeerView:
    """What to show the core of the peer: ``now`` once the heartbeats have heard it
    since the start; until then the remembered view, silent on every path."""
    if now.last is not None or mem is None or mem.peer.last is None:
        return now
    return mem.peer._replace(paths_up=0)
