"""The lab's shape: isolated namespaces, only 198.18.0.0/15, two replicating pairs."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path

from dbha.lab import net
from dbha.lab import topology as topo
from dbha.lab.core import Lab
from tests.lab.conftest import _root_links
from tests.lab.helpers import lab_json, ns_exec, ping

LAB_NET = ipaddress.ip_network(topo.LAB_NET)


def test_every_address_is_in_the_benchmark_range_and_nothing_routes_out(healthy_lab: Lab) -> None:
    """Every lab host has only 198.18.0.0/15 addresses, no default route, no forwarding."""
    for host in net.all_hosts():
        links = net.links(healthy_lab.prefix, host)
        addrs = [a for link in links.values() for a in link["addresses"]]  # type: ignore[attr-defined]
        for a in addrs:
            ip = ipaddress.ip_interface(a).ip
            assert ip.is_loopback or ip in LAB_NET, f"{host} has {a}"
        routes = ns_exec(healthy_lab, host, "ip", "-j", "-4", "route", "show").stdout
        for r in json.loads(routes or "[]"):
            assert r["dst"] != "default", f"{host} has a default route: {r}"
            assert ipaddress.ip_network(r["dst"]).subnet_of(LAB_NET), f"{host} routes {r}"
        fwd = ns_exec(healthy_lab, host, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
        assert fwd == "0", host
    # A lookup only (no packet is sent): the client has no way off the lab network.
    res = ns_exec(healthy_lab, "c", "ip", "route", "get", "192.0.2.1")
    assert res.returncode != 0 and "unreachable" in res.stderr.lower()


def test_nothing_of_the_lab_lives_in_the_root_namespace(
    healthy_lab: Lab, root_links_before: set[str]
) -> None:
    """Every veth and bridge was made inside lab namespaces: the root one is unchanged."""
    assert _root_links() == root_links_before


def test_hosts_reach_each_other_on_both_paths_and_the_gateway(healthy_lab: Lab) -> None:
    assert ping(healthy_lab, "a", "198.18.1.2").returncode == 0  # private link
    assert ping(healthy_lab, "b", "198.18.0.11").returncode == 0  # LAN
    assert ping(healthy_lab, "c", topo.GATEWAY).returncode == 0
    # The private link is private: the client is not on it.
    assert ping(healthy_lab, "c", "198.18.1.1").returncode != 0


def test_status_json_gives_a_client_what_it_needs(healthy_lab: Lab) -> None:
    """Both pairs replicate, the write proofs pass, and each service says how to use it."""
    st = lab_json(healthy_lab.prefix)
    assert st["_exit"] == 0, st["problems"]
    assert st["healthy"] is True
    pg, maria = st["services"]["pg"], st["services"]["mariadb"]
    assert (pg["engine"], pg["port"]) == ("postgresql", 5432)
    assert (maria["engine"], maria["port"]) == ("mariadb", 3306)
    for svc in (pg, maria):
        # Other tests may have moved the primary; there is exactly one either way.
        primary = svc["primary"]
        (replica,) = {"a", "b"} - {primary}
        assert svc["nodes"][primary]["writable"] is True
        assert svc["nodes"][replica]["role"] == "replica"
        assert svc["nodes"][replica]["streaming"] is True
        assert svc["nodes"][replica]["writable"] is False  # the replica is read-only
        assert svc["write_proof"]["ok"] is True
        assert ipaddress.ip_address(svc["vip"]) in LAB_NET
        assert svc["user"] == "app" and svc["database"] == "app"
        assert {n["address"] for n in svc["nodes"].values()} == {"198.18.0.11", "198.18.0.12"}
        mode = stat.S_IMODE(os.stat(svc["password_file"]).st_mode)
        assert mode == 0o600, f"{svc['password_file']} has mode {mode:o}"


def test_no_secret_on_any_lab_command_line(healthy_lab: Lab) -> None:
    """No running lab process carries a password in its argv (visible in ps)."""
    secrets = [p.read_text().strip() for p in healthy_lab.layout.secrets_dir.glob("*.password")]
    assert len(secrets) >= 6
    for host in net.all_hosts():
        for pid in net.ns_pids(healthy_lab.prefix, host):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            for s in secrets:
                assert s not in argv, f"a password is on the command line of pid {pid}"


def test_exec_runs_a_command_on_a_lab_host(healthy_lab: Lab) -> None:
    res = ns_exec(healthy_lab, "c", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "198.18.0.20/24" in res.stdout
