"""What ``dbha status`` shows of this node: the supervisor's latest observation,
decision and state as one JSON-able dict (the local control socket's and the peer
door's ``status`` answer, and what ``dbha check`` reads)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbha.beat import announce as adapt
from dbha.core.model import Role

if TYPE_CHECKING:
    from dbha.beat.service import HeartbeatService
    from dbha.config import Config
    from dbha.core.model import Decision, NodeState, Observation
    from dbha.node.alerts import Alerts
    from dbha.node.checkscripts import CheckRunner


def status(
    cfg: Config,
    heartbeat: HeartbeatService,
    checks: CheckRunner,
    alerts: Alerts,
    *,
    state: NodeState,
    obs: Observation | None,
    decision: Decision | None,
    blocked_since: float | None,
    ticking_every: float,
    keeper_alive: bool,
    summary: str,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """This node as the loop last saw it (``blocked_since``: since when, monotonic,
    the primary's commits wait with no synchronous standby; None: they do not)."""
    d, st = decision, state
    snap = heartbeat.snapshot()
    local = obs.local if obs else None
    return {
        "service": cfg.service.id,
        "node": cfg.node.name,
        "peer": cfg.peer.name,
        "role": st.role.value,
        "epoch": st.epoch,
        "needs_resync": st.needs_resync,
        "sync_mark": st.sync_mark,
        "maintenance": st.maintenance,
        "last_failover": st.last_failover,
        # "async", or the synchronous mode's answer to a gone replica
        "sync_mode": cfg.replication.sync_fallback if cfg.replication.mode == "sync" else "async",
        "vip": {
            "address": str(cfg.vip.address),
            "held_here": obs.vip_held if obs else None,
        },
        "database": None
        if local is None
        else {
            "reachable": local.reachable,
            "role": local.role.value,
            "writable": local.writable,
            "position": adapt.position_text(local.position),
            "lag_bytes": local.lag_bytes,
            "lag_transactions": local.lag_transactions,
            "lag_seconds": local.lag_seconds,
            "streaming": local.streaming,
            "sync_replication": local.sync_replication,
            "sync_waiting": local.sync_waiting,
            "sync_standbys": local.sync_standbys if local.role is Role.PRIMARY else None,
            "sync_wait_longest": local.sync_wait_longest,
            # how long synchronous commit has been on with no standby to answer
            "blocked_for": None
            if blocked_since is None or obs is None
            else round(obs.now - blocked_since, 3),
            "sync_ready": local.sync_ready,
            "replay_paused": local.replay_paused,
            "error": local.error,
            # how old the probe this is from is (a probe runs every
            # database.probe_interval_ms; None: no probe has answered yet)
            "probed_age_s": None if obs is None else _age(snap.at, obs.probe_at),
        },
        "peer_state": None
        if obs is None or obs.peer.last is None
        else {
            "role": obs.peer.last.role.value,
            "epoch": obs.peer.last.epoch,
            "db_reachable": obs.peer.last.db_reachable,
            "db_writable": obs.peer.last.db_writable,
            "maintenance": obs.peer.last.maintenance,
            "needs_resync": obs.peer.last.needs_resync,
            "eligible": obs.peer.last.eligible,
        },
        "paths": {
            p.name: {
                "up": p.up,
                # seconds since this path last carried an admitted beat (None: never)
                "last_beat_age_s": _age(snap.at, p.last_heard),
                "changes": p.changes,
                "changed_age_s": _age(snap.at, p.since),
            }
            for p in snap.paths
        },
        "peer_heard_age_s": _age(snap.at, snap.last_beat_at),
        # the newest safety verdict taken since the peer was last heard (None: none)
        "safety": None if obs is None else {"verdict": _verdict(obs)},
        "heartbeat_counters": snap.counters.as_dict(),
        "checks": {c.name: c.passing for c in checks.states()},
        "decision": None if d is None else {"rule": d.rule, "reason": d.reason},
        # the loop's current period: the steady one while nothing happens
        "tick_every_ms": round(ticking_every * 1000),
        "keeper_alive": keeper_alive,
        "alerts": alerts.texts(),
        "summary": summary,
        # the pair's shared settings: digests here and in the peer's beats, the keys
        # that differ (dbha.node.settings), and this node's values by key
        "settings": settings,
    }


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(now - then, 0.0), 3)


def _verdict(obs: Observation) -> str | None:
    s, heard = obs.safety, obs.peer.heard_at
    if s is None or (heard is not None and s.at < heard):
        return None
    return s.verdict.value
