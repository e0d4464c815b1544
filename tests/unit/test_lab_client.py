"""The lab client's pure parts: its log parser, the pause and recovery figures,
the row check, and the write loop's bookkeeping (driven by a scripted session)."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from dbha.lab.client import (
    Ack,
    ClientError,
    ClientLog,
    Pause,
    Recorder,
    Target,
    effect_at,
    first_ack_after,
    longest_pause,
    missing_rows,
    node_changes,
    outage,
    parse_log,
    pauses,
    recovery,
    write_loop,
)


def _lines(*records: dict[str, object]) -> list[str]:
    return [json.dumps(r) for r in records]


# ------------------------------------------------------------------ parsing


def test_a_whole_log_is_read_back() -> None:
    log = parse_log(
        _lines(
            {
                "kind": "start",
                "t": 1.0,
                "run": "r1",
                "engine": "mariadb",
                "address": "x",
                "port": 3,
            },
            {"kind": "connect", "t": 1.1, "node": "b"},
            {"kind": "ack", "t": 1.2, "seq": 1, "token": "t1", "node": "b"},
            {"kind": "fail", "t": 1.3, "seq": 2, "phase": "commit", "error": "lost"},
            {"kind": "fail", "t": 1.4, "seq": None, "phase": "connect", "error": "refused"},
            {"kind": "ack", "t": 1.5, "seq": 3, "token": "t3", "node": "a", "notice": "n"},
            {"kind": "stop", "t": 2.0, "reason": "signal", "acks": 2, "fails": 2},
        )
    )
    assert (log.run, log.engine, log.address, log.port) == ("r1", "mariadb", "x", 3)
    assert (log.started, log.stopped, log.stop_reason) == (1.0, 2.0, "signal")
    assert log.acks == (Ack(1, "t1", 1.2, "b"), Ack(3, "t3", 1.5, "a", "n"))
    assert [(f.seq, f.phase) for f in log.failures] == [(2, "commit"), (None, "connect")]
    assert log.connects == ((1.1, "b"),)
    assert log.ack_times == [1.2, 1.5]
    assert log.unreadable == 0


@pytest.mark.parametrize(
    "line",
    [
        '{"kind": "ack", "t": 1.0, "seq": 4, "tok',  # cut short by a kill
        "[1, 2]",  # not an object
        '{"kind": "ack", "seq": 4, "token": "x"}',  # no time
        '{"kind": "ack", "t": true, "seq": 4, "token": "x"}',  # a bool is no time
        '{"kind": "ack", "t": 1.0, "seq": "4", "token": "x"}',  # seq not a number
        '{"kind": "what", "t": 1.0}',
        "\x00\xff not json",
    ],
)
def test_a_bad_line_is_counted_never_raised_nor_taken_for_an_ack(line: str) -> None:
    log = parse_log([*_lines({"kind": "start", "t": 0.0, "run": "r"}), line])
    assert log.acks == ()
    assert log.unreadable == 1


def test_a_log_without_start_has_no_run() -> None:
    log = parse_log(_lines({"kind": "ack", "t": 1.0, "seq": 1, "token": "a", "node": "a"}))
    assert log.run == "" and len(log.acks) == 1


# ------------------------------------------------------------------ figures


def test_pauses_are_the_gaps_between_consecutive_acks_longest_first() -> None:
    times = [0.0, 1.0, 6.0, 7.0, 2.0, 9.0]  # out of order on purpose
    assert [(p.start, p.end) for p in pauses(times)] == [
        (2.0, 6.0),
        (7.0, 9.0),
        (0.0, 1.0),
        (1.0, 2.0),
        (6.0, 7.0),
    ]
    assert [(p.start, p.end) for p in pauses(times, at_least=1.5)] == [(2.0, 6.0), (7.0, 9.0)]
    assert longest_pause(times) == Pause(2.0, 6.0)
    assert Pause(2.0, 6.0).seconds == 4.0


@pytest.mark.parametrize("times", [[], [3.0]])
def test_no_pause_without_two_acks(times: list[float]) -> None:
    assert longest_pause(times) is None
    assert pauses(times) == []


@pytest.mark.parametrize(
    ("times", "t", "first"),
    [
        ([1.0, 2.0, 3.0], 2.0, 3.0),  # strictly after
        ([1.0, 2.0, 3.0], 1.5, 2.0),
        ([3.0, 1.0, 2.0], 0.0, 1.0),
        ([1.0, 2.0], 2.5, None),
        ([], 0.0, None),
    ],
)
def test_first_ack_after(times: list[float], t: float, first: float | None) -> None:
    assert first_ack_after(times, t) == first


@pytest.mark.parametrize(
    ("acks", "fails", "fault", "effect", "rec", "pause"),
    [
        # Writes in flight while the fault lands still succeed (11.0); the fault
        # takes effect at the first failure (11.1); writes resume at 13.0.
        ([9.0, 10.0, 11.0, 13.0, 14.0], [11.1, 12.0], 10.5, 11.1, 2.5, (11.0, 13.0)),
        # No failure seen (a stall that ended by itself): from the injection.
        ([9.0, 10.0, 12.0], [], 10.5, 10.5, 1.5, (10.0, 12.0)),
        # Failures before the injection do not count.
        ([9.0, 10.0, 12.0], [9.5], 10.5, 10.5, 1.5, (10.0, 12.0)),
        # Never recovered.
        ([9.0, 10.0], [10.6], 10.5, 10.6, None, None),
    ],
)
def test_recovery_and_outage_count_from_when_the_fault_took_effect(
    acks: list[float],
    fails: list[float],
    fault: float,
    effect: float,
    rec: float | None,
    pause: tuple[float, float] | None,
) -> None:
    assert effect_at(fault, fails) == effect
    got = recovery(acks, fault, fails)
    assert got == (pytest.approx(rec) if rec is not None else None)
    out = outage(acks, fault, fails)
    assert (None if out is None else (out.start, out.end)) == pause


def test_missing_rows_names_absent_and_altered_rows_only() -> None:
    acks = [Ack(1, "a", 1.0, "x"), Ack(2, "b", 2.0, "x"), Ack(4, "d", 3.0, "x")]
    found = {1: "a", 2: "B", 3: "c"}  # 2 altered, 3 unacknowledged (a failed commit), 4 gone
    assert missing_rows(acks, found) == [2, 4]
    assert missing_rows(acks, {1: "a", 2: "b", 4: "d"}) == []


def test_node_changes_show_each_switch_of_the_acknowledging_node() -> None:
    acks = [Ack(1, "", 1.0, "a"), Ack(2, "", 2.0, "a"), Ack(3, "", 3.0, "b"), Ack(4, "", 4.0, "a")]
    assert node_changes(acks) == [(3.0, "a", "b"), (4.0, "b", "a")]
    assert node_changes(acks[:2]) == []


# --------------------------------------------------------------- write loop


class Scripted:
    """A session whose writes succeed or fail as a script says, by sequence number."""

    def __init__(self, node: str, fail: dict[int, str], stop_after: int, stop: threading.Event):
        self.node, self.fail, self.stop_after, self.stop = node, fail, stop_after, stop
        self.closed = False

    def write(self, run: str, seq: int, token: str) -> str | None:
        if seq >= self.stop_after:
            self.stop.set()
        if seq in self.fail:
            raise ClientError(self.fail[seq], "scripted")
        return None

    def close(self) -> None:
        self.closed = True


def test_the_loop_records_acks_only_after_commit_and_reconnects_after_a_failure() -> None:
    stop = threading.Event()
    connects: list[bool] = []
    sessions: list[Scripted] = []
    failing_connects = iter([True, False, False, False])

    def connector(t: Target, create_table: bool) -> Scripted:
        connects.append(create_table)
        if next(failing_connects):
            raise ClientError("connect", "refused")
        s = Scripted(f"n{len(sessions)}", {2: "commit", 4: "write"}, stop_after=5, stop=stop)
        sessions.append(s)
        return s

    out = io.StringIO()
    target = Target("postgresql", "198.18.0.100", 5432, "app", "app", Path("/nonexistent"))
    counts = write_loop(target, Recorder(out), 30.0, stop, connector)
    log = parse_log(out.getvalue().splitlines())
    assert [a.seq for a in log.acks] == [1, 3, 5]  # 2 and 4 failed: never acknowledged
    assert [a.node for a in log.acks] == ["n0", "n1", "n2"]  # a new connection after each
    assert [(f.seq, f.phase) for f in log.failures] == [
        (None, "connect"),
        (2, "commit"),
        (4, "write"),
    ]
    assert connects == [True, True, False, False]  # the table is made until it once worked
    assert all(s.closed for s in sessions)
    assert (counts.acks, counts.fails) == (3, 3)
    assert log.stop_reason == "signal" and log.run
    assert len({a.token for a in log.acks}) == 3
    times = [a.t for a in log.acks]
    assert times == sorted(times)


def test_the_loop_ends_at_its_duration() -> None:
    stop = threading.Event()

    def connector(t: Target, create_table: bool) -> Scripted:
        return Scripted("n", {}, stop_after=10**9, stop=stop)

    out = io.StringIO()
    target = Target("mariadb", "198.18.0.101", 3306, "app", "app", Path("/nonexistent"))
    write_loop(target, Recorder(out), 0.05, stop, connector)
    log = parse_log(out.getvalue().splitlines())
    assert log.stop_reason == "duration"
    assert log.acks and log.stopped is not None and log.started is not None


def test_an_empty_log_is_an_empty_value() -> None:
    assert parse_log([]) == ClientLog()


def test_the_client_names_mariadb_nodes_by_the_labs_server_ids() -> None:
    from dbha.lab import client
    from dbha.lab.maria import SERVER_IDS

    assert {v: k for k, v in SERVER_IDS.items()} == client._SERVER_NODES
