"""A pre_promote hook that vetoes, and a supervisor that logs JSON, in a real lab.

Scenario (PostgreSQL, a lab of its own with supervisors): the replica b runs with
``log.format = "json"`` and a ``hooks.pre_promote`` that exits 1 unless a flag
file exists. The primary a's database is killed (a's supervisor lives on, sees
its database fail and hands over). Expected: b does not promote (it stays a
replica at its epoch, without the VIP), its log says the hook vetoed the
switchover-kind promotion, with the hook's output, once and not per tick though
the hook is asked again, and its status carries the failover_refused alert
naming the veto; every line of its log (the lease keeper's too) is one JSON
object. Then the flag is set: b promotes at the next epoch and takes the VIP. The
lab is torn down afterwards.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from typing import Any

import pytest

from dbha import config
from dbha.lab.core import Lab
from dbha.lab.wait import wait_until
from dbha.node.control import local_request
from tests.lab.conftest import _need_root, session_prefix

SERVICE, PRIMARY, REPLICA = "pg", "a", "b"
# The promotion rules, and what the hook is told of each (its first argument).
PROMOTIONS = {"handover-promote": "switchover", "failover-promote": "failover"}


@pytest.fixture(scope="module")
def pp_lab(root_links_before: set[str]) -> Iterator[Lab]:
    _need_root()
    lab = Lab(session_prefix() + "pp")
    try:
        lab.up(install=False, supervisors=True)
        yield lab
    finally:
        lab.down()


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line after the lab's own start mark, each parsed (json.loads raises on
    any line that is not one JSON object)."""
    lines = text.splitlines()
    assert lines and lines[0].startswith("--- dbha lab: "), lines[:1]
    return [json.loads(line) for line in lines[1:] if line.strip()]


def test_a_vetoing_pre_promote_hook_keeps_the_replica_a_replica(pp_lab: Lab) -> None:
    sups = pp_lab.supervisors
    paths = sups.paths(SERVICE, REPLICA)
    flag = paths.config.parent / "allow-promotion"
    runs = paths.config.parent / "pre-promote.runs"
    flag.unlink(missing_ok=True)
    runs.unlink(missing_ok=True)
    hook = paths.config.parent / "pre-promote"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$1" >> {runs}\n'
        f'[ -e {flag} ] && {{ echo "allowed: $1"; exit 0; }}\n'
        'echo "not today: $1 at epoch $DBHA_EPOCH of $DBHA_SERVICE"\n'
        "exit 1\n"
    )
    hook.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP)
    text = paths.config.read_text()
    assert 'format = "text"' in text and "[hooks]" not in text
    text = text.replace('format = "text"', 'format = "json"')
    text += f'\n[hooks]\npre_promote = "{hook}"\npre_promote_timeout_ms = 1000\n'
    paths.config.write_text(text)
    sups.stop(SERVICE, REPLICA)
    sups.start(SERVICE, REPLICA, "run")
    sups.wait_started(SERVICE, REPLICA, "run")

    def status() -> dict[str, Any]:
        """b's supervisor's own status, asked over its control socket (bounded)."""
        reply = local_request(paths.control_socket, {"cmd": "status"}, timeout=5.0)
        assert reply.get("ok"), reply
        return dict(reply["status"])

    def following() -> bool:
        st = status()
        return st["role"] == "replica" and (st["decision"] or {}).get("rule") == "replica-follow"

    wait_until(following, 30, "b to follow a again after its restart")
    epoch = status()["epoch"]

    pp_lab.kill_db(PRIMARY, SERVICE)

    def vetoed() -> list[dict[str, Any]]:
        return [
            x
            for x in _json_lines(sups.log_since_start(SERVICE, REPLICA))
            if x.get("rule") in PROMOTIONS and "vetoed" in (x.get("error") or "")
        ]

    wait_until(lambda: bool(vetoed()), 30, "b's promotion to be vetoed by its hook")
    # Decided again at every tick; the hook asked again after its 5 s hold.
    wait_until(lambda: len(runs.read_text().split()) >= 2, 30, "the hook to be asked again")
    st = status()
    assert (st["role"], st["epoch"]) == ("replica", epoch)
    assert REPLICA not in pp_lab.vip_holders(SERVICE)
    alert = st["alerts"]["failover_refused"]
    assert "vetoed by the pre_promote hook" in alert and "not today: " in alert

    lines = _json_lines(sups.log_since_start(SERVICE, REPLICA))
    assert {x["logger"] for x in lines} >= {"dbha", "dbha.executor", "dbha.hooks"}
    (decision,) = vetoed()  # once, not once per tick (the same veto, within a minute)
    kind = PROMOTIONS[decision["rule"]]
    assert decision["role"] == "replica" and decision["epoch"] == epoch
    assert decision["actions"][0] == "PrePromote"
    assert decision["error"] == (
        f"vetoed by the pre_promote hook {hook} "
        f"(exit 1: not today: {kind} at epoch {epoch + 1} of {SERVICE})"
    )
    hook_lines = [x for x in lines if x["logger"] == "dbha.hooks" and "vetoed" in x["message"]]
    assert len(hook_lines) == 1 and f"not today: {kind}" in hook_lines[0]["message"]
    assert set(runs.read_text().split()) == {kind}

    flag.touch()
    wait_until(
        lambda: status()["role"] == "primary" and pp_lab.vip_holders(SERVICE) == [REPLICA],
        30,
        "b to promote once its hook allows it",
    )
    assert status()["epoch"] == epoch + 1
    log_text = sups.log_since_start(SERVICE, REPLICA)
    lines = _json_lines(log_text)
    assert any(x["logger"] == "dbha.hooks" and "passes again" in x["message"] for x in lines)
    cfg = config.load(paths.config)
    assert cfg.database.password_file is not None
    password = cfg.database.password_file.read_text().strip()
    assert len(password) >= 8 and password not in log_text  # no secret in the log
