"""The HTTP door's health rules (dbha.node.httpviews): which status answers 200."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dbha.node.httpviews import (
    LIVENESS_WITHIN,
    BadRequest,
    Bounds,
    Limit,
    View,
    answer,
    parse_lag,
)

PG = Bounds("postgresql", 1 << 20, 100, 30.0)
MARIA = Bounds("mariadb", 1 << 20, 100, 30.0)


def primary() -> dict[str, Any]:
    return {
        "service": "pg",
        "node": "a",
        "peer": "b",
        "role": "primary",
        "epoch": 4,
        "needs_resync": False,
        "keeper_alive": True,
        "vip": {"address": "198.18.0.100/24", "held_here": True},
        "database": {
            "reachable": True,
            "role": "primary",
            "writable": True,
            "lag_bytes": None,
            "lag_transactions": None,
            "lag_seconds": None,
            "streaming": None,
            "error": None,
        },
    }


def replica(**db: Any) -> dict[str, Any]:
    st = primary()
    st["role"] = "replica"
    st["vip"]["held_here"] = False
    st["database"].update(
        role="replica", writable=False, streaming=True, lag_bytes=0, lag_seconds=0.0
    )
    st["database"].update(db)
    return st


def served(
    path: str, st: dict[str, Any] | None, query: str = "", bounds: Bounds = PG, **v: Any
) -> int:
    view = View(st, v.get("lease", 3.0), v.get("age", 0.1), v.get("stepping", False))
    return answer(path, query, view, bounds).code


@pytest.mark.parametrize("path", ["/primary", "/read-write"])
def test_the_primary_with_lease_database_and_vip_answers_200(path: str) -> None:
    assert served(path, primary()) == 200
    assert served("/replica", primary()) == 503


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda st: st.update(role="fenced"), "fenced"),
        (lambda st: st.update(role="handover"), "handover"),
        (lambda st: st["database"].update(writable=False), "read-only database"),
        (lambda st: st["database"].update(reachable=False), "database down"),
        (lambda st: st["vip"].update(held_here=False), "VIP elsewhere"),
        (lambda st: st["vip"].update(held_here=None), "VIP unknown"),
        (lambda st: st.update(keeper_alive=False), "keeper dead"),
    ],
)
def test_a_primary_short_of_any_condition_answers_503(change: Any, why: str) -> None:
    st = primary()
    change(st)
    assert served("/primary", st) == 503, why


@pytest.mark.parametrize("lease", [None, 0.0, -0.5])
def test_no_lease_left_is_503_whatever_the_status_says(lease: float | None) -> None:
    """A loop that stalled leaves its last status behind; the lease read at the
    request's moment runs out, and /primary stops answering 200 with it."""
    assert served("/primary", primary(), lease=lease) == 503


def test_stepping_down_is_503_before_the_status_shows_it() -> None:
    assert served("/primary", primary(), stepping=True) == 503


def test_before_the_first_tick_nothing_is_200() -> None:
    for path in ("/primary", "/replica", "/health"):
        assert served(path, None) == 503
    assert served("/liveness", None, age=None) == 503


def test_liveness_follows_the_loop_age() -> None:
    assert served("/liveness", primary(), age=LIVENESS_WITHIN - 0.1) == 200
    assert served("/liveness", primary(), age=LIVENESS_WITHIN + 0.1) == 503


def test_health_follows_the_database_alone() -> None:
    st = replica()
    assert served("/health", st) == 200
    st["database"]["reachable"] = False
    assert served("/health", st) == 503


@pytest.mark.parametrize("path", ["/replica", "/read-only"])
def test_a_streaming_replica_within_the_bound_answers_200(path: str) -> None:
    assert served(path, replica(lag_bytes=1000, lag_seconds=0.5)) == 200
    assert served("/primary", replica()) == 503


@pytest.mark.parametrize(
    ("db", "st_change"),
    [
        ({"streaming": False}, None),
        ({"reachable": False}, None),
        ({"role": "primary"}, None),
        ({"lag_bytes": (1 << 20) + 1}, None),
        ({"lag_seconds": 31.0}, None),
        ({}, {"needs_resync": True}),
        ({}, {"role": "promoting"}),
    ],
)
def test_a_replica_not_fit_to_read_from_answers_503(db: dict[str, Any], st_change: Any) -> None:
    st = replica(**db)
    if st_change:
        st.update(st_change)
    assert served("/replica", st) == 503


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("lag=16MB", 200),
        ("lag=4MB", 503),
        ("lag=5000000", 200),
        ("lag=4000000", 503),
        ("lag=10s", 200),
        ("lag=1s", 503),
        ("lag=1500ms", 200),
    ],
)
def test_lag_in_the_query_replaces_the_bounds(query: str, code: int) -> None:
    st = replica(lag_bytes=4_500_000, lag_seconds=1.2)
    assert served("/replica", st, query) == code


def test_a_mariadb_replica_counts_transactions() -> None:
    st = replica(lag_bytes=None, lag_transactions=7, lag_seconds=2.0)
    assert served("/replica", st, bounds=MARIA) == 200
    assert served("/replica", st, "lag=5", bounds=MARIA) == 503
    assert served("/replica", st, "lag=7", bounds=MARIA) == 200
    with pytest.raises(BadRequest, match="transactions"):
        served("/replica", st, "lag=16MB", bounds=MARIA)


def test_an_idle_replica_without_a_seconds_figure_is_caught_up() -> None:
    assert served("/replica", replica(lag_bytes=0, lag_seconds=None)) == 200
    assert served("/replica", replica(lag_bytes=10, lag_seconds=None)) == 503


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("16MB", Limit("bytes", 16 << 20)),
        ("512kB", Limit("bytes", 512 << 10)),
        ("1GiB", Limit("bytes", 1 << 30)),
        ("100", Limit("bytes", 100)),
        ("10s", Limit("seconds", 10.0)),
        ("250ms", Limit("seconds", 0.25)),
        ("2min", Limit("seconds", 120.0)),
    ],
)
def test_lag_reads_sizes_seconds_and_numbers(text: str, limit: Limit) -> None:
    assert parse_lag(text, PG) == limit


@pytest.mark.parametrize("bad", ["", "-1", "16 XB", "ten", "1e9", "0x10", "9" * 40, "10 s s"])
def test_a_malformed_lag_is_a_bad_request(bad: str) -> None:
    with pytest.raises(BadRequest):
        parse_lag(bad, PG)
    with pytest.raises(BadRequest):
        served("/replica", replica(), f"lag={bad}")


def test_lag_twice_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="once"):
        served("/replica", replica(), "lag=1s&lag=2s")


def test_status_is_the_status_with_the_lease_and_loop_figures() -> None:
    st = primary()
    got = answer("/status", "", View(copy.deepcopy(st), 2.5, 0.2), PG)
    assert got.code == 200
    assert got.body["lease_remaining_s"] == 2.5 and got.body["loop_age_s"] == 0.2
    assert {k: got.body[k] for k in st} == st


def test_a_health_answer_says_why() -> None:
    st = primary()
    st["vip"]["held_here"] = False
    got = answer("/primary", "", View(st, 3.0, 0.1), PG)
    assert got.code == 503 and got.body["ok"] is False and "VIP" in got.body["reason"]
