"""The node's history file (dbha/node/history.py): appended, bounded, read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbha.node import history
from dbha.node.history import History


def test_events_are_appended_with_their_fields_and_read_oldest_first(tmp_path: Path) -> None:
    h = History(tmp_path, "pg", "a")
    assert h.record("started", "as replica", 3, "replica") is None
    assert h.record("path_down", "link", 3, "replica") is None
    got = history.read(tmp_path)
    assert [(e["event"], e["detail"], e["epoch"], e["role"]) for e in got] == [
        ("started", "as replica", 3, "replica"),
        ("path_down", "link", 3, "replica"),
    ]
    assert {e["service"] for e in got} == {"pg"} and {e["node"] for e in got} == {"a"}
    assert got[0]["at"] <= got[1]["at"]
    assert (tmp_path / "history.jsonl").stat().st_mode & 0o777 == 0o600
    assert [e["event"] for e in history.read(tmp_path, last=1)] == ["path_down"]


def test_a_failover_and_a_switchover_carry_their_duration(tmp_path: Path) -> None:
    h = History(tmp_path, "pg", "b")
    h.record("promoted", "epoch 2", 2, "primary")  # no start seen: no duration
    h.record("failover_started", "a is dead", 2, "promoting")
    h.record("promoted", "epoch 3", 3, "primary")
    h.record("switchover_started", "", 3, "primary")
    h.record("switchover_done", "", 3, "handover")
    got = {(e["event"], e["epoch"]): e for e in history.read(tmp_path)}
    assert "duration_s" not in got["promoted", 2]
    assert got["promoted", 3]["duration_s"] >= 0
    assert got["switchover_done", 3]["duration_s"] >= 0
    assert "duration_s" not in got["failover_started", 2]


def test_the_file_stays_bounded_and_keeps_the_newest_whole_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history, "MAX_BYTES", 4000)
    h = History(tmp_path, "pg", "a")
    for i in range(200):
        assert h.record("path_down", f"n{i}", 1, "primary") is None
    size = (tmp_path / "history.jsonl").stat().st_size
    assert size <= 4000
    got = history.read(tmp_path)
    assert got[-1]["detail"] == "n199"
    numbers = [int(e["detail"][1:]) for e in got]
    assert numbers == list(range(numbers[0], 200)) and numbers[0] > 0
    raw = (tmp_path / "history.jsonl").read_bytes()
    assert all(json.loads(line) for line in raw.splitlines())


def test_a_damaged_line_is_skipped_and_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert history.read(tmp_path) == []
    h = History(tmp_path, "pg", "a")
    h.record("started", "", 0, "replica")
    with open(tmp_path / "history.jsonl", "ab") as f:
        f.write(b"{not json\n\xff\xfe\n[1, 2]\n")
    h.record("stopping", "", 0, "replica")
    assert [e["event"] for e in history.read(tmp_path)] == ["started", "stopping"]


def test_a_history_that_cannot_be_written_says_why_and_does_not_raise(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    problem = History(missing, "pg", "a").record("fenced", "", 1, "fenced")
    assert problem is not None and "cannot write the history" in problem
    assert not missing.exists()


def test_a_reply_holds_the_newest_events_that_fit() -> None:
    events = [{"event": "path_down", "detail": "x" * 100, "at": float(i)} for i in range(50)]
    kept = history.within(events, 1000)
    assert kept == events[-len(kept) :] and 0 < len(kept) < 50
    assert len(json.dumps(kept)) <= 1000 + 2 * len(kept)
    assert history.within(events, 10**6) == events


def test_an_event_reads_as_one_line() -> None:
    e = {"at": 0.0, "node": "b", "epoch": 3, "role": "primary", "event": "promoted"}
    assert history.line({**e, "duration_s": 1.5, "detail": "epoch 3"}).endswith(
        "b epoch 3 primary  promoted (1.500 s): epoch 3"
    )
    assert history.time_of({"at": True}) == 0.0 and history.time_of(e) == 0.0


def test_a_promotion_after_a_planned_handover_carries_its_duration(tmp_path: Path) -> None:
    h = History(tmp_path, "pg", "b")
    h.record("switchover_promoting", "a handed over (planned switchover)", 3, "replica")
    h.record("promoted", "epoch 4", 4, "primary")
    (promoted,) = [e for e in history.read(tmp_path) if e["event"] == "promoted"]
    assert promoted["duration_s"] >= 0
