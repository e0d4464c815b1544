"""``dbha status -c FILE``: both nodes of the pair, and an exit code that says
whether the pair is healthy.

This node's running supervisor is asked over its control socket; when none
runs (or it does not answer), what can be seen without it is looked at
directly: the persisted node state, one bounded probe of the local database,
whether the VIP is on this host, this node's history file. The peer's
supervisor is asked over its door, as ``dbha history`` does. Each node's answer
is judged by the same rules as ``dbha check`` (:func:`dbha.monitor.nagios.assess`).

Exit codes (``dbha status --help`` and docs/operations.md say the same):

- 0 ``healthy``: both supervisors answer and neither node has a finding;
- 1 ``degraded``: the pair serves but is not whole (a WARNING on either node:
  no working standby, maintenance on, a path down, lag, ...), or the peer's
  supervisor cannot be asked;
- 2: a usage or config error (as every dbha command);
- 3 ``critical``: a CRITICAL finding on either node (no node serves, two
  primaries, commits blocked, the primary's database down, ...), except a
  standby's own database down: degraded (its primary has no standby);
- 4 ``local supervisor down``: no supervisor answers on this node (this wins
  over the others: without it nothing acts here).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dbha.config import Config
from dbha.monitor.nagios import UNREACHABLE, Limits, Status, assess
from dbha.monitor.views import view_from_status

HEALTHY, DEGRADED, USAGE, CRITICAL, LOCAL_DOWN = 0, 1, 2, 3, 4
HEALTH = {
    HEALTHY: "healthy",
    DEGRADED: "degraded",
    CRITICAL: "critical",
    LOCAL_DOWN: "local supervisor down",
}
# A handover's end, and the event that started it (dbha.node.history.ENDS).
HANDOVERS = {"promoted": "failover_started", "switchover_done": "switchover_started"}
PEER_HISTORY = 50  # events asked of the peer to find the last failover


@dataclass(frozen=True, slots=True)
class Sources:
    """How one report reads the world (the CLI passes the real ones)."""

    ask_local: Callable[[], dict[str, Any] | str | None]  # None: no supervisor runs
    ask_peer: Callable[[dict[str, Any]], dict[str, Any] | str]  # a string: why not
    look_alone: Callable[[], dict[str, Any]]  # this node without its supervisor
    history: Callable[[], list[dict[str, Any]]]  # this node's history file


def gather(cfg: Config, src: Sources) -> dict[str, Any]:
    """One report of the pair (JSON-able): ``local`` and ``peer`` as their
    supervisors answered (``local`` looked at directly when its supervisor is
    down, ``peer`` ``{"error": ...}`` when it cannot be asked), and ``code``,
    ``health``, ``findings``, ``last_failover`` judged from them."""
    got = src.ask_local()
    local: dict[str, Any]
    if isinstance(got, dict):
        local = got["status"] if isinstance(got.get("status"), dict) else {}
        supervisor = "running"
    else:
        local = src.look_alone()
        supervisor = "not running" if got is None else f"does not answer: {got}"
        local["supervisor"] = supervisor
    reply = src.ask_peer({"cmd": "status"})
    peer: dict[str, Any]
    events = src.history()
    if isinstance(reply, str):
        peer = {"error": reply}
    elif not isinstance(reply.get("status"), dict):
        peer = {"error": str(reply.get("error") or "no status in the peer's answer")}
    else:
        peer = reply["status"]
        more = src.ask_peer({"cmd": "history", "last": PEER_HISTORY})
        if isinstance(more, dict) and isinstance(more.get("events"), list):
            events = events + [e for e in more["events"] if isinstance(e, dict)]
    code, findings = judge(local, peer, supervisor == "running", Limits.of(cfg))
    return {
        "service": cfg.service.id,
        "at": round(time.time(), 3),
        "code": code,
        "health": HEALTH[code],
        "local_supervisor": supervisor,
        "findings": findings,
        "last_failover": last_handover(events),
        "local": local,
        "peer": peer,
    }


def judge(
    local: Mapping[str, Any], peer: Mapping[str, Any], local_running: bool, limits: Limits
) -> tuple[int, list[dict[str, str]]]:
    """The exit code and every finding (node, status, text) of one report."""
    findings: list[dict[str, str]] = []
    code = HEALTHY
    if not local_running:
        findings.append(
            {
                "node": str(local.get("node", "?")),
                "status": "CRITICAL",
                "text": f"the supervisor is {local.get('supervisor', 'down')}",
            }
        )
    for st in (local, peer) if local_running else (peer,):
        if "error" in st and "role" not in st:
            findings.append(
                {
                    "node": str(local.get("peer", "peer")),
                    "status": "WARNING",
                    "text": f"the peer's supervisor cannot be asked: {st['error']}",
                }
            )
            code = max(code, DEGRADED)
            continue
        view = view_from_status(st, limits)
        node = str(st.get("node", "?"))
        for f in assess(view, limits).findings:
            level = f.status
            if level is Status.CRITICAL and not view.serving and f.text.startswith(UNREACHABLE):
                # A standby's own server down is CRITICAL for its check, but the pair
                # serves: degraded (its primary says it has no standby).
                level = Status.WARNING
            findings.append({"node": node, "status": level.name, "text": f.text})
            code = max(code, CRITICAL if level is Status.CRITICAL else DEGRADED)
    return (LOCAL_DOWN if not local_running else code), findings


def last_handover(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest failover or switchover among ``events`` (both nodes' history):
    when it ended, on which node, the epoch it gave, why (what each node said when
    it started) and how long it took; None when there was none."""
    ordered = sorted(events, key=_at)
    ends = [i for i, e in enumerate(ordered) if e.get("event") in HANDOVERS]
    if not ends:
        return None
    i = ends[-1]
    e = ordered[i]
    start = HANDOVERS[str(e.get("event"))]
    since = ends[-2] + 1 if len(ends) > 1 else 0
    why = [
        f"{s.get('node')}: {s.get('detail')}"
        for s in ordered[since:i]
        if s.get("event") == start and s.get("detail")
    ]
    # The end is recorded in the state it ends (the epoch before the promotion);
    # its detail says the new one ("epoch 4").
    found = re.search(r"\bepoch (\d+)", str(e.get("detail") or ""))
    took = e.get("duration_s")
    return {
        "kind": "switchover" if e.get("event") == "switchover_done" else "failover",
        "at": _at(e),
        "node": e.get("node"),
        "epoch": int(found.group(1)) if found else e.get("epoch"),
        "why": "; ".join(why[-2:]),
        "duration_s": took if isinstance(took, int | float) else None,
    }


def _at(e: Mapping[str, Any]) -> float:
    at = e.get("at")
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else 0.0


def sources(cfg: Config, ask_peer: Callable[[dict[str, Any]], dict[str, Any] | str]) -> Sources:
    """The real sources of a report on this host (``ask_peer``: the CLI's, over the
    peer's door, bounded)."""
    from dbha.monitor.command import ask_supervisor
    from dbha.node import history

    return Sources(
        ask_local=lambda: ask_supervisor(cfg.service.control_socket),
        ask_peer=ask_peer,
        look_alone=lambda: look_alone(cfg),
        history=lambda: history.read(cfg.service.state_dir, PEER_HISTORY),
    )


def look_alone(cfg: Config) -> dict[str, Any]:
    """This node without its supervisor, in the shape of a supervisor's status: the
    persisted state (role, epoch, ...), one bounded probe of the database, the VIP."""
    from dbha.beat.announce import position_text
    from dbha.core.model import Role
    from dbha.errors import DbhaError
    from dbha.node import parts, statefile

    db_cfg = cfg.database
    timeout = min((db_cfg.connect_timeout_ms + db_cfg.statement_timeout_ms) / 1000, 10.0)
    out: dict[str, Any] = {"service": cfg.service.id, "node": cfg.node.name, "peer": cfg.peer.name}
    try:
        state = statefile.load(cfg.service.state_dir)
    except DbhaError as exc:
        state, out["state_error"] = None, str(exc)
    if state is None:
        out["role"] = "unknown"  # the supervisor's role is not known without it
    else:
        out.update(
            role=state.role.value,
            epoch=state.epoch,
            needs_resync=state.needs_resync,
            maintenance=state.maintenance,
            last_failover=state.last_failover,
            sync_mark=state.sync_mark,
            persisted=True,  # the role and epoch are the last ones saved, not live
        )
    db, held, why = parts.look_alone(cfg, timeout)
    out["vip"] = {"address": str(cfg.vip.address), "held_here": held}
    if why is not None:
        out["vip"]["error"] = why
    out["database"] = {
        "reachable": db.reachable,
        "role": db.role.value,
        "writable": db.writable,
        "position": position_text(db.position),
        "lag_bytes": db.lag_bytes,
        "lag_transactions": db.lag_transactions,
        "lag_seconds": db.lag_seconds,
        "streaming": db.streaming,
        "sync_replication": db.sync_replication,
        "sync_standbys": db.sync_standbys if db.role is Role.PRIMARY else None,
        "error": db.error,
    }
    return out
