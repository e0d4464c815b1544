"""GTID arithmetic: tables of positions and what they cover, for both servers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbha.db import gtid

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "8f0c2b6e-1d2a-11ef-8a4b-0242ac120002"

# ---------------------------------------------------------------------- MariaDB


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("", {}),
        ("0-1-5", {(0, 1): 5}),
        ("0-1-5,0-2-9,1-1-3", {(0, 1): 5, (0, 2): 9, (1, 1): 3}),
        (" 0-1-5 ,\n1-2-7", {(0, 1): 5, (1, 2): 7}),
        ("0-1-5,0-1-3", {(0, 1): 5}),  # a repeat keeps the highest
        ("4294967295-4294967295-18446744073709551615", {(2**32 - 1, 2**32 - 1): 2**64 - 1}),
    ],
)
def test_parse_maria_accepts(text: str, state: gtid.MariaState) -> None:
    assert gtid.parse_maria(text) == state


@pytest.mark.parametrize(
    "text",
    [None, "0-1", "0-1-2-3", "a-1-2", "0--1-2", "0-1-x", "-1-1-1", "4294967296-1-1", "0-1-1e3"],
)
def test_parse_maria_rejects_without_raising(text: str | None) -> None:
    assert gtid.parse_maria(text) is None


@pytest.mark.parametrize(
    ("candidate", "reference", "expected", "why"),
    [
        ("0-2-100", "0-2-100", True, "same position"),
        ("0-2-105", "0-2-100", True, "same server, further"),
        ("0-2-99", "0-2-100", False, "same server, behind"),
        ("", "", True, "nothing to lose"),
        ("0-2-5", "", True, "reference empty"),
        ("", "0-2-5", False, "candidate has nothing"),
        ("0-1-105", "0-2-100", False, "other server: histories may have split"),
        ("0-1-100", "0-2-100", False, "same seq, other server: diverged"),
        ("0-2-100,0-1-105", "0-2-100", True, "state form proves the shared history"),
        ("0-2-98,0-1-105", "0-2-100", False, "split after 98: 99 and 100 are not there"),
        ("0-2-100,1-3-7", "0-2-100,1-3-8", False, "second domain behind"),
        ("0-2-100", "0-2-100,1-3-1", False, "domain unknown to the candidate"),
        ("0-1-50,0-2-100", "0-1-50,0-2-100", True, "lab history after one switchover"),
        ("garbage", "0-2-1", False, "unreadable candidate"),
        ("0-2-1", "garbage", False, "unreadable reference"),
    ],
)
def test_maria_covers(candidate: str, reference: str, expected: bool, why: str) -> None:
    assert gtid.covers("mariadb", candidate, reference) is expected, why


@pytest.mark.parametrize(
    ("have", "other", "errant"),
    [
        ("0-2-100", "0-2-100,0-1-110", ""),  # the old primary has nothing the new one lacks
        ("0-2-105", "0-2-100,0-1-110", "0-2-105"),  # wrote 101..105 after the switch
        ("0-1-28,0-2-24", "0-1-26,0-2-27", "0-1-28"),  # seen in the lab
        ("0-2-10", "0-1-10,0-2-9", "0-2-10"),  # same seq, other server
        ("0-2-5,7-2-1", "0-2-5", "7-2-1"),  # a domain the upstream never saw
        ("bad", "0-1-1", None),
    ],
)
def test_maria_errant(have: str, other: str, errant: str | None) -> None:
    assert gtid.missing("mariadb", have, other) == errant


@pytest.mark.parametrize(
    ("received", "executed", "behind"),
    [
        ("0-2-13", "0-2-13", 0),
        ("0-2-23", "0-2-13", 10),
        ("0-2-23,0-1-5", "0-1-5,0-2-13", 10),
        ("0-2-23,1-2-4", "0-2-23", 4),  # a domain not applied at all yet
        ("0-2-13", "0-2-20", 0),  # received text lags behind: never negative
        ("0-1-12", "0-2-10", 2),  # seqs grow per domain, whoever wrote them
    ],
)
def test_maria_behind(received: str, executed: str, behind: int) -> None:
    assert gtid.behind("mariadb", received, executed) == behind


def test_maria_merge_and_format_are_normalized() -> None:
    assert gtid.merge("mariadb", "1-1-3,0-2-9", None, "0-1-5,0-2-4") == "0-1-5,0-2-9,1-1-3"
    assert gtid.merge("mariadb", "0-1-5", "bad") is None


# ------------------------------------------------------------------------ MySQL


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("", ""),
        (f"{U1}:1-5", f"{U1}:1-5"),
        (f"{U1.upper()}:1-5:7:6", f"{U1}:1-7"),  # adjacent intervals join
        (f"{U2}:3,\n{U1}:1-2:4-9", f"{U1}:1-2:4-9,{U2}:3"),  # as the server prints it
        (f"{U1}:1-5:tag_a:1-3:7", f"{U1}:1-5:tag_a:1-3:7"),  # 8.3+ tags
        (f"{U1}:tag_b:2,{U1}:1-4", f"{U1}:1-4:tag_b:2"),
    ],
)
def test_parse_mysql_normalizes(text: str, normalized: str) -> None:
    parsed = gtid.parse_mysql(text)
    assert parsed is not None
    assert gtid.format_mysql(parsed) == normalized


@pytest.mark.parametrize(
    "text",
    [
        None,
        "nouuid:1-5",
        f"{U1}",
        f"{U1}:0-3",
        f"{U1}:5-3",
        f"{U1}:1-x",
        f"{U1}:1-2-3",
        f"{U1}:tag",
    ],
)
def test_parse_mysql_rejects_without_raising(text: str | None) -> None:
    assert gtid.parse_mysql(text) is None


@pytest.mark.parametrize(
    ("candidate", "reference", "expected"),
    [
        (f"{U1}:1-10", f"{U1}:1-10", True),
        (f"{U1}:1-10", f"{U1}:3-7", True),
        (f"{U1}:1-10", f"{U1}:1-11", False),
        (f"{U1}:1-4:6-10", f"{U1}:1-10", False),  # a hole
        (f"{U1}:1-10,{U2}:1-3", f"{U1}:1-10", True),
        (f"{U1}:1-10", f"{U1}:1-10,{U2}:1", False),  # an errant transaction of another server
        (f"{U1}:1-10:t:1", f"{U1}:1-10:t:1-2", False),  # tags count apart
        ("", "", True),
        ("bad", f"{U1}:1", False),
    ],
)
def test_mysql_covers(candidate: str, reference: str, expected: bool) -> None:
    assert gtid.covers("mysql", candidate, reference) is expected


@pytest.mark.parametrize(
    ("have", "other", "errant", "count"),
    [
        (f"{U1}:1-100", f"{U1}:1-100,{U2}:1-20", "", 0),
        (f"{U1}:1-105", f"{U1}:1-100,{U2}:1-20", f"{U1}:101-105", 5),
        (f"{U1}:1-10:20-30", f"{U1}:1-25", f"{U1}:26-30", 5),
        (f"{U1}:1-10,{U2}:1-2", f"{U1}:2-9", f"{U1}:1:10,{U2}:1-2", 4),
    ],
)
def test_mysql_subtract_and_count(have: str, other: str, errant: str, count: int) -> None:
    assert gtid.missing("mysql", have, other) == errant
    assert gtid.behind("mysql", have, other) == count


def test_unknown_engine_is_never_sure() -> None:
    assert gtid.covers("postgresql", "0-1-1", "0-1-1") is False
    assert gtid.missing("postgresql", "", "") is None
    assert gtid.behind("postgresql", "", "") is None
    assert gtid.merge("postgresql", "") is None


# ------------------------------------------------------------------- properties

maria_states = st.dictionaries(
    st.tuples(st.integers(0, 3), st.integers(1, 4)), st.integers(0, 1000), max_size=6
)
intervals = st.lists(
    st.tuples(st.integers(1, 60), st.integers(0, 10)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=5,
)
mysql_sets = st.dictionaries(
    st.tuples(st.sampled_from([U1, U2]), st.sampled_from(["", "t"])), intervals, max_size=3
).map(lambda d: {k: gtid._normalize(list(v)) for k, v in d.items() if v})


@given(maria_states, maria_states)
def test_maria_merge_covers_both_and_missing_is_what_is_not_covered(
    a: gtid.MariaState, b: gtid.MariaState
) -> None:
    ta, tb = gtid.format_maria(a), gtid.format_maria(b)
    merged = gtid.merge("mariadb", ta, tb)
    assert gtid.covers("mariadb", merged, ta) and gtid.covers("mariadb", merged, tb)
    assert gtid.covers("mariadb", tb, ta) == (gtid.missing("mariadb", ta, tb) == "")
    assert gtid.parse_maria(ta) == {k: v for k, v in a.items()}


@given(mysql_sets, mysql_sets)
def test_mysql_set_algebra(a: gtid.MysqlSet, b: gtid.MysqlSet) -> None:
    ta, tb = gtid.format_mysql(a), gtid.format_mysql(b)
    assert gtid.parse_mysql(ta) == a  # round trip
    union = gtid.union_mysql(a, b)
    assert gtid.mysql_covers(union, a) and gtid.mysql_covers(union, b)
    rest = gtid.subtract_mysql(a, b)
    # a = (a - b) + (a & b): counts add up, and (a - b) shares nothing with b
    assert gtid.count_mysql(gtid.union_mysql(rest, b)) == gtid.count_mysql(union)
    assert gtid.subtract_mysql(rest, b) == rest
    assert gtid.covers("mysql", tb, ta) == (gtid.count_mysql(rest) == 0)
