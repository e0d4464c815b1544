"""The log of a dbha process (dbha.node.logs): with --json-log every line is one
JSON object, a decision carries its fields as keys, an exception is a field, and
a secret never appears; without it the human format is unchanged."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dbha.core.model import (
    ACQUIRE_VIP,
    PROMOTE,
    Decision,
    NodeRole,
    NodeState,
)
from dbha.node import logs
from dbha.node.daemon import Supervisor
from dbha.node.logs import REPEAT_FAILED_EVERY

ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.setup("debug", json_lines=True, static={"service": "pg", "node": "b"}, stream=out)
    yield out
    logs.teardown()


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_of_every_logger_is_one_json_object(stream: io.StringIO) -> None:
    logging.getLogger("dbha").info("plain %s", "words")
    logging.getLogger("dbha.executor").warning("two\nlines")
    logging.getLogger("psycopg").error("a library's line")
    logging.getLogger().debug("the root's")
    lines = _lines(stream)  # json.loads fails on any line that is not one object
    assert [(x["logger"], x["level"], x["message"]) for x in lines] == [
        ("dbha", "info", "plain words"),
        ("dbha.executor", "warning", "two\nlines"),
        ("psycopg", "error", "a library's line"),
        ("root", "debug", "the root's"),
    ]
    assert len(stream.getvalue().splitlines()) == 4  # the newline stayed inside its line
    for x in lines:
        assert ISO_MS_UTC.match(x["time"]), x["time"]
        assert (x["service"], x["node"]) == ("pg", "b")


def test_the_time_is_utc_with_milliseconds() -> None:
    assert logs.iso_utc(0.0) == "1970-01-01T00:00:00.000Z"
    assert logs.iso_utc(1_796_000_000.1234) == "2026-11-30T00:53:20.123Z"


def test_an_exception_is_a_field(stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("dbha").exception("it failed")
    (x,) = _lines(stream)
    assert x["message"] == "it failed" and x["level"] == "error"
    assert x["exception"].startswith("Traceback (most recent call last):")
    assert x["exception"].rstrip().endswith("ValueError: boom")


def test_an_uncaught_exception_in_a_thread_is_logged_as_json(stream: io.StringIO) -> None:
    def fail() -> None:
        raise RuntimeError("thread died")

    t = threading.Thread(target=fail, name="dbha-test")
    t.start()
    t.join(5)
    (x,) = _lines(stream)
    assert x["level"] == "critical" and x["logger"] == "dbha.crash"
    assert "dbha-test" in x["message"] and "RuntimeError: thread died" in x["exception"]


def test_structured_fields_are_keys_and_never_replace_the_base_keys(
    stream: io.StringIO,
) -> None:
    fields = {"rule": "r", "epoch": 3, "actions": ["Promote"], "message": "not this", "error": None}
    logging.getLogger("dbha").info("the line", extra={logs.FIELDS: fields})
    (x,) = _lines(stream)
    assert x["message"] == "the line"
    assert (x["rule"], x["epoch"], x["actions"], x["error"]) == ("r", 3, ["Promote"], None)


def test_a_secret_is_masked_in_both_formats() -> None:
    for json_lines in (True, False):
        out = io.StringIO()
        logs.setup(json_lines=json_lines, secrets=["hunter2-password"], stream=out)
        try:
            logging.getLogger("dbha").error(
                "connect failed: password=%s",
                "hunter2-password",
                extra={logs.FIELDS: {"error": "with hunter2-password inside"}},
            )
        finally:
            logs.teardown()
        text = out.getvalue()
        assert "hunter2" not in text
        assert f"password={logs.MASK}" in text


def test_secrets_are_read_from_their_files(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pass\n")
    key = tmp_path / "key"
    key.write_bytes(bytes(range(200, 232)))  # random bytes are never text in a line
    got = logs.secrets_of([pw, key, None, tmp_path / "absent"])
    assert "s3cret-pass" in got and all("\n" not in s or s.endswith("\n") for s in got)
    assert len(logs.secrets_of([key])) == 0


def test_the_text_format_is_unchanged() -> None:
    out = io.StringIO()
    logs.setup(stream=out)
    try:
        logging.getLogger("dbha").info("failover-promote: a is silent")
    finally:
        logs.teardown()
    line = out.getvalue().rstrip("\n")
    assert re.match(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO dbha: failover-promote: a is silent$", line
    ), line


# ------------------------------------------------------- the supervisor's lines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _loop(state: NodeState, clock: Clock | None = None) -> Any:
    """What Supervisor._log reads of its supervisor."""
    return SimpleNamespace(last=None, state=state, _failures=logs.Repeats(clock or Clock()))


PROMOTING = Decision(
    NodeState(role=NodeRole.PROMOTING, epoch=4),
    (PROMOTE, ACQUIRE_VIP),
    "failover-promote",
    "a is silent and dead: promoting at epoch 4",
)


def test_a_decision_line_carries_its_fields_as_keys(stream: io.StringIO) -> None:
    sup = _loop(NodeState(role=NodeRole.REPLICA, epoch=3))
    Supervisor._log(sup, PROMOTING, None, "")  # type: ignore[arg-type]
    (x,) = _lines(stream)
    assert x["logger"] == "dbha" and x["level"] == "info"
    assert x["message"] == (
        "failover-promote: a is silent and dead: promoting at epoch 4 [Promote, AcquireVip]"
    )
    assert x["rule"] == "failover-promote"
    assert x["reason"] == "a is silent and dead: promoting at epoch 4"
    assert (x["role"], x["epoch"]) == ("replica", 3)
    assert x["actions"] == ["Promote", "AcquireVip"]
    assert x["error"] is None


def test_a_decision_that_fails_the_same_way_again_is_logged_once_a_minute(
    stream: io.StringIO,
) -> None:
    clock = Clock()
    sup = _loop(NodeState(role=NodeRole.REPLICA, epoch=3), clock)
    error = "refused: vetoed by the pre_promote hook /x: exit 1: no"
    for _ in range(5):
        Supervisor._log(sup, PROMOTING, None, error)  # type: ignore[arg-type]
        sup.last = PROMOTING
    (x,) = _lines(stream)
    assert x["error"] == error and "repeated" not in x
    clock.now += REPEAT_FAILED_EVERY  # a minute later
    Supervisor._log(sup, PROMOTING, None, error)  # type: ignore[arg-type]
    last = _lines(stream)[-1]
    assert last["repeated"] == 4
    assert last["message"].endswith("(the same 4 more times since)")
    Supervisor._log(sup, PROMOTING, None, "another error")  # type: ignore[arg-type]
    assert _lines(stream)[-1]["error"] == "another error"


# ------------------------------------------------------------- the lease keeper


def test_the_keeper_logs_json_lines_too(tmp_path: Path) -> None:
    """The keeper writes to the supervisor's stream: with --json-log, in JSON."""
    res = subprocess.run(
        [sys.executable, "-m", "dbha.node.keeper", "-c", str(tmp_path / "no.toml"), "--json-log"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    (x,) = [json.loads(line) for line in res.stderr.splitlines()]
    assert x["logger"] == "dbha.keeper" and x["level"] == "error"
    assert "no.toml" in x["message"]


def test_a_decision_in_between_does_not_interrupt_the_repeats() -> None:
    clock = Clock()
    r = logs.Repeats(clock)
    assert r.admit(("failover-promote", "x", "vetoed")) == 0
    assert r.admit(None) == 0  # a failover-blocked in between is logged
    assert r.admit(("failover-promote", "x", "vetoed")) is None
    assert r.admit(("failover-promote", "x", "another")) == 0
    clock.now += REPEAT_FAILED_EVERY
    assert r.admit(("failover-promote", "x", "another")) == 0
