"""The VIP moves between the lab's hosts, announced with gratuitous ARP.

The real Vip driver (pyroute2 + an AF_PACKET socket opened at start-up) runs
inside a and b; a client in c connects to PostgreSQL through the VIP in a
tight loop and watches its own ARP entry for the VIP. Timings are printed
(run with -s), never asserted.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from dbha.lab import net
from dbha.lab.core import Lab
from tests.lab.agent import Agent, run_agent

VIP = "198.18.0.100"
VIP_CIDR = f"{VIP}/24"


def mac_of(lab: Lab, host: str) -> str:
    out = subprocess.run(
        ["ip", "-n", net.ns_name(lab.prefix, host), "-j", "link", "show", "eth0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return str(json.loads(out)[0]["address"])


def vip(lab: Lab, host: str, action: str, *extra: str) -> Agent:
    return run_agent(lab, host, "vip", action, "--address", VIP_CIDR, *extra)


@pytest.fixture
def vip_lab(healthy_lab: Lab) -> Iterator[Lab]:
    """The healthy lab; afterwards nobody holds the VIP and c has forgotten it."""
    try:
        yield healthy_lab
    finally:
        for host in ("a", "b"):
            vip(healthy_lab, host, "remove")
        subprocess.run(
            ["ip", "-n", net.ns_name(healthy_lab.prefix, "c"), "neigh", "flush", "to", VIP],
            capture_output=True,
            timeout=10,
            check=False,
        )


def test_vip_moves_from_a_to_b_and_the_client_follows(vip_lab: Lab) -> None:
    """a holds the VIP and the client in c reaches a's PostgreSQL through it. a
    releases it, b acquires it (probe, add, gratuitous ARP): the client's ARP
    entry for the VIP switches to b's MAC right after the announcement and its
    connections reach b."""
    lab = vip_lab
    mac_a, mac_b = mac_of(lab, "a"), mac_of(lab, "b")
    added = vip(lab, "a", "add").of("vip")[0]
    assert added["added"] and added["holds"] and added["mac"] == mac_a
    password_file = str(lab.layout.secret_path("pg-app"))
    client = Agent(
        lab, "c", "client", "--address", VIP, "--password-file", password_file,
        "--until-host", "b", "--until-count", "5", "--duration", "30",
    )  # fmt: skip
    try:
        client.wait_for("the client reaches a", lambda x: x["type"] == "conn" and x["host"] == "a")
        client.wait_for("c has a's MAC", lambda x: x["type"] == "neigh" and x["mac"] == mac_a)
        assert vip(lab, "a", "remove").of("vip")[0]["was"] is True
        moved = vip(lab, "b", "add").of("vip")[0]
        assert moved["added"] and moved["holds"] and moved["mac"] == mac_b
        first_garp = moved["sent_at"][0]
        neigh = client.wait_for(
            "c has b's MAC", lambda x: x["type"] == "neigh" and x["mac"] == mac_b
        )
        reached = client.wait_for(
            "the client reaches b", lambda x: x["type"] == "conn" and x["host"] == "b"
        )
        client.wait_exit(30)
    finally:
        client.stop()
    arp_ms = 1000 * (neigh["t"] - first_garp)
    conn_ms = 1000 * (reached["t"] - first_garp)
    print(f"\nc's ARP entry moved {arp_ms:.2f} ms after the first gratuitous ARP", end="")
    print(f"; first connection to b {conn_ms:.1f} ms after it")
    assert client.of("done")[0]["last"] == "b"
    # the entry changed because of the announcement, not before it
    assert neigh["t"] >= moved["started"]
    holder = vip(lab, "c", "holder", "--iface", "eth0").of("vip")[0]
    assert holder == {**holder, "here": False, "other_mac": mac_b}


def test_adding_a_vip_another_host_holds_is_refused(vip_lab: Lab) -> None:
    """a holds the VIP; b's add is refused by the ARP probe (made at once or ahead),
    naming a's MAC, and b does not configure the address."""
    lab = vip_lab
    mac_a = mac_of(lab, "a")
    assert vip(lab, "a", "add").of("vip")[0]["holds"]
    for extra in ((), ("--ahead",)):  # the probe made ahead of a promotion too
        refused = vip(lab, "b", "add", *extra)
        assert refused.proc.returncode == 3
        err = refused.of("error")[0]
        assert err["kind"] == "VipConflict" and err["mac"] == mac_a
        assert mac_a in err["error"]
    on_b = vip(lab, "b", "holder").of("vip")[0]
    assert on_b["here"] is False and on_b["other_mac"] == mac_a
    again = vip(lab, "a", "add").of("vip")[0]  # idempotent on the holder
    assert again["holds"] and not again["added"]
