"""A config's numbers for the decision core (:class:`dbha.core.params.Params`)."""

from __future__ import annotations

from dbha.config.model import Config
from dbha.core.params import (
    FALLBACK_DEADLINES,
    FALLBACK_WINDOW_SHARE,
    LEASE_FRACTION,
    QUIET_INTERVALS,
    Params,
)


def params(cfg: Config, self_fence_deadline_ms: int | None = None) -> Params:
    """What decide() needs of ``cfg``. ``self_fence_deadline_ms`` replaces the
    config's deadline (a cron round decides with a longer one:
    :func:`dbha.monitor.memory.cron_params`)."""
    hb = cfg.heartbeat
    deadline_ms = cfg.fence.self_fence_deadline_ms
    d = (deadline_ms if self_fence_deadline_ms is None else self_fence_deadline_ms) / 1000.0
    interval = hb.interval_ms / 1000.0
    rep = cfg.replication
    sync = rep.mode == "sync"
    wait = FALLBACK_DEADLINES * d
    return Params(
        deadline=d,
        lease=LEASE_FRACTION * d,
        quiet=QUIET_INTERVALS * interval,
        safety_every=max(interval, cfg.safety.timeout_ms / 1000.0),
        safety_timeout=cfg.safety.timeout_ms / 1000.0,
        fallback_wait=wait,
        fallback_window=wait * FALLBACK_WINDOW_SHARE,
        handover_timeout=3 * d + 2 * hb.peer_silent_after_ms / 1000.0,
        lag_units=rep.max_lag_transactions
        if cfg.database.engine in ("mariadb", "mysql")
        else rep.max_lag_bytes,
        lag_seconds=rep.max_lag_seconds,
        sync=sync,
        fallback=rep.sync_fallback if sync else "strict",
        auto_rejoin=cfg.service.auto_rejoin,
        me=cfg.node.name,
        peer=cfg.peer.name,
    )
