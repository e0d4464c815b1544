"""What ``dbha check`` reports: one node's health as a Nagios status. Pure.

The check has two sources, turned into the same :class:`View`:

- a running supervisor's status (its control socket's ``status`` reply), read
  by :func:`view_from_status`, a parser of outside input that never raises;
- a cron round's own observation and decision (:func:`view_from_round`).

:func:`assess` maps a view to OK (0), WARNING (1) or CRITICAL (2), with every
finding named, worst first; :func:`line` is the one-line plain output
(``DBHA CRITICAL - pg on a: database unreachable (...)``).

CRITICAL is "clients cannot write through the VIP, or soon may not, or two
nodes may both take writes": the database unreachable, a primary without the
VIP (or the VIP on a node that does not serve), a writable database on a node
that does not serve, two primaries or a newer epoch while serving, no node
serving, the lease keeper dead, a resync needed while the peer does not serve,
the peer silent on every path with no safety verdict (or this node isolated),
commits waiting for a synchronous replica that is gone, an action that failed.
WARNING is "the pair serves but is not whole": a heartbeat path down, the peer
silent with a verdict that explains it, maintenance on, replica lag above half
the bound, a replica not streaming, a failing check script, a resync needed
while the peer serves, a handover or promotion under way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from dbha.config import Config
from dbha.core.model import (
    DbStatus,
    Decision,
    NodeRole,
    NodeState,
    Notify,
    Observation,
    RunSafetyCheck,
)

SERVING = ("primary", "promoting")
MAX_TEXT = 200  # one finding, as shown
MAX_LINE = 1000  # the whole plain output line


class Status(IntEnum):
    """The Nagios plugin convention: the exit code of ``dbha check``."""

    OK = 0
    WARNING = 1
    CRITICAL = 2


@dataclass(frozen=True, slots=True)
class DbView:
    """The local database as probed. ``lag_units``: bytes (PostgreSQL) or
    transactions (MySQL/MariaDB) behind the primary, as the replica reports it."""

    reachable: bool
    role: str = "unknown"  # "primary" | "replica" | "unknown"
    writable: bool = False
    error: str | None = None
    lag_units: int | None = None
    lag_seconds: float | None = None
    streaming: bool | None = None
    sync_replication: bool | None = None  # commits wait for the replica (None: not told)
    sync_waiting: int | None = None  # sessions waiting for it (None: not told)
    sync_standbys: int | None = None  # replicas acknowledging synchronously (None: not told)
    # How long synchronous commit has been on with no synchronous standby (None: not
    # told; a cron round looks once).
    blocked_for: float | None = None
    sync_wait_longest: float | None = None  # the oldest commit waiting for an ack (s)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the peer said about itself in its newest beat (None fields: not told)."""

    role: str
    epoch: int | None = None
    db_reachable: bool | None = None
    db_writable: bool | None = None
    maintenance: bool = False
    needs_resync: bool = False


@dataclass(frozen=True, slots=True)
class View:
    """Everything the check judges, whatever its source.

    ``verdict`` is the newest safety verdict while the peer is silent (None: no
    check gave one); ``verdict_known`` is False when the source does not report
    verdicts at all. ``keeper_alive`` is None where there is no lease keeper
    (cron rounds). ``errors`` are failures to report as CRITICAL (an action that
    failed, an unsafe mix of modes); ``alerts`` are warnings the source raised.
    """

    service: str
    node: str
    peer_name: str
    role: str  # a NodeRole value, or "unknown"
    epoch: int | None
    needs_resync: bool = False
    maintenance: bool = False
    vip_held: bool | None = None
    db: DbView | None = None
    paths: tuple[tuple[str, bool], ...] = ()
    peer: PeerInfo | None = None
    verdict: str | None = None
    verdict_known: bool = True
    keeper_alive: bool | None = None
    checks_failing: tuple[str, ...] = ()
    rule: str = ""
    reason: str = ""
    errors: tuple[str, ...] = ()
    alerts: tuple[str, ...] = ()

    @property
    def peer_silent(self) -> bool:
        return not any(up for _, up in self.paths)

    @property
    def serving(self) -> bool:
        return self.role in SERVING


@dataclass(frozen=True, slots=True)
class Limits:
    """The replication lag bound (``replication.max_lag_*``) the lag is judged by."""

    lag_units: int
    lag_seconds: float
    unit: str  # "bytes" | "transactions"
    # replication.mode, or sync_fallback in sync mode: "async" | "strict" | "fallback"
    sync: str = "async"
    config: str = "CONFIG"  # the config file, for the commands a finding suggests

    @classmethod
    def of(cls, cfg: Config) -> Limits:
        rep = cfg.replication
        sync = rep.sync_fallback if rep.mode == "sync" else "async"
        if cfg.database.is_postgresql:
            return cls(rep.max_lag_bytes, rep.max_lag_seconds, "bytes", sync, cfg.source)
        return cls(rep.max_lag_transactions, rep.max_lag_seconds, "transactions", sync, cfg.source)


@dataclass(frozen=True, slots=True)
class Finding:
    status: Status
    text: str


@dataclass(frozen=True, slots=True)
class Assessment:
    status: Status
    summary: str
    findings: tuple[Finding, ...]


# ------------------------------------------------------------------ the rules


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# Synchronous commit on with no synchronous standby is judged blocked once it has
# lasted this long (seconds), or at once when commits are seen waiting: a replica
# reconnecting leaves the primary without a standby for a moment.
BLOCKED_GRACE = 1.0
# A commit that has waited this long (seconds) for a synchronous standby that is
# connected means the standby does not answer: commits are blocked too.
WAIT_GRACE = 2.0


def _blocked(v: View, limits: Limits) -> Finding | None:
    """Synchronous commit is on and no standby acknowledges: every commit waits."""
    db = v.db
    if db is None or db.role != "primary" or not db.sync_replication:
        return None
    waiting = db.sync_waiting or 0
    longest = db.sync_wait_longest
    if db.sync_standbys is not None and db.sync_standbys > 0:
        if longest is None or longest < WAIT_GRACE:
            return None  # in flight: a standby answers
        cause = f"the synchronous standby is connected but has not acknowledged for {longest:.0f} s"
        count = f", {waiting} commit(s) waiting"
    else:
        if db.sync_standbys is None:
            return None
        if waiting == 0 and db.blocked_for is not None and db.blocked_for < BLOCKED_GRACE:
            return None
        since = f" for {db.blocked_for:.0f} s" if db.blocked_for is not None else ""
        cause = f"synchronous commit is on and no synchronous standby is connected{since}"
        count = f", {waiting} commit(s) waiting" if waiting else ""
    relax = f"dbha sync relax -c {limits.config}"
    if limits.sync == "fallback":
        way = (
            f"they go on once {v.peer_name} acknowledges, or once it has been gone (not "
            "heard as an eligible replica) for 3 self-fence deadlines; check that it "
            f"replicates and acknowledges (dbha status on it), or accept asynchronous "
            f"commits now: {relax}"
        )
    else:
        way = (
            f"they wait until {v.peer_name} acknowledges; check that it replicates and "
            f"acknowledges (dbha status on it), or accept asynchronous commits: {relax}"
        )
    return Finding(Status.CRITICAL, f"commits are blocked: {cause}{count}; {way}")


def _database(v: View, limits: Limits) -> list[Finding]:
    db = v.db
    if db is None:
        return [Finding(Status.WARNING, "database not probed yet")]
    if not db.reachable:
        why = f" ({_clip(db.error)})" if db.error else ""
        return [Finding(Status.CRITICAL, f"database unreachable{why}")]
    out = []
    blocked = _blocked(v, limits)
    if blocked is not None:
        out.append(blocked)
    elif db.sync_standbys is not None and db.sync_standbys > 0:
        pass  # commits seen waiting have a standby to answer them: in flight
    elif db.sync_waiting is not None and db.sync_waiting > 0:
        out.append(
            Finding(
                Status.CRITICAL,
                f"{db.sync_waiting} commit(s) waiting for the synchronous replica",
            )
        )
    elif (
        v.serving
        and db.sync_replication
        and (v.peer_silent or (v.peer is not None and v.peer.db_reachable is False))
    ):
        out.append(Finding(Status.CRITICAL, "commits wait for a synchronous replica that is gone"))
    if db.writable and not v.serving:
        out.append(
            Finding(Status.CRITICAL, f"the database accepts writes but this node is {v.role}")
        )
    return out


def _roles(v: View) -> list[Finding]:
    out = []
    peer = None if v.peer_silent else v.peer
    if v.role == NodeRole.PRIMARY and v.vip_held is False:
        out.append(Finding(Status.CRITICAL, "primary without the VIP"))
    if not v.serving and v.vip_held:
        out.append(Finding(Status.CRITICAL, f"holds the VIP but is {v.role}"))
    if v.keeper_alive is False and v.serving:
        out.append(Finding(Status.CRITICAL, "the lease keeper is not running"))
    peer_epoch = v.peer.epoch if v.peer is not None else None
    if v.serving and peer_epoch is not None and v.epoch is not None and peer_epoch > v.epoch:
        out.append(
            Finding(
                Status.CRITICAL,
                f"{v.peer_name} has a newer epoch ({peer_epoch} > {v.epoch}) "
                "while this node serves",
            )
        )
    if peer is not None:
        if v.serving and peer.role in SERVING:
            out.append(Finding(Status.CRITICAL, f"two primaries: {v.peer_name} is {peer.role}"))
        elif v.db is not None and v.db.writable and peer.db_writable:
            out.append(Finding(Status.CRITICAL, f"both databases accept writes ({v.peer_name})"))
        if not v.serving and peer.role not in SERVING and v.role in ("replica", "fenced"):
            out.append(
                Finding(
                    Status.CRITICAL,
                    f"no node serves: this node is {v.role}, {v.peer_name} is {peer.role}",
                )
            )
        elif not v.serving and peer.role == "primary" and peer.db_writable is False:
            out.append(
                Finding(
                    Status.CRITICAL,
                    f"{v.peer_name} is primary but its database does not accept writes",
                )
            )
    if v.needs_resync:
        peer_serves = peer is not None and peer.role == "primary" and peer.db_writable is not False
        if peer_serves:
            out.append(Finding(Status.WARNING, "needs a resync (no standby meanwhile)"))
        else:
            out.append(Finding(Status.CRITICAL, f"needs a resync and {v.peer_name} does not serve"))
    elif v.role == "fenced" and peer is not None and peer.role == "primary":
        out.append(Finding(Status.WARNING, f"fenced while {v.peer_name} serves"))
    if v.role in ("handover", "promoting"):
        out.append(Finding(Status.WARNING, f"{v.role} under way"))
    return out


def _peer(v: View) -> list[Finding]:
    out = []
    down = [name for name, up in v.paths if not up]
    if not v.peer_silent:
        if down:
            out.append(Finding(Status.WARNING, f"heartbeat path {', '.join(down)} down"))
        p = v.peer
        if p is not None and v.serving:
            if p.db_reachable is False:
                out.append(Finding(Status.WARNING, f"{v.peer_name}'s database is down: no standby"))
            elif p.needs_resync:
                out.append(Finding(Status.WARNING, f"{v.peer_name} needs a resync: no standby"))
        return out
    verdict = v.verdict
    if not v.verdict_known:
        out.append(
            Finding(Status.WARNING, f"{v.peer_name} silent on every path (verdict not reported)")
        )
    elif verdict is None or verdict == "unknown":
        out.append(
            Finding(
                Status.CRITICAL,
                f"{v.peer_name} silent on every path and the safety check has no verdict",
            )
        )
    elif verdict == "i_am_isolated":
        out.append(Finding(Status.CRITICAL, "isolated: no heartbeat path and no gateway"))
    elif verdict == "peer_dead":
        if v.serving:
            out.append(Finding(Status.WARNING, f"{v.peer_name} is dead: serving alone"))
        else:
            why = f" ({_clip(v.reason, 120)})" if v.reason else ""
            out.append(
                Finding(Status.CRITICAL, f"{v.peer_name} is dead and this node does not serve{why}")
            )
    else:  # peer_alive_heartbeat_broken
        out.append(
            Finding(
                Status.WARNING,
                f"{v.peer_name} silent on every path but its database answers",
            )
        )
    return out


def _care(v: View, limits: Limits) -> list[Finding]:
    out = []
    if v.maintenance or (v.peer is not None and v.peer.maintenance):
        out.append(Finding(Status.WARNING, "maintenance on"))
    db = v.db
    if db is not None and db.reachable and db.role == "replica" and v.role == "replica":
        if db.streaming is False:
            out.append(Finding(Status.WARNING, "replica not streaming"))
        lag = []
        if db.lag_units is not None and db.lag_units * 2 > limits.lag_units:
            lag.append(f"{db.lag_units} {limits.unit} (bound {limits.lag_units})")
        if db.lag_seconds is not None and db.lag_seconds * 2 > limits.lag_seconds:
            lag.append(f"{db.lag_seconds:.1f} s (bound {limits.lag_seconds:g} s)")
        if lag:
            out.append(Finding(Status.WARNING, "replica lag " + ", ".join(lag)))
    if v.checks_failing:
        out.append(Finding(Status.WARNING, f"check failing: {', '.join(v.checks_failing)}"))
    out += [Finding(Status.WARNING, _clip(a)) for a in v.alerts]
    out += [Finding(Status.CRITICAL, _clip(e)) for e in v.errors]
    return out


def assess(v: View, limits: Limits) -> Assessment:
    """The status of ``v`` (the worst finding) and a one-line summary."""
    findings = [*_database(v, limits), *_roles(v), *_peer(v), *_care(v, limits)]
    findings.sort(key=lambda f: -f.status)  # stable: rule order within a level
    status = findings[0].status if findings else Status.OK
    head = f"{v.service} on {v.node}"
    if findings:
        summary = f"{head} ({v.role}, epoch {_epoch(v.epoch)}): " + "; ".join(
            f.text for f in findings
        )
    else:
        summary = f"{head}: {_healthy(v)}"
    return Assessment(status, _clip(summary, MAX_LINE), tuple(findings))


def _epoch(epoch: int | None) -> str:
    return "?" if epoch is None else str(epoch)


def _healthy(v: View) -> str:
    db = v.db
    what = "?" if db is None else db.role + (" writable" if db.writable else "")
    up = sum(1 for _, u in v.paths if u)
    parts = [f"{v.role}, epoch {_epoch(v.epoch)}", f"database {what}"]
    if v.vip_held:
        parts.append("VIP here")
    peer = v.peer.role if v.peer is not None else "?"
    parts.append(f"{v.peer_name} {peer} on {up}/{len(v.paths)} paths")
    return ", ".join(parts)


def line(a: Assessment) -> str:
    """The plain output: ``DBHA OK|WARNING|CRITICAL - <summary>``, one line."""
    return f"DBHA {a.status.name} - {a.summary}"


# ----------------------------------------------------------------- the sources


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
    return _clip(value, MAX_TEXT) if isinstance(value, str) else default


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
