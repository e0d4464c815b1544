"""Hooks, check scripts (fall/rise) and the systemd notify protocol."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from dbha.config import CheckConfig
from dbha.node import sdnotify
from dbha.node.checkscripts import CheckState, run_check
from dbha.node.hooks import Event, HookRunner


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _event(name: str = "promoted") -> Event:
    return Event(
        name,
        service="pg",
        node="b",
        peer="a",
        epoch=7,
        role="primary",
        at=1.5,
        detail="peer dead on every path",
    )


# -------------------------------------------------------------------- hooks


def test_a_hook_gets_the_event_as_argument_and_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hook = _script(
        tmp_path / "hook", f'echo "$1 $DBHA_EVENT $DBHA_NODE $DBHA_EPOCH $DBHA_DETAIL" > {out}'
    )
    runner = HookRunner([hook], timeout_s=5)
    runner.start()
    runner.fire(_event())
    assert runner.stop(timeout=10)
    assert out.read_text().strip() == "promoted promoted b 7 peer dead on every path"
    assert runner.stats.ran == 1 and runner.stats.failed == 0


def test_failing_and_slow_hooks_are_counted_not_raised(tmp_path: Path) -> None:
    bad = _script(tmp_path / "bad", "exit 3")
    slow = _script(tmp_path / "slow", "sleep 30")
    runner = HookRunner([bad, slow], timeout_s=0.3)
    runner.run_now(_event("fenced"))
    assert (runner.stats.ran, runner.stats.failed, runner.stats.timed_out) == (2, 1, 1)
    assert runner.stats.by_event == {"fenced": 2}


def test_fire_never_blocks_when_the_queue_is_full(tmp_path: Path) -> None:
    slow = _script(tmp_path / "slow", "sleep 30")
    runner = HookRunner([slow], timeout_s=0.2)  # not started: nothing drains the queue
    for _ in range(300):
        runner.fire(_event("path_down"))
    assert runner.stats.dropped == 300 - 256


def test_unknown_events_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event"):
        _event("promted")


# ------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("fall", "rise", "results", "passing"),
    [
        (3, 2, [False, False], [True, True]),
        (3, 2, [False, False, False], [True, True, False]),
        (3, 2, [False, False, True, False, False], [True] * 5),  # not in a row
        (1, 1, [False, True], [False, True]),
        (2, 3, [False, False, True, True, True], [True, False, False, False, True]),
        (2, 3, [False, False, True, True, False, True], [True, False, False, False, False, False]),
    ],
)
def test_fall_and_rise(fall: int, rise: int, results: list[bool], passing: list[bool]) -> None:
    st = CheckState("c", fall=fall, rise=rise)
    seen = []
    for ok in results:
        st = st.record(ok)
        seen.append(st.passing)
    assert seen == passing
    assert st.runs == len(results)


def test_run_check_reports_exit_and_timeout(tmp_path: Path) -> None:
    ok = _script(tmp_path / "ok", "echo fine")
    bad = _script(tmp_path / "bad", "echo broken >&2; exit 2")
    slow = _script(tmp_path / "slow", "sleep 30")

    def cfg(p: Path) -> CheckConfig:
        return CheckConfig(p.name, (str(p),), interval_ms=1000, timeout_ms=300, fall=1, rise=1)

    assert run_check(cfg(ok)) == (True, "exit 0: fine")
    assert run_check(cfg(bad)) == (False, "exit 2: broken")
    assert run_check(cfg(slow)) == (False, "no answer within 300 ms")
    assert run_check(cfg(tmp_path / "absent"))[0] is False


# ----------------------------------------------------------------- sdnotify


def test_sdnotify_sends_to_the_socket_and_is_silent_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.notify("READY=1", "STATUS=primary, peer b up\nsecond line")
        assert srv.recv(1024) == b"READY=1\nSTATUS=primary, peer b up second line"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.notify("WATCHDOG=1") is False  # lost, not raised


def test_watchdog_interval_is_half_the_timeout_for_this_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert sdnotify.watchdog_interval() is None
