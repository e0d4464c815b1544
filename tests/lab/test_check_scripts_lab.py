"""The check scripts of checks/ in the lab, against real servers, up and down.

Each script runs inside a lab host's namespace with the checkout's Python (as
the install's /opt/dbha/bin/python runs them), against the lab's PostgreSQL
and MariaDB servers, lab addresses (198.18.0.0/15) and a small HTTP server
started in host c for the test. "Down" is real: a server hung (SIGSTOP) or
killed, a port nobody listens on, an address no host has; every test leaves
the lab healed (the ``healthy_lab`` fixture checks it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dbha import config
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from tests.lab.helpers import ns_exec

pytestmark = pytest.mark.lab

CHECKS = Path(__file__).resolve().parents[2] / "checks"
PY = sys.executable
SERVICES = list(topo.SERVICES)
CLIENT = "c"
NOBODY = "198.18.0.99"  # on the lab's LAN, held by no host


def check(lab: Lab, host: str, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the check ``name`` inside ``host`` (bounded: every check bounds itself)."""
    return ns_exec(lab, host, PY, str(CHECKS / name), *args, timeout=60)


def db_check(lab: Lab, service: str, host: str) -> tuple[str, list[str], list[str]]:
    """The database check for ``service`` and its arguments for ``host``'s server:
    through its socket (run on ``host``), and over TCP (run on the client host)."""
    db = config.load(lab.supervisors.paths(service, host).config).database
    secret = ["--user", db.user, "--password-file", str(db.password_file)]
    tcp = ["--host", topo.host_address(host, "lan"), "--port", str(db.port), *secret]
    if db.is_postgresql:
        return "dbha-check-postgres", ["--host", str(db.socket), *secret], tcp
    return "dbha-check-mysql", ["--socket", str(db.socket), *secret], tcp


@pytest.mark.parametrize("service", SERVICES)
def test_the_database_check_up_hung_and_down(
    healthy_lab: Lab, service: str, tmp_path: Path
) -> None:
    """On the replica's server: the check answers OK through the socket and over
    TCP from the client host; a wrong password fails; a hung server (SIGSTOP) fails
    within --timeout; a killed one fails at once; after heal it is OK again."""
    lab = healthy_lab
    host = topo.SERVICES[service].replica
    name, local, tcp = db_check(lab, service, host)
    res = check(lab, host, name, *local)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("OK: ") and "answered SELECT 1" in res.stdout
    assert ("(replica)" if service == "pg" else "(read-only)") in res.stdout
    res = check(lab, CLIENT, name, *tcp)
    assert res.returncode == 0, res.stdout + res.stderr
    # As a [[check]]: through dbha's check runner (its bound, its bare environment).
    code = (
        "import sys; from dbha.config import CheckConfig;"
        " from dbha.node.checkscripts import run_check;"
        " print(run_check(CheckConfig('db', tuple(sys.argv[1:]), 3000, 2500, 1, 1)))"
    )
    res = ns_exec(lab, host, PY, "-c", code, PY, str(CHECKS / name), *local, timeout=60)
    assert res.stdout.startswith("(True, 'exit 0: OK: "), res.stdout + res.stderr

    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    res = check(lab, CLIENT, name, *tcp[:-1], str(wrong))
    assert res.returncode == 2 and res.stdout.startswith("FAILURE: "), res.stdout

    lab.stop_db(host, service)
    res = check(lab, CLIENT, name, *tcp, "--timeout", "1")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no answer within 1 s" in res.stdout or "timed out" in res.stdout, res.stdout

    lab.kill_db(host, service)
    for where, args in ((host, local), (CLIENT, tcp)):
        res = check(lab, where, name, *args)
        assert res.returncode == 2 and res.stdout.startswith("FAILURE: "), res.stdout
    port = tcp[tcp.index("--port") + 1]
    res = check(lab, CLIENT, "dbha-check-tcp", topo.host_address(host, "lan"), port)
    assert res.returncode == 2 and "refused" in res.stdout, res.stdout

    lab.heal()
    res = check(lab, CLIENT, name, *tcp)
    assert res.returncode == 0, res.stdout + res.stderr


def test_tcp_and_ping_against_lab_addresses(healthy_lab: Lab) -> None:
    """From the client host: a's PostgreSQL port accepts, a port nobody listens on
    is refused; a's address answers ping, an address no host has does not."""
    lab = healthy_lab
    a = topo.host_address("a", "lan")
    res = check(lab, CLIENT, "dbha-check-tcp", a, "5432")
    assert res.returncode == 0 and res.stdout.startswith(f"OK: {a}:5432 accepted"), res.stdout
    res = check(lab, CLIENT, "dbha-check-tcp", a, "1")
    assert res.returncode == 2 and "refused" in res.stdout, res.stdout
    res = check(lab, CLIENT, "dbha-check-ping", a, "--count", "3")
    assert res.returncode == 0 and f"OK: {a}: 3/3 answered" in res.stdout, res.stdout
    res = check(lab, CLIENT, "dbha-check-ping", NOBODY, "--count", "3", "--timeout", "2")
    assert res.returncode == 2 and f"FAILURE: {NOBODY}: 0/" in res.stdout, res.stdout


def test_http_against_a_server_in_the_lab(healthy_lab: Lab, tmp_path: Path) -> None:
    """A small HTTP server on the client host: the check from a finds its page (200,
    with its text), a missing page (404) fails, and once the server is stopped the
    check fails as refused."""
    lab = healthy_lab
    (tmp_path / "index.html").write_text("dbha lab page\n")
    c = topo.host_address(CLIENT, "lan")
    argv = [PY, "-m", "http.server", "8080", "--bind", c, "--directory", str(tmp_path)]
    server = subprocess.Popen(
        lab.exec_argv(CLIENT, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while check(lab, "a", "dbha-check-tcp", c, "8080").returncode != 0:
            assert server.poll() is None, "the HTTP server exited"
            assert time.monotonic() < deadline, "the HTTP server did not listen within 20 s"
            time.sleep(0.2)
        url = f"http://{c}:8080/"
        res = check(lab, "a", "dbha-check-http", url, "--contains", "dbha lab page")
        assert res.returncode == 0 and res.stdout.startswith(f"OK: {url}: status 200"), res.stdout
        res = check(lab, "a", "dbha-check-http", url + "missing.html")
        assert res.returncode == 2 and "status 404" in res.stdout, res.stdout
    finally:
        server.terminate()
        server.wait(10)
    res = check(lab, "a", "dbha-check-http", url)
    assert res.returncode == 2 and "refused" in res.stdout.lower(), res.stdout


def test_disk_space_of_the_data_directory(healthy_lab: Lab) -> None:
    """The free space of PostgreSQL's data directory on a, against thresholds that
    bound any real figure; a data directory that is not there fails."""
    lab = healthy_lab
    data = config.load(lab.supervisors.paths("pg", "a").config).database.data_directory
    assert data is not None
    res = check(lab, "a", "dbha-check-disk", str(data), "--warning", "0", "--critical", "0")
    assert res.returncode == 0 and res.stdout.startswith(f"OK: {data}: "), res.stdout
    res = check(lab, "a", "dbha-check-disk", str(data), "--warning", "100", "--critical", "0")
    assert res.returncode == 1 and res.stdout.startswith("WARNING: "), res.stdout
    res = check(lab, "a", "dbha-check-disk", str(data / "missing"))
    assert res.returncode == 2 and "No such file" in res.stdout, res.stdout


def _nagios(lab: Lab, service: str, host: str) -> subprocess.CompletedProcess[str]:
    cfg = str(lab.supervisors.paths(service, host).config)
    return check(lab, host, "check_dbha", "-c", cfg, "--timeout", "30")


def _nagios_until(
    lab: Lab, service: str, host: str, done: Callable[[subprocess.CompletedProcess[str]], bool]
) -> subprocess.CompletedProcess[str]:
    """The plugin on ``host``, asked again until ``done`` holds (at most 30 s)."""
    deadline = time.monotonic() + 30
    while not done(res := _nagios(lab, service, host)):
        assert time.monotonic() < deadline, res.stdout
        time.sleep(0.3)
    return res


@pytest.mark.parametrize("service", SERVICES)
def test_check_dbha_beside_running_supervisors(healthy_lab: Lab, service: str) -> None:
    """With the supervisors running, the plugin says OK on both nodes with the
    epoch, the lag and the paths as perfdata; with the replica's server killed it
    says CRITICAL on the replica and not OK on the primary (no standby), with dbha
    check's exit codes; after heal, OK again on both."""
    lab = healthy_lab
    svc = topo.SERVICES[service]
    mode = lab.supervisor_mode()
    if mode != "run":
        lab.start_supervisors("run")
    try:
        for host in topo.DB_HOSTS:
            res = _nagios(lab, service, host)
            line = res.stdout.splitlines()[0]
            assert res.returncode == 0 and line.startswith("DBHA OK - "), res.stdout
            summary, perf = line.split(" | ")
            assert f"{service} on {host}" in summary
            fields = dict(p.split("=", 1) for p in perf.split())
            assert fields["paths_up"] == "2;;;0;2" and fields["epoch"].isdigit(), perf
            assert {"lag_bytes", "lag_seconds", "lag_transactions"} & set(fields), perf
            assert fields["db_probe_age"].endswith("s"), perf

        # The plugin reports the supervisors' view: the replica's own within a
        # probe interval of the kill, the primary's once the replica's next beat
        # says its database is gone. Asked until then, within a bound.
        lab.kill_db(svc.replica, service)
        res = _nagios_until(lab, service, svc.replica, lambda r: r.returncode == 2)
        assert res.stdout.startswith("DBHA CRITICAL - ") and "\nCRITICAL: " in res.stdout
        res = _nagios_until(lab, service, svc.primary, lambda r: r.returncode in (1, 2))
        assert not res.stdout.startswith("DBHA OK"), res.stdout

        lab.heal()
        for host in topo.DB_HOSTS:
            _nagios_until(lab, service, host, lambda r: r.returncode == 0)
    finally:
        if mode != "run":
            lab.stop_supervisors()
