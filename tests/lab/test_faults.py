"""Each lab fault does what it says, and ``heal`` undoes it.

Every test starts from a healthy lab and leaves it healthy (the healthy_lab
fixture heals and checks afterwards).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbha.errors import LabError
from dbha.lab import net, procs
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode
from tests.lab.helpers import dbha, lab_json, ns_exec, ping


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_link_down_cuts_one_path_only(healthy_lab: Lab) -> None:
    """Cutting a's private link: b cannot reach a on it, the LAN still works; link-up restores."""
    dbha("lab", "fault", "link-down", "a", "hb", "--prefix", healthy_lab.prefix)
    assert ping(healthy_lab, "b", "198.18.1.1").returncode != 0
    assert ping(healthy_lab, "b", "198.18.0.11").returncode == 0
    st = lab_json(healthy_lab.prefix)
    assert st["_exit"] == 1 and any("hb0 (hb) is down" in p for p in st["problems"])
    dbha("lab", "fault", "link-up", "a", "hb", "--prefix", healthy_lab.prefix)
    assert ping(healthy_lab, "b", "198.18.1.1").returncode == 0


def test_netem_drops_and_delays_both_ways(healthy_lab: Lab) -> None:
    """netem on a path drops (100% loss: nothing gets through) and delays (never faster
    than the added delay, which noise can only lengthen); heal removes it."""
    p = healthy_lab.prefix
    dbha("lab", "fault", "netem", "a", "hb", "loss 100%", "--prefix", p)
    assert ping(healthy_lab, "b", "198.18.1.1", count=3).returncode != 0
    assert ping(healthy_lab, "b", "198.18.0.11").returncode == 0  # the LAN is untouched
    dbha("lab", "fault", "netem", "a", "hb", "delay 40ms", "--prefix", p)  # replaces
    res = ping(healthy_lab, "b", "198.18.1.1", count=3)
    assert res.returncode == 0, res.stdout
    rtt_min = float(re.search(r"= ([\d.]+)/", res.stdout).group(1))  # type: ignore[union-attr]
    assert rtt_min >= 80.0, f"a 40 ms delay each way gave a {rtt_min} ms round trip"
    assert lab_json(p)["netem"] == ["a-hb"]
    bad = dbha("lab", "fault", "netem", "a", "hb", "loss lots", "--prefix", p, check=False)
    assert bad.returncode != 0 and "loss" in bad.stderr
    healthy_lab.heal()
    assert lab_json(p)["netem"] == []
    res = ping(healthy_lab, "b", "198.18.1.1", count=3)
    assert float(re.search(r"= ([\d.]+)/", res.stdout).group(1)) < 80.0  # type: ignore[union-attr]


def test_isolate_cuts_every_link_and_keeps_processes(healthy_lab: Lab) -> None:
    pg_a = healthy_lab.node("pg", "a")
    pid = pg_a.pid()
    healthy_lab.isolate("a")
    assert ping(healthy_lab, "c", "198.18.0.11").returncode != 0
    assert ping(healthy_lab, "b", "198.18.1.1").returncode != 0
    assert ping(healthy_lab, "a", "198.18.0.1").returncode != 0  # nor the gateway
    assert pid is not None and pg_a.pid() == pid  # still running, just cut off
    healthy_lab.heal()
    assert ping(healthy_lab, "c", "198.18.0.11").returncode == 0


def test_kill_host_kills_everything_and_heal_boots_it(healthy_lab: Lab) -> None:
    """kill-host b: no process left in b, its links down; heal restarts its servers."""
    before = net.ns_pids(healthy_lab.prefix, "b")
    assert before
    dbha("lab", "fault", "kill-host", "b", "--prefix", healthy_lab.prefix)
    assert not [p for p in before if procs.alive(p)]
    assert net.ns_pids(healthy_lab.prefix, "b") == []
    assert ping(healthy_lab, "c", "198.18.0.12").returncode != 0
    st = lab_json(healthy_lab.prefix)
    assert st["services"]["mariadb"]["nodes"]["b"]["running"] is False
    assert st["services"]["pg"]["nodes"]["b"]["running"] is False
    out = dbha("lab", "heal", "--prefix", healthy_lab.prefix).stdout
    assert "started pg on b" in out and "started mariadb on b" in out


def test_kill_db_kills_one_server_only(healthy_lab: Lab) -> None:
    pg_a, maria_a = healthy_lab.node("pg", "a"), healthy_lab.node("mariadb", "a")
    maria_pid = maria_a.pid()
    pids = healthy_lab.kill_db("a", "pg")
    assert pids and not [p for p in pids if procs.alive(p)]
    assert pg_a.pid() is None
    assert maria_a.pid() == maria_pid
    st = healthy_lab.status(proof=False)
    assert st["services"]["pg"]["nodes"]["a"]["role"] == "down"


def test_stop_db_hangs_the_server_until_heal(healthy_lab: Lab) -> None:
    """A SIGSTOPped server accepts TCP but never answers: a bounded client gives up."""
    node = healthy_lab.node("mariadb", "b")
    assert isinstance(node, MariaNode)
    pids = healthy_lab.stop_db("b", "mariadb")
    assert all(_state(p) == "T" for p in pids)
    # From the client host: the TCP handshake completes (the kernel does it), the
    # server's greeting never comes.
    code = (
        "import socket,sys\n"
        "s=socket.create_connection(('198.18.0.12',3306),timeout=2)\n"
        "s.settimeout(1.5)\n"
        "try:\n s.recv(1); sys.exit(3)\n"
        "except socket.timeout: sys.exit(0)\n"
    )
    res = ns_exec(healthy_lab, "c", "python3", "-c", code)
    assert res.returncode == 0, res.stderr
    with pytest.raises(LabError):  # returns (raises) instead of hanging: the wait is bounded
        node.query("SELECT 1")
    healthy_lab.heal()
    assert all(_state(p) != "T" for p in pids)
    assert node.query("SELECT 1 AS one") == [{"one": 1}]


def test_faults_refuse_bad_arguments(healthy_lab: Lab) -> None:
    p = healthy_lab.prefix
    for args, word in [
        (["kill-db", "c", "pg"], "runs no database"),
        (["link-down", "c", "hb"], "no path 'hb'"),
        (["link-down", "z", "lan"], "unknown host"),
        (["netem", "a", "wan", "loss 1%"], "no path 'wan'"),
    ]:
        res = dbha("lab", "fault", *args, "--prefix", p, check=False)
        assert res.returncode != 0 and word in res.stderr, (args, res.stderr)


def test_status_is_unhealthy_while_a_replica_is_down(healthy_lab: Lab) -> None:
    healthy_lab.kill_db("b", "pg")
    st = lab_json(healthy_lab.prefix)
    assert st["_exit"] == 1
    assert "pg: server on b is not running" in st["problems"]


def _tcp_connects(lab: Lab, host: str, address: str, port: int) -> bool:
    code = (
        "import socket,sys\n"
        f"try: socket.create_connection(({address!r},{port}),timeout=1).close()\n"
        "except OSError: sys.exit(1)\n"
    )
    return ns_exec(lab, host, "python3", "-c", code).returncode == 0


def test_block_drops_one_port_both_ways_until_heal(healthy_lab: Lab) -> None:
    """block a tcp 5432: nothing reaches a's port 5432 (nor leaves a for it), other
    ports and ping still work; status names the fault; heal removes the filter."""
    p = healthy_lab.prefix
    assert _tcp_connects(healthy_lab, "c", "198.18.0.11", 5432)
    dbha("lab", "fault", "block", "a", "tcp", "5432", "--prefix", p)
    assert not _tcp_connects(healthy_lab, "c", "198.18.0.11", 5432)  # into a
    assert not _tcp_connects(healthy_lab, "a", "198.18.0.12", 5432)  # out of a
    assert _tcp_connects(healthy_lab, "c", "198.18.0.11", 3306)
    assert ping(healthy_lab, "c", "198.18.0.11").returncode == 0
    assert "fault active: block a tcp 5432" in lab_json(p)["problems"]
    bad = dbha("lab", "fault", "block", "a", "sctp", "5432", "--prefix", p, check=False)
    assert bad.returncode != 0
    out = dbha("lab", "heal", "--prefix", p).stdout
    assert "packet filter removed on a" in out
    assert _tcp_connects(healthy_lab, "c", "198.18.0.11", 5432)
