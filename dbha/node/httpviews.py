"""What the HTTP door answers, from the supervisor's latest view (pure).

The door (:mod:`dbha.node.http`) hands each request's path and query here with a
:class:`View`: the status dict of :mod:`dbha.node.statusview` as the loop last
left it, plus the two figures that must be read at the moment of the request
(the lease left, and how long ago the loop last ticked). Nothing here probes,
waits or reads a file: an answer is a function of its arguments, so a load
balancer asking a thousand times a second costs the supervisor nothing but
these comparisons (docs/http.md).

Endpoints and their rules:

- ``/primary``, ``/read-write``: 200 only when this node is the primary, its lease
  has time left, its database answers and is writable, and it holds the VIP.
  A fenced, isolated or stalled node never answers 200: its lease runs out.
- ``/replica``, ``/read-only``: 200 when this node is a replica whose database
  answers and streams from the primary, with its lag within ``?lag=`` or, without
  it, within the configured bounds (``replication.max_lag_*``).
- ``/health``: 200 when the local database answers. ``/liveness``: 200 while the
  loop ticks (its last tick at most ``LIVENESS_WITHIN`` ago, systemd's
  ``WatchdogSec`` in conf/dbha@.service).
- ``/status``: the status JSON with the lease and loop figures added.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

LIVENESS_WITHIN = 5.0  # seconds: the unit's WatchdogSec; past it systemd kills the loop

PRIMARY_PATHS = frozenset({"/primary", "/read-write"})
REPLICA_PATHS = frozenset({"/replica", "/read-only"})
HEALTH_PATHS = PRIMARY_PATHS | REPLICA_PATHS | {"/health", "/liveness"}
GUARDED_PATHS = frozenset({"/status", "/metrics"})  # auth applies here when configured
PATHS = HEALTH_PATHS | GUARDED_PATHS

_SIZE = re.compile(r"([0-9]+)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)")
_SECONDS = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|min)")
_COUNT = re.compile(r"[0-9]+")
_UNIT = {"B": 1, "kB": 1, "KB": 1, "KiB": 1, "MB": 2, "MiB": 2, "GB": 3, "GiB": 3}
_UNIT |= {"TB": 4, "TiB": 4}
_PER_SECOND = {"ms": 0.001, "s": 1.0, "min": 60.0}
MAX_LAG_TEXT = 32


@dataclass(frozen=True, slots=True)
class Bounds:
    """The configured lag bounds a replica is held to without ``?lag=``."""

    engine: str  # "postgresql" | "mariadb" | "mysql"
    max_lag_bytes: int
    max_lag_transactions: int
    max_lag_seconds: float

    @property
    def counts_bytes(self) -> bool:
        return self.engine == "postgresql"


@dataclass(frozen=True, slots=True)
class View:
    """The supervisor as one request sees it.

    ``status``: :func:`dbha.node.statusview.status` from the latest tick (None before
    the first); ``lease_left``: seconds of write lease left now (None: no lease);
    ``loop_age``: seconds since the loop's last tick ended (None: not yet);
    ``stepping_down``: the loop is carrying out a fence or a VIP release, which the
    status shows only once the tick is done."""

    status: dict[str, Any] | None
    lease_left: float | None
    loop_age: float | None
    stepping_down: bool = False  # the loop is fencing or releasing the VIP right now


@dataclass(frozen=True, slots=True)
class Limit:
    """A ``?lag=`` bound: at most ``amount`` of ``unit`` ("bytes", "transactions", "seconds")."""

    unit: str
    amount: float


@dataclass(frozen=True, slots=True)
class Answer:
    code: int
    body: dict[str, Any]


class BadRequest(ValueError):
    """The request cannot be answered as asked (a 400 with this text)."""


def parse_lag(text: str, bounds: Bounds) -> Limit:
    """``?lag=`` as a limit: ``16MB`` (bytes; 1 kB = 1024 B, as PostgreSQL counts),
    ``10s`` / ``500ms`` / ``1min`` (seconds), or a bare number in the engine's own
    unit (bytes for PostgreSQL, transactions for MySQL and MariaDB)."""
    t = text.strip()
    if not t or len(t) > MAX_LAG_TEXT:
        raise BadRequest("lag: give bytes (16MB), seconds (10s) or a number")
    if m := _SIZE.fullmatch(t):
        if not bounds.counts_bytes:
            raise BadRequest(
                f"lag={t}: {bounds.engine} replicas are measured in transactions and "
                "seconds, not bytes: give a number of transactions or seconds (10s)"
            )
        return Limit("bytes", int(m.group(1)) * 1024 ** _UNIT[m.group(2)])
    if m := _SECONDS.fullmatch(t):
        return Limit("seconds", float(m.group(1)) * _PER_SECOND[m.group(2)])
    if _COUNT.fullmatch(t):
        return Limit("bytes" if bounds.counts_bytes else "transactions", int(t))
    raise BadRequest(f"lag={t[:MAX_LAG_TEXT]}: give bytes (16MB), seconds (10s) or a number")


def default_limits(bounds: Bounds) -> list[Limit]:
    units = (
        Limit("bytes", bounds.max_lag_bytes)
        if bounds.counts_bytes
        else Limit("transactions", bounds.max_lag_transactions)
    )
    return [units, Limit("seconds", bounds.max_lag_seconds)]


def answer(path: str, query: str, view: View, bounds: Bounds) -> Answer:
    """The code and JSON body for ``path`` (one of :data:`PATHS` other than /metrics).

    Raises BadRequest for a query that cannot be read (``?lag=`` malformed)."""
    st = view.status
    if path == "/liveness":
        age = view.loop_age
        ok = age is not None and age <= LIVENESS_WITHIN
        why = (
            "the loop ticks"
            if ok
            else "the loop has not ticked yet"
            if age is None
            else f"the loop last ticked {age:.1f} s ago"
        )
        return _brief(ok, why, st, view)
    if st is None:
        return _brief(False, "starting: no decision yet", None, view)
    if path == "/status":
        return Answer(200, {**st, "lease_remaining_s": _left(view), "loop_age_s": _age(view)})
    if path in PRIMARY_PATHS:
        return _brief(*_primary(st, view), st, view)
    if path in REPLICA_PATHS:
        limits = _limits(query, bounds)
        return _brief(*_replica(st, limits), st, view)
    if path == "/health":
        db = st.get("database") or {}
        ok = db.get("reachable") is True
        return _brief(ok, "the database answers" if ok else _db_down(db), st, view)
    raise BadRequest(f"no such endpoint: {path}")


def _limits(query: str, bounds: Bounds) -> list[Limit]:
    try:
        q = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=8)
    except ValueError:
        raise BadRequest("the query has too many fields") from None
    lags = q.get("lag")
    if not lags:
        return default_limits(bounds)
    if len(lags) > 1:
        raise BadRequest("give lag= once")
    return [parse_lag(lags[0], bounds)]


def _primary(st: dict[str, Any], view: View) -> tuple[bool, str]:
    db = st.get("database") or {}
    role = st.get("role")
    if role != "primary":
        return False, f"this node is {role}, not the primary"
    if view.stepping_down:
        return False, "stepping down: fencing or releasing the VIP"
    if not (view.lease_left is not None and view.lease_left > 0):
        return False, "no write lease left: the loop has not renewed it"
    if st.get("keeper_alive") is not True:
        return False, "the lease keeper is not running"
    if db.get("reachable") is not True:
        return False, _db_down(db)
    if db.get("role") != "primary" or db.get("writable") is not True:
        return False, "the database does not accept writes"
    if (st.get("vip") or {}).get("held_here") is not True:
        return False, "the VIP is not held here"
    return True, "primary: serves writes"


def _replica(st: dict[str, Any], limits: list[Limit]) -> tuple[bool, str]:
    db = st.get("database") or {}
    role = st.get("role")
    if role != "replica":
        return False, f"this node is {role}, not a replica"
    if st.get("needs_resync"):
        return False, "this replica needs a resync"
    if db.get("reachable") is not True:
        return False, _db_down(db)
    if db.get("role") != "replica":
        return False, f"the database is {db.get('role')}, not a replica"
    if db.get("streaming") is not True:
        return False, "the replica does not stream from the primary"
    for limit in limits:
        lag = db.get(f"lag_{limit.unit}")
        if not isinstance(lag, int | float) or math.isnan(lag):
            if limit.unit == "seconds" and _caught_up(db):
                continue  # nothing to replay: no seconds to measure, none behind
            return False, f"the lag in {limit.unit} is not known"
        if lag > limit.amount:
            return False, f"{lag:g} {limit.unit} behind, more than {limit.amount:g}"
    return True, "replica: streams within the lag bound"


def _caught_up(db: dict[str, Any]) -> bool:
    """Replay has nothing left by the engine's own count (bytes or transactions)."""
    return db.get("lag_bytes") == 0 or db.get("lag_transactions") == 0


def _db_down(db: dict[str, Any]) -> str:
    err = db.get("error")
    return "the database does not answer" + (f": {err}" if err else "")


def _left(view: View) -> float | None:
    return None if view.lease_left is None else round(max(view.lease_left, 0.0), 3)


def _age(view: View) -> float | None:
    return None if view.loop_age is None else round(view.loop_age, 3)


def _brief(ok: bool, why: str, st: dict[str, Any] | None, view: View) -> Answer:
    """A health answer: small, and the same shape for every endpoint."""
    db = (st or {}).get("database") or {}
    body: dict[str, Any] = {
        "ok": ok,
        "reason": why,
        "node": (st or {}).get("node"),
        "role": (st or {}).get("role"),
        "epoch": (st or {}).get("epoch"),
        "lease_remaining_s": _left(view),
        "database": {
            "reachable": db.get("reachable"),
            "writable": db.get("writable"),
            "lag_bytes": db.get("lag_bytes"),
            "lag_transactions": db.get("lag_transactions"),
            "lag_seconds": db.get("lag_seconds"),
        },
    }
    return Answer(200 if ok else 503, body)


def encode(body: dict[str, Any]) -> bytes:
    return (json.dumps(body, sort_keys=True, default=str) + "\n").encode()
