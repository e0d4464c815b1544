"""The sources of ``dbha check``'s :class:`~dbha.monitor.nagios.View`. Pure.

- a running supervisor's status (its control socket's ``status`` reply), read
  by :func:`view_from_status`, a parser of outside input that never raises;
- a cron round's own observation and decision (:func:`view_from_round`).
"""

from __future__ import annotations

from collections.abc import Mapping

from dbha.config import Config
from dbha.config.digest import mismatch_text
from dbha.core.model import DbStatus, Decision, NodeState, Notify, Observation, RunSafetyCheck
from dbha.monitor.nagios import MAX_TEXT, DbView, Limits, PeerInfo, View, clip


def _get(d: Mapping[str, object], key: str) -> object:
    return d.get(key) if isinstance(d, Mapping) else None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: object, default: str = "") -> str:
    return clip(value, MAX_TEXT) if isinstance(value, str) else default


def _map(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def view_from_status(status: object, limits: Limits) -> View:
    """The view of a running supervisor's ``status`` reply. Never raises: a field
    that is missing or of the wrong type counts as unknown."""
    st = _map(status)
    db_d = st.get("database")
    db: DbView | None = None
    if isinstance(db_d, Mapping):
        lag_key = "lag_bytes" if limits.unit == "bytes" else "lag_transactions"
        db = DbView(
            reachable=_bool(db_d.get("reachable")) is True,
            role=_str(db_d.get("role"), "unknown"),
            writable=_bool(db_d.get("writable")) is True,
            error=_str(db_d.get("error")) or None,
            lag_units=_int(db_d.get(lag_key)),
            lag_seconds=_num(db_d.get("lag_seconds")),
            streaming=_bool(db_d.get("streaming")),
            sync_replication=_bool(db_d.get("sync_replication")),
            sync_waiting=_int(db_d.get("sync_waiting")),
            sync_standbys=_int(db_d.get("sync_standbys")),
            blocked_for=_num(db_d.get("blocked_for")),
            sync_wait_longest=_num(db_d.get("sync_wait_longest")),
        )
    paths = tuple(
        (str(name)[:64], _bool(_get(_map(p), "up")) is True)
        for name, p in _map(st.get("paths")).items()
    )
    peer_d = st.get("peer_state")
    peer = None
    if isinstance(peer_d, Mapping):
        peer = PeerInfo(
            role=_str(peer_d.get("role"), "unknown"),
            epoch=_int(peer_d.get("epoch")),
            db_reachable=_bool(peer_d.get("db_reachable")),
            db_writable=_bool(peer_d.get("db_writable")),
            maintenance=_bool(peer_d.get("maintenance")) is True,
            needs_resync=_bool(peer_d.get("needs_resync")) is True,
            eligible=_bool(peer_d.get("eligible")),
        )
    safety = st.get("safety")
    verdict_known = "safety" in st
    verdict = _str(_get(_map(safety), "verdict")) or (_str(safety) if safety else "") or None
    decision = _map(st.get("decision"))
    checks = _map(st.get("checks"))
    keeper = _bool(st.get("keeper_alive"))
    return View(
        service=_str(st.get("service"), "?"),
        node=_str(st.get("node"), "?"),
        peer_name=_str(st.get("peer"), "peer"),
        role=_str(st.get("role"), "unknown"),
        epoch=_int(st.get("epoch")),
        needs_resync=_bool(st.get("needs_resync")) is True,
        maintenance=_bool(st.get("maintenance")) is True,
        vip_held=_bool(_get(_map(st.get("vip")), "held_here")),
        db=db,
        paths=paths,
        peer=peer,
        verdict=verdict,
        verdict_known=verdict_known,
        keeper_alive=keeper,
        checks_failing=tuple(str(n)[:64] for n, ok in checks.items() if ok is False),
        rule=_str(decision.get("rule")),
        reason=_str(decision.get("reason")),
        alerts=tuple(_str(t) for t in _map(st.get("alerts")).values() if isinstance(t, str)),
        settings_differ=mismatch_text(st.get("settings")),
    )


def db_view(local: DbStatus) -> DbView:
    """The view of one probe of the local database."""
    lag = local.lag_bytes if local.lag_bytes is not None else local.lag_transactions
    waiting = getattr(local, "sync_waiting", None)  # reported by newer drivers only
    return DbView(
        reachable=local.reachable,
        role=local.role.value,
        writable=local.writable,
        error=local.error,
        lag_units=lag,
        lag_seconds=local.lag_seconds,
        streaming=local.streaming if local.role.value == "replica" else None,
        sync_replication=local.sync_replication if local.role.value == "primary" else None,
        sync_waiting=waiting if isinstance(waiting, int) else None,
        sync_standbys=local.sync_standbys if local.role.value == "primary" else None,
        sync_wait_longest=local.sync_wait_longest,
    )


def acting(d: Decision) -> tuple[str, ...]:
    """The names of a decision's actions that change something (not the safety
    check request nor the notifications)."""
    return tuple(type(a).__name__ for a in d.actions if not isinstance(a, RunSafetyCheck | Notify))


def view_from_round(
    cfg: Config,
    state: NodeState,
    obs: Observation,
    d: Decision,
    *,
    paths: tuple[tuple[str, bool], ...],
    local: DbStatus | None = None,
    vip_held: bool | None = None,
    checks_failing: tuple[str, ...] = (),
    errors: tuple[str, ...] = (),
) -> View:
    """The view of a cron round: ``state`` is the node's state after the round
    (before it when it only reported), ``obs`` what it observed, ``d`` what the
    core decided; ``local``/``vip_held`` are fresher looks taken after acting."""
    last = obs.peer.last
    peer = (
        None
        if last is None
        else PeerInfo(
            role=last.role.value,
            epoch=last.epoch,
            db_reachable=last.db_reachable,
            db_writable=last.db_writable,
            maintenance=last.maintenance,
            needs_resync=last.needs_resync,
            eligible=last.eligible,
        )
    )
    safety = obs.safety
    heard = obs.peer.heard_at
    verdict = (
        safety.verdict.value
        if safety is not None and (heard is None or safety.at >= heard)
        else None
    )
    return View(
        service=cfg.service.id,
        node=cfg.node.name,
        peer_name=cfg.peer.name,
        role=state.role.value,
        epoch=state.epoch,
        needs_resync=state.needs_resync,
        maintenance=state.maintenance,
        vip_held=obs.vip_held if vip_held is None else vip_held,
        db=db_view(obs.local if local is None else local),
        paths=paths,
        peer=peer,
        verdict=verdict,
        keeper_alive=None,
        checks_failing=checks_failing,
        rule=d.rule,
        reason=d.reason,
        errors=errors,
    )
