"""``dbha status`` as a person reads it: one table, a column per node, then the
pair's health and its findings. Pure: a report of :mod:`dbha.monitor.pairstatus`
in, text out."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

COLUMN = 38  # one node's column, in characters
LABEL = 15


def lsn_text(lsn: int) -> str:
    """A PostgreSQL LSN as PostgreSQL writes it: ``0/3000148``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def readable_position(text: object) -> str:
    """A position as the status answer carries it (``engine|timeline|lsn|gtid``)
    as an operator reads it: ``0/3000148 (timeline 1)`` for PostgreSQL, the GTID
    set itself for MySQL/MariaDB, ``-`` when unknown. Never raises."""
    if not isinstance(text, str) or not text:
        return "-"
    parts = text.split("|")
    if len(parts) != 4:
        return text
    _, timeline, lsn, gtid = parts
    if gtid:
        return gtid
    if lsn.isdigit():
        tl = f" (timeline {timeline})" if timeline.isdigit() else ""
        return lsn_text(int(lsn)) + tl
    return "-"


def age_text(seconds: object) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "never"
    return f"{seconds:.1f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def when_text(at: object) -> str:
    if not isinstance(at, int | float) or isinstance(at, bool) or at <= 0:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))


def _yes(value: object, yes: str = "yes", no: str = "no") -> str:
    return "?" if value is None else (yes if value else no)


def _database(db: object) -> str:
    if not isinstance(db, Mapping):
        return "not probed yet"
    if not db.get("reachable"):
        return "DOES NOT ANSWER" + (f": {db['error']}" if db.get("error") else "")
    return f"{db.get('role', '?')}, {'writable' if db.get('writable') else 'read-only'}"


def _lag(db: object) -> str:
    if not isinstance(db, Mapping) or db.get("role") != "replica":
        return "-"
    parts = []
    if db.get("lag_bytes") is not None:
        parts.append(f"{db['lag_bytes']} B")
    if db.get("lag_transactions") is not None:
        parts.append(f"{db['lag_transactions']} transactions")
    if db.get("lag_seconds") is not None:
        parts.append(f"{float(db['lag_seconds']):.1f} s")
    on = db.get("streaming")
    streaming = "" if on is None else "streaming" if on else "NOT streaming"
    return ", ".join(parts or ["?"]) + (f" ({streaming})" if streaming else "")


def _paths(st: Mapping[str, Any]) -> list[str]:
    paths = st.get("paths")
    if not isinstance(paths, Mapping) or not paths:
        return ["?"]
    out = []
    for name, p in paths.items():
        p = p if isinstance(p, Mapping) else {}
        beat = age_text(p.get("last_beat_age_s"))
        out.append(f"{name} {'up' if p.get('up') else 'DOWN'}, last beat {beat}")
    return out


def _drops(st: Mapping[str, Any]) -> str:
    counters = st.get("heartbeat_counters")
    if not isinstance(counters, Mapping):
        return "?"
    dropped: dict[str, int] = {}
    for c in counters.values():
        for reason, n in (c.get("drops") or {}).items() if isinstance(c, Mapping) else ():
            if isinstance(n, int) and n:
                dropped[reason] = dropped.get(reason, 0) + n
    return ", ".join(f"{r} {n}" for r, n in sorted(dropped.items())) or "none"


def _supervisor(st: Mapping[str, Any], is_local: bool) -> list[str]:
    if "error" in st and "role" not in st:
        return ["CANNOT BE ASKED", "(below: why)"]
    if is_local and "supervisor" in st:
        return [str(st["supervisor"]).upper(), "(the rest looked at directly)"]
    return ["running"]


def rows(st: Mapping[str, Any], is_local: bool) -> list[tuple[str, list[str]]]:
    """One node's rows: (label, lines of its value)."""
    if "error" in st and "role" not in st:
        return [("supervisor", _supervisor(st, is_local))]
    db = st.get("database")
    vip: Mapping[str, Any] = st["vip"] if isinstance(st.get("vip"), Mapping) else {}
    role = str(st.get("role", "?")) + (" (as last saved)" if st.get("persisted") else "")
    held = vip.get("held_here")
    return [
        ("supervisor", _supervisor(st, is_local)),
        ("role", [role]),
        ("epoch", [str(st.get("epoch", "?"))]),
        ("database", [_database(db)]),
        ("position", [readable_position(db.get("position")) if isinstance(db, Mapping) else "-"]),
        ("lag", [_lag(db)]),
        ("paths", _paths(st) if "paths" in st else ["-"]),
        ("beats dropped", [_drops(st) if "heartbeat_counters" in st else "-"]),
        ("VIP", ["here" if held else "not here" if held is False else "?"]),
        ("maintenance", [_yes(st.get("maintenance"), "ON", "off")]),
        ("needs resync", [_yes(st.get("needs_resync"), "YES", "no")]),
        ("last promoted", [when_text(st.get("last_failover"))]),
    ]


def _fit(text: str, width: int = COLUMN) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def render(report: Mapping[str, Any]) -> str:
    """The whole report as text."""
    local = report.get("local") or {}
    peer = report.get("peer") or {}
    lname = str(local.get("node", "this node"))
    pname = str(local.get("peer") or peer.get("node") or "peer")
    left, right = rows(local, True), rows(peer, False)
    right_by = dict(right)
    out = [
        f"{report.get('service', '?')}: {str(report.get('health', '?')).upper()}"
        f" (exit {report.get('code')})",
        f"{'':{LABEL}} {_fit(lname + ' (this node)'):{COLUMN}} {pname} (peer)",
    ]
    labels = [lab for lab, _ in left] + [lab for lab, _ in right if lab not in dict(left)]
    left_by = dict(left)
    for lab in labels:
        a, b = left_by.get(lab, [""]), right_by.get(lab, [""])
        for i in range(max(len(a), len(b))):
            la = a[i] if i < len(a) else ""
            lb = b[i] if i < len(b) else ""
            out.append(f"{lab if i == 0 else '':{LABEL}} {_fit(la):{COLUMN}} {lb}".rstrip())
    holders = [
        n for n, st in ((lname, local), (pname, peer)) if (st.get("vip") or {}).get("held_here")
    ]
    address = (local.get("vip") or {}).get("address") or (peer.get("vip") or {}).get("address")
    out.append(f"VIP {address or '?'} held by {', '.join(holders) or 'nobody seen'}")
    last = report.get("last_failover")
    if isinstance(last, Mapping):
        took = last.get("duration_s")
        out.append(
            f"last {last.get('kind', 'failover')}: {when_text(last.get('at'))}, "
            f"{last.get('node')} promoted at epoch {last.get('epoch')}"
            + (f" in {took:.3f} s" if isinstance(took, int | float) else "")
            + (f" ({last['why']})" if last.get("why") else "")
        )
    else:
        out.append("last failover: none in the history")
    for st in (local, peer):
        dec = st.get("decision")
        if isinstance(dec, Mapping) and dec.get("reason"):
            out.append(f"{st.get('node')}: {dec.get('rule')}: {dec.get('reason')}")
    for f in report.get("findings") or []:
        out.append(f"{f.get('status')}: {f.get('node')}: {f.get('text')}")
    return "\n".join(out)
