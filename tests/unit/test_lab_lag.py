"""The lab's PostgreSQL lag: never negative, and right (``dbha lab status``)."""

from __future__ import annotations

import pytest

from dbha.lab.pg import later_lsn, lsn_gap, lsn_value


@pytest.mark.parametrize(
    ("text", "value"),
    [("0/0", 0), ("0/3000148", 0x3000148), ("1/0", 1 << 32), ("A/FF", (10 << 32) + 255)],
)
def test_an_lsn_reads_as_postgresql_writes_it(text: str, value: int) -> None:
    assert lsn_value(text) == value


@pytest.mark.parametrize("bad", [None, "", "3000148", "0/xyz", "0/1/2", 5])
def test_a_missing_or_malformed_lsn_is_unknown(bad: object) -> None:
    assert lsn_value(bad) is None
    assert lsn_gap(bad, "0/3000000") is None and lsn_gap("0/3000000", bad) is None


def test_a_replica_that_replayed_past_what_it_streamed_has_no_lag() -> None:
    """After a rewind or a switchover the standby replays its own WAL past the point
    where its receiver starts (the segment's start): 0, not -34888 (as seen)."""
    received, replayed = "0/3000000", "0/3008848"
    assert lsn_gap(received, replayed) == 0
    assert later_lsn(received, replayed) == replayed


def test_wal_received_and_not_yet_replayed_is_the_lag() -> None:
    assert lsn_gap("0/3008848", "0/3000000") == 0x8848
    assert lsn_gap("1/10", "0/FFFFFFF0") == 0x20  # across the 4 GiB boundary
    assert later_lsn("0/3008848", None) == "0/3008848"
    assert later_lsn(None, "0/3008848") == "0/3008848"
