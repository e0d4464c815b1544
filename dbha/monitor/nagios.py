"""What ``dbha check`` reports: one node's health as a Nagios status. Pure.

The check has two sources, turned into the same :class:`View` by
:mod:`dbha.monitor.views`: a running supervisor's status, and a cron round's own
observation and decision.

:func:`assess` maps a view to OK (0), WARNING (1) or CRITICAL (2), with every
finding named, worst first; :func:`line` is the one-line plain output
(``DBHA CRITICAL - pg on a: database unreachable (...)``).

CRITICAL is "clients cannot write through the VIP, or soon may not, or two
nodes may both take writes": the database unreachable, a primary without the
VIP (or the VIP on a node that does not serve), a writable database on a node
that does not serve, two primaries or a newer epoch while serving, no node
serving, the lease keeper dead, a resync needed while the peer does not serve,
the peer silent on every path with no safety verdict (or this node isolated),
commits waiting for a synchronous replica that is gone, no working standby in
strict synchronous mode (unless relaxed), an action that failed.
WARNING is "the pair serves but is not whole": a heartbeat path down, the peer
silent with a verdict that explains it, no working standby (the peer's database
does not answer, it needs a resync, is fenced or not eligible), maintenance on
(here or announced by the peer), replica lag above half the bound, a replica not
streaming, a failing check script, a resync needed while the peer serves, a
handover or promotion under way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from dbha.config import Config
from dbha.core.model import NodeRole

SERVING = ("primary", "promoting")
UNREACHABLE = "database unreachable"  # how the finding of a dead local database begins
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
    eligible: bool | None = None  # it says it could be promoted


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
    settings_differ: str | None = None  # the pair's shared settings differ (what, if known)

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


def clip(text: str, limit: int = MAX_TEXT) -> str:
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
        why = f" ({clip(db.error)})" if db.error else ""
        return [Finding(Status.CRITICAL, f"{UNREACHABLE}{why}")]
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
            out.append(Finding(Status.WARNING, f"{v.peer_name} is dead: serving alone, no standby"))
        else:
            why = f" ({clip(v.reason, 120)})" if v.reason else ""
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


def _no_standby(v: View) -> str | None:
    """Why the heard peer of a serving primary cannot take over if it fails (None:
    it can). A silent peer is judged by :func:`_peer` and :func:`_database`."""
    p, name = v.peer, v.peer_name
    if v.role != NodeRole.PRIMARY or v.peer_silent or p is None or p.role in SERVING:
        return None
    if p.db_reachable is False:
        return f"{name}'s database does not answer"
    if p.needs_resync:
        return f"{name} needs a resync"
    if p.role != "replica":
        return f"{name} is {p.role}, not a replica"
    if p.eligible is False:
        return f"{name} is not eligible for promotion"
    return None


def _standby(v: View, limits: Limits) -> list[Finding]:
    """A primary whose peer cannot take over: WARNING; CRITICAL in strict
    synchronous mode, where commits wait for that peer (unless relaxed)."""
    why = _no_standby(v)
    if why is None:
        return []
    if limits.sync != "strict":
        return [Finding(Status.WARNING, f"no standby: {why}")]
    if v.db is not None and v.db.reachable and v.db.sync_replication is False:
        return [Finding(Status.WARNING, f"no standby: {why} (strict synchronous commit relaxed)")]
    return [
        Finding(
            Status.CRITICAL,
            f"no standby: {why}; in strict synchronous mode commits wait for it "
            f"(dbha sync relax -c {limits.config} accepts asynchronous commits)",
        )
    ]


def _care(v: View, limits: Limits) -> list[Finding]:
    out = []
    where = ["this node"] if v.maintenance else []
    if v.peer is not None and v.peer.maintenance:
        where.append(f"announced by {v.peer_name}")
    if where:
        out.append(Finding(Status.WARNING, f"maintenance on ({', '.join(where)})"))
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
    out += [Finding(Status.WARNING, clip(a)) for a in v.alerts]
    if v.settings_differ is not None:
        out.append(Finding(Status.WARNING, clip(v.settings_differ)))
    out += [Finding(Status.CRITICAL, clip(e)) for e in v.errors]
    return out


def assess(v: View, limits: Limits) -> Assessment:
    """The status of ``v`` (the worst finding) and a one-line summary."""
    findings = [
        *_database(v, limits),
        *_roles(v),
        *_peer(v),
        *_standby(v, limits),
        *_care(v, limits),
    ]
    findings.sort(key=lambda f: -f.status)  # stable: rule order within a level
    status = findings[0].status if findings else Status.OK
    head = f"{v.service} on {v.node}"
    if findings:
        summary = f"{head} ({v.role}, epoch {_epoch(v.epoch)}): " + "; ".join(
            f.text for f in findings
        )
    else:
        summary = f"{head}: {_healthy(v)}"
    return Assessment(status, clip(summary, MAX_LINE), tuple(findings))


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
