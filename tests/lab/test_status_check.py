"""``dbha check`` and ``dbha status`` on a pair with its supervisors running, as an
operator runs them inside a database host.

A primary whose peer cannot take over is not OK: with the replica's database
killed, or with the peer fenced and needing a resync after a failover, ``dbha
check`` on the primary says WARNING and why; in strict synchronous mode, where
its commits wait for that peer, CRITICAL (WARNING once relaxed). ``dbha status``
answers with the local supervisor stopped (what it can see directly, and that
the supervisor is down: exit 4) and with the peer's supervisor stopped (exit 1).

The asynchronous cases run on the session lab with its supervisors started for
the test; the strict ones on a synchronous lab of this module's own, its
supervisors restarted on ``sync_fallback = "strict"``. Every test leaves its
pairs as built and healthy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dbha.lab import topology as topo
from dbha.lab.core import Lab
from dbha.lab.wait import wait_until
from tests.lab.helpers import as_built, ns_exec, strict_sync, supervised_lab

pytestmark = pytest.mark.lab

SERVICES = list(topo.SERVICES)
WAIT = 30.0  # bound on the supervisors noticing a fault (they take a few seconds)


def _dbha(lab: Lab, service: str, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = str(lab.supervisors.paths(service, host).config)
    return ns_exec(lab, host, sys.executable, "-m", "dbha", *args, "-c", cfg, timeout=60)


def _check_until(lab: Lab, service: str, host: str, code: int, words: str) -> str:
    """``dbha check`` on ``host`` until it exits ``code`` naming ``words`` (bounded);
    its line."""
    seen = ""

    def said() -> bool:
        nonlocal seen
        res = _dbha(lab, service, host, "check")
        seen = f"exit {res.returncode}: {res.stdout.strip()} {res.stderr.strip()}"
        return res.returncode == code and words in res.stdout

    try:
        wait_until(said, WAIT, f"dbha check on {host} to say {words!r}", 0.3)
    except Exception as exc:
        raise AssertionError(f"{service} on {host}: last seen {seen}") from exc
    return seen


def _status(lab: Lab, service: str, host: str) -> tuple[int, dict[str, object], str]:
    """``dbha status`` on ``host``: its exit code, its JSON and its text."""
    res = _dbha(lab, service, host, "status", "--json")
    text = _dbha(lab, service, host, "status")
    return res.returncode, json.loads(res.stdout), text.stdout


def _restore(lab: Lab, service: str) -> None:
    lab.heal()
    if not as_built(lab, service):
        lab.rebuild_service(service)
    svc = topo.SERVICES[service]
    _check_until(lab, service, svc.primary, 0, "DBHA OK")


@pytest.fixture
def running(healthy_lab: Lab, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The session lab (asynchronous) with dbha supervisors running; afterwards the
    test's pair (its ``service`` parameter) as built, and the supervisors as they
    were."""
    lab = healthy_lab
    mode = lab.supervisor_mode()
    if mode != "run":
        lab.stop_supervisors()
        lab.start_supervisors("run")
    try:
        yield lab
    finally:
        try:
            _restore(lab, request.node.callspec.params["service"])
        finally:
            if mode != "run":
                lab.stop_supervisors()
                if mode is not None:
                    lab.start_supervisors(mode)


@pytest.fixture(scope="module")
def slab(lab: Lab) -> Iterator[Lab]:
    """A synchronous lab of this module's own, with dbha supervisors."""
    with supervised_lab(lab, "sc") as other:
        yield other


@pytest.fixture
def strict(slab: Lab, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The synchronous lab with the test's pair as built and its supervisors on
    ``sync_fallback = "strict"`` (the default an operator gets; the lab's own is
    "fallback"); as built again afterwards, on the lab's setting."""
    service = request.node.callspec.params["service"]
    _restore(slab, service)
    try:
        with strict_sync(slab, service):
            yield slab
            slab.heal()
    finally:
        _restore(slab, service)


@pytest.mark.parametrize("service", SERVICES)
def test_the_replicas_database_killed_is_a_warning_on_the_primary(
    running: Lab, service: str
) -> None:
    """Asynchronous pair, supervisors running: the replica's server is killed. The
    primary serves on, but nothing could take over: its check says WARNING, no
    standby, and why; dbha status there exits 1 (degraded) saying the same. Once
    the server is back, OK again."""
    lab = running
    svc = topo.SERVICES[service]
    _check_until(lab, service, svc.primary, 0, "DBHA OK")
    lab.kill_db(svc.replica, service)
    line = _check_until(
        lab, service, svc.primary, 1, f"no standby: {svc.replica}'s database does not answer"
    )
    assert "DBHA WARNING" in line
    code, report, text = _status(lab, service, svc.primary)
    assert (code, report["health"]) == (1, "degraded"), text
    assert f"no standby: {svc.replica}'s database does not answer" in text
    assert "DOES NOT ANSWER" in text  # the peer's column
    lab.heal()
    _check_until(lab, service, svc.primary, 0, "DBHA OK")


@pytest.mark.parametrize("service", SERVICES)
def test_a_peer_fenced_and_needing_a_resync_is_a_warning_on_the_new_primary(
    running: Lab, service: str
) -> None:
    """The primary's server is killed: the replica takes over. Healed, the old
    primary comes back fenced, needing a resync: the new primary's check says
    WARNING, no standby, the peer needs a resync (it said OK before this was
    fixed); dbha status there says the same and names the failover. For
    PostgreSQL the old primary is then resynced (pg_rewind) and the lab's status
    shows its lag at once, never negative (it was, right after a rewind)."""
    lab = running
    svc = topo.SERVICES[service]
    old, new = svc.primary, svc.replica
    lab.kill_db(old, service)
    wait_until(lambda: lab.vip_holders(service) == [new], WAIT, f"{new} to take over", 0.2)
    lab.heal()
    line = _check_until(lab, service, new, 1, f"no standby: {old} needs a resync")
    assert "DBHA WARNING" in line
    code, report, text = _status(lab, service, new)
    assert code == 1 and report["health"] == "degraded", text
    last = report["last_failover"]
    assert isinstance(last, dict) and last["node"] == new and last["kind"] == "failover", last
    assert f"{new} promoted at epoch" in text
    if service == "pg":
        res = _dbha(lab, service, old, "resync")
        assert res.returncode == 0, res.stdout + res.stderr
        node = lab.node(service, old)
        wait_until(lambda: bool(node.status().get("streaming")), WAIT, f"{old} to stream", 0.1)
        st = node.status()  # no write since: its receiver started behind its replay
        assert st["role"] == "replica" and st["lag_bytes"] is not None, st
        assert st["lag_bytes"] >= 0, st
        _check_until(lab, service, new, 0, "DBHA OK")


@pytest.mark.parametrize("service", SERVICES)
def test_strict_synchronous_mode_without_a_standby_is_critical_until_relaxed(
    strict: Lab, service: str
) -> None:
    """Synchronous pair, strict (the default): the replica's server is killed, so
    every commit on the primary waits. Its check says CRITICAL: no standby, commits
    wait in strict synchronous mode, and the way out; dbha status exits 3. After
    dbha sync relax the primary accepts asynchronous commits: WARNING, relaxed."""
    lab = strict
    svc = topo.SERVICES[service]
    lab.kill_db(svc.replica, service)
    line = _check_until(lab, service, svc.primary, 2, "strict synchronous mode")
    assert f"no standby: {svc.replica}'s database does not answer" in line, line
    assert "dbha sync relax" in line
    code, report, text = _status(lab, service, svc.primary)
    assert (code, report["health"]) == (3, "critical"), text
    res = _dbha(lab, service, svc.primary, "sync", "relax")
    assert res.returncode == 0, res.stdout + res.stderr
    _check_until(lab, service, svc.primary, 1, "strict synchronous commit relaxed")


@pytest.mark.parametrize("service", ["pg"])
def test_status_answers_with_either_supervisor_stopped(running: Lab, service: str) -> None:
    """The primary's supervisor is stopped (a clean stop: no failover follows).
    dbha status there still answers: its supervisor is not running (exit 4), the
    database as probed directly (a writable primary), the VIP here, the persisted
    role, and the peer as its supervisor sees it. On the replica, the peer's
    supervisor cannot be asked: exit 1, said plainly."""
    lab = running
    svc = topo.SERVICES[service]
    lab.supervisors.stop(service, svc.primary)
    code, report, text = _status(lab, service, svc.primary)
    assert (code, report["health"], report["local_supervisor"]) == (
        4,
        "local supervisor down",
        "not running",
    ), text
    local = report["local"]
    assert isinstance(local, dict)
    assert local["database"]["role"] == "primary" and local["database"]["writable"] is True
    assert local["vip"]["held_here"] is True and local["role"] == "primary"
    peer = report["peer"]
    assert isinstance(peer, dict) and peer["node"] == svc.replica and peer["role"] == "replica"
    assert "NOT RUNNING" in text and "looked at directly" in text
    assert "primary, writable" in text
    code, report, text = _status(lab, service, svc.replica)
    assert (code, report["health"]) == (1, "degraded"), text
    assert "CANNOT BE ASKED" in text and "the peer's supervisor cannot be asked" in text
    lab.start_supervisors("run")  # it starts fenced and resumes once b confirms
    wait_until(
        lambda: _dbha(lab, service, svc.primary, "status").returncode == 0,
        WAIT,
        "dbha status to say the pair is healthy again",
        0.3,
    )
