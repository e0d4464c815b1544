"""The supervisor's Prometheus metrics (``GET /metrics`` on the HTTP door).

Built on prometheus-client with a registry of dbha's own (nothing of the
library's process or platform collectors, which would differ between hosts).
Two kinds of figures:

- Live ones the loop feeds as things happen: the loop tick's duration, the
  database probe's latency, decisions by rule, events by name (failovers,
  switchovers, fences among them), the HTTP door's requests and refusals.
- State read at scrape time from the status view the door already holds
  (:mod:`dbha.node.httpviews`): role, epoch, lease, lag, paths, heartbeat drops,
  safety verdict, VIP, maintenance, needs-resync, synchronous mode. A scrape
  reads that view only; it never probes.

Every name has the ``dbha_`` prefix, its unit in the name and ``_total`` on
counters (docs/http.md lists them all with their meaning).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dbha import __version__
from dbha.core.model import NodeRole, Verdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# events that count as one of the named counters (dbha.core.decide names them)
FAILOVER_EVENTS = frozenset({"failover_started"})
SWITCHOVER_EVENTS = frozenset({"switchover_started"})
FENCE_EVENTS = frozenset({"fenced"})
ROLES = tuple(r.value for r in NodeRole)
VERDICTS = tuple(v.value for v in Verdict)
SYNC_MODES = ("async", "strict", "fallback", "arbiter")

StatusView = Callable[[], "tuple[dict[str, Any] | None, float | None]"]


class Metrics:
    """The registry and the live series; ``render()`` is the /metrics body."""

    def __init__(self, view: StatusView | None = None) -> None:
        # No *_created series: they double every counter's lines and say only when
        # the supervisor started (dbha_info's scrape shows that it runs).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.tick_seconds = Histogram(
            "dbha_loop_tick_duration_seconds",
            "How long one tick of the supervisor's loop took (observe, decide, act).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.probe_seconds = Histogram(
            "dbha_database_probe_duration_seconds",
            "How long one probe of the local database took, answered or not.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.decisions = Counter(
            "dbha_decisions_total",
            "Decisions the loop took, by the rule of the transition table they follow.",
            ["rule"],
            registry=r,
        )
        self.events = Counter(
            "dbha_events_total", "Events this node reported, by name.", ["event"], registry=r
        )
        self.failovers = Counter("dbha_failovers_total", "Failovers this node started.", registry=r)
        self.switchovers = Counter(
            "dbha_switchovers_total", "Planned switchovers this node handed over.", registry=r
        )
        self.fences = Counter("dbha_fences_total", "Times this node fenced itself.", registry=r)
        self.http_requests = Counter(
            "dbha_http_requests_total",
            "Requests the HTTP door answered, by endpoint and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.http_refused = Counter(
            "dbha_http_refused_total",
            "Connections and requests the HTTP door refused, by reason.",
            ["reason"],
            registry=r,
        )
        if view is not None:
            self.watch(view)

    def watch(self, view: StatusView) -> None:
        """Read the state series from ``view`` at each scrape (once per registry)."""
        self.registry.register(_StateCollector(view))

    def event(self, name: str) -> None:
        self.events.labels(name).inc()
        if name in FAILOVER_EVENTS:
            self.failovers.inc()
        elif name in SWITCHOVER_EVENTS:
            self.switchovers.inc()
        elif name in FENCE_EVENTS:
            self.fences.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """The state series, read from the door's status view at each scrape."""

    def __init__(self, view: StatusView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        st, lease_left = self.view()
        if st is None:
            return
        yield from state_metrics(st, lease_left)


def _gauge(name: str, doc: str, value: object) -> Metric:
    g = GaugeMetricFamily(name, doc)
    if isinstance(value, int | float):  # bool too; None (not known): no sample
        g.add_metric([], float(value))
    return g


def _one_of(name: str, doc: str, label: str, options: tuple[str, ...], now: object) -> Metric:
    """A state set: one series per option, 1 for ``now``, 0 for the others."""
    g = GaugeMetricFamily(name, doc, labels=[label])
    for o in options:
        g.add_metric([o], 1.0 if now == o else 0.0)
    return g


def state_metrics(st: dict[str, Any], lease_left: float | None) -> Iterator[Metric]:
    """The series of one status view (a pure function of it, tested as such)."""
    info = GaugeMetricFamily(
        "dbha_info",
        "This supervisor: its service, node, peer and release (always 1).",
        labels=["service", "node", "peer", "version"],
    )
    names = [str(st.get(k)) for k in ("service", "node", "peer")]
    info.add_metric([*names, __version__], 1)
    yield info
    db = st.get("database") or {}
    yield _one_of(
        "dbha_role", "1 for this node's role, 0 for the others.", "role", ROLES, st.get("role")
    )
    yield _one_of(
        "dbha_sync_mode",
        "1 for the configured replication mode: async, or sync with strict, fallback or "
        "arbiter for a gone replica.",
        "mode",
        SYNC_MODES,
        st.get("sync_mode"),
    )
    yield _one_of(
        "dbha_safety_verdict",
        "1 for the newest safety verdict taken since the peer was last heard (none: all 0).",
        "verdict",
        VERDICTS,
        (st.get("safety") or {}).get("verdict"),
    )
    plain: list[tuple[str, str, object]] = [
        ("dbha_epoch", "The pair's epoch as this node knows it.", st.get("epoch")),
        (
            "dbha_lease_remaining_seconds",
            "Seconds left of this node's write lease (0: none; a replica holds none).",
            0.0 if lease_left is None else max(lease_left, 0.0),
        ),
        ("dbha_database_up", "1 when the local database answers its probe.", db.get("reachable")),
        ("dbha_database_writable", "1 when the local database accepts writes.", db.get("writable")),
        (
            "dbha_database_probe_age_seconds",
            "Age of the probe the latest decision used.",
            db.get("probed_age_s"),
        ),
        (
            "dbha_replication_streaming",
            "1 when this replica streams from the primary.",
            db.get("streaming"),
        ),
        ("dbha_replication_lag_bytes", "Replica lag in bytes (PostgreSQL).", db.get("lag_bytes")),
        ("dbha_replication_lag_seconds", "Replica lag in seconds.", db.get("lag_seconds")),
        (
            "dbha_replication_lag_transactions",
            "Replica lag in transactions (MySQL and MariaDB).",
            db.get("lag_transactions"),
        ),
        (
            "dbha_sync_replication",
            "1 when the primary's commits wait for the replica (synchronous commit on).",
            db.get("sync_replication"),
        ),
        (
            "dbha_sync_fallback_engaged",
            "1 while a synchronous-mode primary acknowledges commits without its replica.",
            st.get("sync_mark") is not None,
        ),
        (
            "dbha_sync_commits_blocked_seconds",
            "How long commits have waited with no synchronous standby (0: they do not).",
            db.get("blocked_for") or 0.0,
        ),
        (
            "dbha_peer_heard_age_seconds",
            "Seconds since the peer was last heard on any path.",
            st.get("peer_heard_age_s"),
        ),
        (
            "dbha_vip_held",
            "1 when this node holds the VIP.",
            (st.get("vip") or {}).get("held_here"),
        ),
        (
            "dbha_maintenance",
            "1 while maintenance is on (no automatic action).",
            st.get("maintenance"),
        ),
        ("dbha_needs_resync", "1 when this node needs a resync to rejoin.", st.get("needs_resync")),
        ("dbha_keeper_alive", "1 while the lease keeper process runs.", st.get("keeper_alive")),
    ]
    for name, doc, value in plain:
        yield _gauge(name, doc, value)
    yield from _path_metrics(st.get("paths") or {}, st.get("heartbeat_counters") or {})


def _path_metrics(paths: dict[str, Any], counters: dict[str, Any]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "dbha_path_up", "1 when the heartbeat path carries beats.", labels=["path"]
    )
    age = GaugeMetricFamily(
        "dbha_path_last_beat_age_seconds",
        "Seconds since the path's last admitted beat.",
        labels=["path"],
    )
    for name, p in sorted(paths.items()):
        up.add_metric([name], 1.0 if p.get("up") else 0.0)
        if p.get("last_beat_age_s") is not None:
            age.add_metric([name], float(p["last_beat_age_s"]))
    accepted = CounterMetricFamily(
        "dbha_heartbeats_accepted", "Beats admitted, by path.", labels=["path"]
    )
    sent = CounterMetricFamily("dbha_heartbeats_sent", "Beats sent, by path.", labels=["path"])
    dropped = CounterMetricFamily(
        "dbha_heartbeats_dropped",
        "Beats dropped (forged, replayed, malformed, ...), by path and reason.",
        labels=["path", "reason"],
    )
    for name, c in sorted(counters.items()):
        accepted.add_metric([name], float(c.get("accepted", 0)))
        sent.add_metric([name], float(c.get("sent", 0)))
        for reason, n in sorted((c.get("drops") or {}).items()):
            dropped.add_metric([name, reason], float(n))
    yield from (up, age, accepted, sent, dropped)
