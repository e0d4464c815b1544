"""The pair's shared settings, checked by the running supervisors, and a reload.

Scenario, for each pair: its supervisors start with one shared setting different
on node b (the lag bound: ``replication.max_lag_bytes`` for PostgreSQL,
``replication.max_lag_transactions`` for MariaDB). Both nodes' ``dbha status``
and ``dbha check`` name that key; how long after the start each reported it is
printed (not asserted: the machine is shared). Then b's file is edited (the lag
bound back as on a, a new check script and a hook: live; ``heartbeat.rise``
changed: needs a restart) and b gets SIGHUP as ``systemctl reload`` sends it:
its log says what was applied and what was refused, its status shows the new
bound and the new check, the new hook hears the ``reloaded`` event, the history
has it, and both nodes agree again. A file that does not load is refused
whole and the supervisor keeps running.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbha.lab.core import Lab
from dbha.lab.wait import wait_until
from tests.lab.helpers import ns_exec

HOSTS = ("a", "b")
# Per service: the lag bound's key, its value on a (the default) and on b.
CASES = {
    "pg": ("replication.max_lag_bytes", 1048576, 2097152),
    "mariadb": ("replication.max_lag_transactions", 100, 200),
}
WAIT = 30.0  # bound on each wait below (seconds)


def _run_status(lab: Lab, service: str, host: str, *flags: str) -> str:
    cfg = str(lab.supervisors.paths(service, host).config)
    res = ns_exec(lab, host, sys.executable, "-m", "dbha", "status", "-c", cfg, *flags)
    return res.stdout


def _local(lab: Lab, service: str, host: str) -> dict[str, Any]:
    """The local node's part of ``dbha status --json`` ({} when there is none)."""
    try:
        answer = json.loads(_run_status(lab, service, host, "--json"))
    except ValueError:
        return {}
    local = answer.get("local") if isinstance(answer, dict) else None
    return dict(local) if isinstance(local, dict) else {}


def _settings(lab: Lab, service: str, host: str) -> dict[str, Any]:
    """The local node's ``settings`` field of ``dbha status --json``."""
    got = _local(lab, service, host).get("settings")
    return dict(got) if isinstance(got, dict) else {}


def _check(lab: Lab, service: str, host: str) -> tuple[int, str]:
    cfg = str(lab.supervisors.paths(service, host).config)
    res = ns_exec(lab, host, sys.executable, "-m", "dbha", "check", "-c", cfg, timeout=60)
    return res.returncode, res.stdout.strip()


@pytest.fixture(params=list(CASES))
def service(request: pytest.FixtureRequest, healthy_lab: Lab) -> Iterator[str]:
    """A service of the session lab, with no supervisor running; its configs are
    restored and the lab's supervisors brought back as they were afterwards."""
    lab, name = healthy_lab, str(request.param)
    mode = lab.supervisor_mode()
    lab.stop_supervisors()
    texts = {h: lab.supervisors.paths(name, h).config.read_text() for h in HOSTS}
    try:
        yield name
    finally:
        for h in HOSTS:
            lab.supervisors.stop(name, h)
            lab.supervisors.paths(name, h).config.write_text(texts[h])
        lab.stop_supervisors()  # and the VIPs away, as the lab is without supervisors
        if mode is not None:
            lab.start_supervisors(mode)


def _edit(lab: Lab, service: str, host: str, table: str, line: str) -> None:
    """Put ``line`` first in ``[table]`` of the host's config."""
    path = lab.supervisors.paths(service, host).config
    text = path.read_text()
    head = f"[{table}]\n"
    assert head in text, text
    path.write_text(text.replace(head, head + line + "\n", 1))


def test_a_shared_setting_that_differs_is_reported_and_a_reload_applies_what_it_can(
    healthy_lab: Lab, service: str, tmp_path: Path
) -> None:
    lab = healthy_lab
    key, here, there = CASES[service]
    setting = f"{key.split('.')[1]} = {there}"
    _edit(lab, service, "b", "replication", setting)
    started, wall = time.monotonic(), time.time()
    for h in HOSTS:
        lab.supervisors.start(service, h, "run")
    seen: dict[str, float] = {}

    def reported() -> bool:
        for h in HOSTS:
            if h in seen:
                continue
            s = _settings(lab, service, h)
            if s.get("match") is False and s.get("differ") == [key]:
                seen[h] = time.monotonic() - started
        return len(seen) == len(HOSTS)

    wait_until(reported, WAIT, "both nodes to report the differing setting", interval=0.05)
    for h in HOSTS:
        found = _settings(lab, service, h)["differ_found_in_s"]
        print(
            f"\n{service} {h}: the differing key shown by `dbha status` {seen[h]:.2f} s after "
            f"the start; {found:.3f} s from the tick that saw the peer's digest to the key known"
        )
    for h in HOSTS:
        st = _settings(lab, service, h)
        assert st["digest"] != st["peer_digest"] and len(st["digest"]) == 16, st
        code, line = _check(lab, service, h)
        assert code >= 1 and f"settings differ from {'b' if h == 'a' else 'a'}: {key}" in line
        assert line.startswith(("DBHA WARNING", "DBHA CRITICAL")), line
    log_a = lab.supervisors.log_since_start(service, "a")
    assert f"settings differ from b's: {key} here {here}, b {there}" in log_a, log_a[-2000:]
    assert log_a.count("settings differ from b's") == 1  # once per change
    text = _run_status(lab, service, "a")
    assert f"WARNING: a: settings differ from b: {key}" in text, text

    # The reload: the lag bound as on a and a check script (live), heartbeat.rise
    # (restart needed).
    b_config = lab.supervisors.paths(service, "b").config
    b_config.write_text(b_config.read_text().replace(setting + "\n", "", 1))
    _edit(lab, service, "b", "heartbeat", "rise = 4")
    heard = tmp_path / "hook.out"
    hook = tmp_path / "hook"
    hook.write_text(f'#!/bin/sh\necho "$1: $DBHA_DETAIL" >> {heard}\n')
    hook.chmod(0o755)
    with b_config.open("a") as f:
        f.write('\n[[check]]\nname = "reloaded"\nargv = ["/bin/true"]\n')
        f.write(f'\n[hooks]\non_event = ["{hook}"]\n')
    pid = lab.supervisors.pid(service, "b")
    assert pid is not None
    os.kill(pid, signal.SIGHUP)

    def log_b() -> str:
        return lab.supervisors.log_since_start(service, "b")

    wait_until(lambda: "reload: applied:" in log_b(), WAIT, "b's reload", interval=0.05)
    assert "reload: not applied: heartbeat.rise (restart needed)" in log_b(), log_b()[-2000:]
    assert f"reload: applied: check, hooks.on_event, {key}" in log_b(), log_b()[-2000:]
    wait_until(heard.exists, WAIT, "the new hook to run", interval=0.05)
    said = f"applied: check, hooks.on_event, {key}; not applied (restart needed): heartbeat.rise"
    assert heard.read_text() == f"reloaded: {said}\n"
    history = lab.supervisors.paths(service, "b").state_dir / "history.jsonl"
    events = [json.loads(line) for line in history.read_text().splitlines()]
    assert [
        (e["event"], e["detail"])
        for e in events
        if e["at"] >= wall - 1 and e["event"] == "reloaded"
    ] == [("reloaded", said)]

    def agree() -> bool:
        return all(_settings(lab, service, h).get("match") is True for h in HOSTS)

    wait_until(agree, WAIT, "both nodes to share their settings again", interval=0.1)
    b = _settings(lab, service, "b")
    assert b["values"][key] == here
    assert b["values"]["heartbeat.rise"] != 4  # refused: the running value is kept
    assert _local(lab, service, "b")["checks"] == {"reloaded": True}
    assert "shares this node's settings again" in lab.supervisors.log_since_start(service, "a")
    code, line = _check(lab, service, "a")
    assert "settings differ" not in line, line

    # A file that does not load is refused whole; the supervisor keeps running (and
    # once the file is good again, `dbha status`, which reads it too, finds it as it was).
    good = b_config.read_text()
    _edit(lab, service, "b", "heartbeat", 'interval_ms = "fast"')
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: "reload: refused" in log_b(), WAIT, "b's refusal", interval=0.05)
    assert "heartbeat.interval_ms" in log_b().split("reload: refused", 1)[1].splitlines()[0]
    assert lab.supervisors.pid(service, "b") == pid
    b_config.write_text(good)
    after = _settings(lab, service, "b")
    assert after.get("match") is True and after["values"][key] == here, after
