"""``dbha check`` in the lab: rounds run from cron, and the check beside a running
supervisor.

Cron mode: the lab's supervisors are stopped and their state forgotten, and
``dbha check`` runs inside each host's namespace with the lab's own per-node
config, on both nodes of a pair at once (as cron starts them at the same
minute), so that the two rounds hear each other. Every test restores both
pairs as the lab built them, and the supervisors as they were.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from dbha.lab import topology as topo
from dbha.lab.core import Lab
from tests.lab.helpers import ns_exec

pytestmark = pytest.mark.lab

SERVICES = list(topo.SERVICES)
ROUND_TIMEOUT = 60.0  # bound on one round (it takes a few seconds)

Report = tuple[int, dict[str, Any]]


def _check(lab: Lab, service: str, host: str, *flags: str) -> list[str]:
    """``dbha check --json FLAGS`` with the lab's config of ``service`` on ``host``."""
    config = str(lab.supervisors.paths(service, host).config)
    return [sys.executable, "-m", "dbha", "check", "--json", *flags, "-c", config]


def rounds(
    lab: Lab, service: str, *flags: str, hosts: tuple[str, ...] = topo.DB_HOSTS
) -> dict[str, Report]:
    """Run ``dbha check --json FLAGS`` on ``hosts`` at once; each one's exit code and
    JSON report."""
    procs = {
        h: subprocess.Popen(
            lab.exec_argv(h, _check(lab, service, h, *flags)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for h in hosts
    }
    out: dict[str, Report] = {}
    try:
        for h, p in procs.items():
            stdout, stderr = p.communicate(timeout=ROUND_TIMEOUT)
            assert stdout.count("\n") == 1, (stdout, stderr)
            out[h] = (p.returncode, json.loads(stdout))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)
    return out


def _roles(service: str) -> tuple[str, str]:
    svc = topo.SERVICES[service]
    return svc.primary, svc.replica


@pytest.fixture
def cron_mode(healthy_lab: Lab, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The session lab with no supervisor running and no node state: the pairs as
    built, no VIP anywhere, for rounds run by hand as cron would. Afterwards the
    test's pair (its ``service`` parameter) is rebuilt as at up and the supervisors
    started again if they ran."""
    lab = healthy_lab
    service = request.node.callspec.params["service"]
    mode = lab.supervisor_mode()
    lab.stop_supervisors()
    for service, host in lab.supervisors.all():
        lab.supervisors.reset_state(service, host)
    try:
        yield lab
    finally:
        lab.rebuild_service(service)
        if mode is not None:
            lab.start_supervisors(mode)


def serve(lab: Lab, service: str) -> None:
    """Acting rounds on both nodes until the primary serves with the VIP (bounded)."""
    primary, _ = _roles(service)
    for _ in range(3):
        got = rounds(lab, service)
        if got[primary][1]["state"]["role"] == "primary" and lab.vip_holders(service) == [primary]:
            return
    raise AssertionError(f"{service}: the rounds did not make {primary} serve: {got}")


@pytest.mark.parametrize("service", SERVICES)
def test_rounds_bring_a_fresh_pair_to_serve_and_then_report_it_healthy(
    cron_mode: Lab, service: str
) -> None:
    """A pair as built, with no supervisor and no state: report-only rounds say
    nobody serves (no VIP) and change nothing; acting rounds do what the core
    prescribes (the primary resumes once its replica's round confirms it: unfence,
    VIP); after that both nodes report OK."""
    lab = cron_mode
    primary, replica = _roles(service)
    got = rounds(lab, service, "--report-only")
    (code_p, rep_p), (code_r, rep_r) = got[primary], got[replica]
    assert (code_p, rep_p["status"], rep_p["mode"], rep_p["acted"]) == (
        2,
        "CRITICAL",
        "round",
        False,
    )
    assert "accepts writes but this node is fenced" in rep_p["summary"]
    assert rep_p["decision"]["rule"] == "fenced-resume"
    assert {"Unfence", "AcquireVip"} <= set(rep_p["decision"]["actions"])
    assert code_r == 2 and "no node serves" in rep_r["summary"]
    assert lab.vip_holders(service) == []
    for host in topo.DB_HOSTS:
        assert not any(lab.supervisors.paths(service, host).state_dir.iterdir())  # wrote nothing

    got = rounds(lab, service)
    code_p, rep_p = got[primary]
    assert rep_p["decision"]["rule"] == "fenced-resume" and rep_p["outcome"]["ok"]
    assert (code_p, rep_p["state"]["role"]) == (0, "primary"), rep_p["summary"]
    assert lab.vip_holders(service) == [primary]
    assert got[replica][1]["decision"]["rule"] == "replica-follow"

    got = rounds(lab, service, "--report-only")
    assert got[primary][0] == 0, got[primary][1]["summary"]
    assert "VIP here" in got[primary][1]["summary"]
    assert got[replica][0] == 0, got[replica][1]["summary"]
    assert f"{primary} primary on 2/2 paths" in got[replica][1]["summary"]


@pytest.mark.parametrize("service", SERVICES)
def test_a_database_fault_is_critical_and_names_the_database(cron_mode: Lab, service: str) -> None:
    """A hung replica database, then a killed primary database: the node whose
    database fails reports CRITICAL naming it; its peer reports what it lost;
    report-only rounds change nothing (the VIP stays where it was)."""
    lab = cron_mode
    primary, replica = _roles(service)
    serve(lab, service)

    lab.stop_db(replica, service)
    got = rounds(lab, service, "--report-only")
    code_r, rep_r = got[replica]
    assert code_r == 2 and "database unreachable" in rep_r["summary"], rep_r["summary"]
    code_p, rep_p = got[primary]
    assert code_p == 1 and "no standby: " in rep_p["summary"], rep_p["summary"]
    lab.heal()

    lab.kill_db(primary, service)
    got = rounds(lab, service, "--report-only")
    code_p, rep_p = got[primary]
    assert code_p == 2 and "database unreachable" in rep_p["summary"], rep_p["summary"]
    assert "ReleaseVip" in rep_p["decision"]["actions"]  # what the core would do
    assert got[replica][0] == 2  # its primary does not take writes
    assert lab.vip_holders(service) == [primary]  # report-only: nothing was done
    lab.heal()


@pytest.mark.parametrize("service", SERVICES)
def test_an_acting_round_puts_back_a_vip_removed_by_hand(cron_mode: Lab, service: str) -> None:
    """The VIP is taken off a serving primary by hand: the next rounds see a primary
    without its VIP (the core prescribes taking it) and put it back."""
    lab = cron_mode
    primary, _ = _roles(service)
    serve(lab, service)
    vip = f"{topo.SERVICES[service].vip}/{topo.LAN_PREFIXLEN}"
    res = ns_exec(lab, primary, "ip", "addr", "del", vip, "dev", topo.PATHS["lan"].interface)
    assert res.returncode == 0, res.stderr
    assert lab.vip_holders(service) == []
    got = rounds(lab, service)
    code, rep = got[primary]
    assert rep["observation"]["vip_held"] is False
    assert rep["decision"]["rule"] == "primary-take-vip"
    assert rep["decision"]["actions"] == ["AcquireVip"]
    assert rep["outcome"]["ok"] and code == 0, rep["summary"]
    assert lab.vip_holders(service) == [primary]


@pytest.mark.parametrize("service", ["pg"])
def test_a_database_fenced_by_hand_stays_fenced_until_the_replica_confirms(
    cron_mode: Lab, service: str
) -> None:
    """An operator fences the serving primary's database (read-only). A round never
    undoes someone else's fence by itself: it stops serving (VIP released) and
    persists the fenced state; the next rounds of both nodes, in which the replica
    confirms it hears the primary and has not taken over, let it resume."""
    lab = cron_mode
    primary, _ = _roles(service)
    serve(lab, service)
    node = lab.node(service, primary)
    res = ns_exec(lab, primary, *_fence_argv(lab, service, primary))
    assert res.returncode == 0, res.stderr

    got = rounds(lab, service)
    code, rep = got[primary]
    assert rep["decision"]["rule"] == "primary-db-fenced", rep["decision"]
    assert rep["state"]["role"] == "fenced" and code == 2
    assert lab.vip_holders(service) == []

    got = rounds(lab, service)
    code, rep = got[primary]
    assert rep["decision"]["rule"] == "fenced-resume", rep["decision"]
    assert code == 0 and rep["state"]["role"] == "primary", rep["summary"]
    assert lab.vip_holders(service) == [primary]
    assert node.status().get("writable") is True


def _fence_argv(lab: Lab, service: str, host: str) -> list[str]:
    """A one-shot fence with dbha's own driver, as an operator's script would."""
    config = str(lab.supervisors.paths(service, host).config)
    code = (
        "import sys; from dbha import config; from dbha.db.factory import local_driver; "
        "local_driver(config.load(sys.argv[1])).fence(5.0)"
    )
    return [sys.executable, "-c", code, config]


def test_beside_a_running_supervisor_the_check_only_reports(healthy_lab: Lab) -> None:
    """With the supervisors running, ``dbha check`` (even without --report-only) asks
    them and reports OK for a healthy pair; it acts on nothing."""
    lab = healthy_lab
    mode = lab.supervisor_mode()
    if mode != "run":
        lab.start_supervisors("run")
    try:
        for service in SERVICES:
            primary, _ = _roles(service)
            for host in topo.DB_HOSTS:
                res = ns_exec(lab, host, *_check(lab, service, host), timeout=ROUND_TIMEOUT)
                rep = json.loads(res.stdout)
                assert (res.returncode, rep["mode"], rep["acted"]) == (0, "supervisor", False), rep
            assert lab.vip_holders(service) == [primary]
    finally:
        if mode != "run":
            lab.stop_supervisors()
