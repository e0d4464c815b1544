"""The door's Prometheus metrics (dbha.node.metrics): names, units, values from the status."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from dbha.node.metrics import Metrics

from .test_httpviews import replica


def families(m: Metrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def status() -> dict[str, Any]:
    st = replica(lag_bytes=4096, lag_seconds=0.25)
    st.update(
        sync_mark=3,
        sync_mode="fallback",
        maintenance=True,
        peer_heard_age_s=0.05,
        paths={"lan": {"up": True, "last_beat_age_s": 0.1}, "hb": {"up": False}},
        heartbeat_counters={
            "lan": {"accepted": 10, "sent": 12, "drops": {"bad_mac": 2, "replayed": 1}},
            "hb": {"accepted": 0, "sent": 12, "drops": {}},
        },
        safety={"verdict": "peer_alive_heartbeat_broken"},
    )
    return st


def test_every_name_is_prefixed_and_counters_end_in_total() -> None:
    m = Metrics(lambda: (status(), None))
    m.decisions.labels("steady").inc()
    m.event("failover_started")
    for f in families(m).values():
        assert f.name.startswith("dbha_"), f.name
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name


def test_state_series_follow_the_status() -> None:
    m = Metrics(lambda: (status(), None))
    assert sample(m, "dbha_role", role="replica") == 1.0
    assert sample(m, "dbha_role", role="primary") == 0.0
    assert sample(m, "dbha_epoch") == 4.0
    assert sample(m, "dbha_lease_remaining_seconds") == 0.0  # a replica holds none
    assert sample(m, "dbha_replication_lag_bytes") == 4096.0
    assert sample(m, "dbha_replication_lag_seconds") == 0.25
    assert sample(m, "dbha_replication_lag_transactions") is None  # not known: no sample
    assert sample(m, "dbha_path_up", path="lan") == 1.0
    assert sample(m, "dbha_path_up", path="hb") == 0.0
    assert sample(m, "dbha_path_last_beat_age_seconds", path="lan") == 0.1
    assert sample(m, "dbha_heartbeats_dropped_total", path="lan", reason="bad_mac") == 2.0
    assert sample(m, "dbha_safety_verdict", verdict="peer_alive_heartbeat_broken") == 1.0
    assert sample(m, "dbha_safety_verdict", verdict="peer_dead") == 0.0
    assert sample(m, "dbha_sync_fallback_engaged") == 1.0
    assert sample(m, "dbha_sync_mode", mode="fallback") == 1.0
    assert sample(m, "dbha_sync_mode", mode="strict") == 0.0
    assert sample(m, "dbha_maintenance") == 1.0
    assert sample(m, "dbha_vip_held") == 0.0
    assert sample(m, "dbha_info", service="pg", node="a", peer="b", version="0.1.0") == 1.0


def test_live_series_count_what_happened() -> None:
    m = Metrics()
    for e in ("failover_started", "fenced", "fenced", "switchover_started", "promoted"):
        m.event(e)
    assert sample(m, "dbha_failovers_total") == 1.0
    assert sample(m, "dbha_fences_total") == 2.0
    assert sample(m, "dbha_switchovers_total") == 1.0
    assert sample(m, "dbha_events_total", event="promoted") == 1.0
    m.tick_seconds.observe(0.003)
    m.probe_seconds.observe(0.02)
    assert sample(m, "dbha_loop_tick_duration_seconds_count") == 1.0
    assert sample(m, "dbha_database_probe_duration_seconds_bucket", le="0.025") == 1.0


def test_before_the_first_tick_only_the_live_series() -> None:
    m = Metrics(lambda: (None, None))
    names = set(families(m))
    assert "dbha_role" not in names and "dbha_loop_tick_duration_seconds" in names
