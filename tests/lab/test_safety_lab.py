"""The safety check, run inside the lab's hosts against real servers and a real gateway.

Each scenario makes every heartbeat path silent in a different way and checks
that the safety check tells them apart from the evidence it gathers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbha.lab.core import Lab
from tests.lab.agent import Agent, all_up, make_key, run_agent, start_heartbeats

GATEWAY = "198.18.0.1"
PEER_ADDRESSES = {"a": ["198.18.0.11", "198.18.1.1"], "b": ["198.18.0.12", "198.18.1.2"]}
PORTS = {"postgresql": 5432, "mariadb": 3306}


def safety(lab: Lab, on: str, peer: str, engine: str, timeout_ms: int = 300) -> dict[str, Any]:
    """Run the safety check once on host ``on`` about host ``peer``; the result as a dict."""
    args = ["safety", "--target", f"icmp,{GATEWAY}", "--engine", engine]
    args += ["--port", str(PORTS[engine]), "--timeout-ms", str(timeout_ms)]
    for addr in PEER_ADDRESSES[peer]:
        args += ["--peer", addr]
    agent = run_agent(lab, on, *args)
    lines = agent.of("safety")
    assert lines, agent.stderr
    result = lines[0]
    print(f"\n{on} about {peer} ({engine}): {result['verdict']} in {result['seconds']:.3f} s")
    return result


def outcomes(result: dict[str, Any]) -> dict[str, str]:
    return {p["target"]: p["outcome"] for p in result["targets"] + result["peer"]}


@pytest.fixture
def beats(healthy_lab: Lab, tmp_path: Path) -> Iterator[dict[str, Agent]]:
    agents = start_heartbeats(healthy_lab, make_key(tmp_path / "hb.key"))
    try:
        for agent in agents.values():
            agent.wait_for("both paths up", all_up)
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


def test_heartbeats_blocked_but_databases_reachable(
    healthy_lab: Lab, beats: dict[str, Agent]
) -> None:
    """A packet filter on a drops the heartbeat port on every path; the LAN still
    carries the database ports. Both nodes find the peer silent, and the safety
    check on each says peer_alive_heartbeat_broken (PostgreSQL and MariaDB probes)."""
    blocked = time.monotonic()
    healthy_lab.block("a", "udp", 5405)
    for agent in beats.values():
        agent.wait_for(
            "peer silent",
            lambda x: x["type"] == "snapshot" and x["peer_silent"] and x["t"] > blocked,
        )
    on_b = safety(healthy_lab, "b", "a", "postgresql")
    assert on_b["verdict"] == "peer_alive_heartbeat_broken", on_b
    assert outcomes(on_b)["postgresql 198.18.0.11:5432"] == "answered"
    on_a = safety(healthy_lab, "a", "b", "mariadb")
    assert on_a["verdict"] == "peer_alive_heartbeat_broken", on_a
    assert outcomes(on_a)["mysql 198.18.0.12:3306"] == "answered"
    assert "MariaDB" in on_a["peer"][0]["detail"]


def test_isolated_host_knows_it_and_its_peer_sees_it_dead(healthy_lab: Lab) -> None:
    """a loses every link: on b the check says peer_dead (gateway answers, a's
    database is silent at both addresses); on a it says i_am_isolated."""
    healthy_lab.isolate("a")
    on_b = safety(healthy_lab, "b", "a", "postgresql")
    assert on_b["verdict"] == "peer_dead", on_b
    assert outcomes(on_b)[f"icmp {GATEWAY}"] == "answered"
    assert {p["outcome"] for p in on_b["peer"]} <= {"timeout", "unreachable"}
    on_a = safety(healthy_lab, "a", "b", "postgresql")
    assert on_a["verdict"] == "i_am_isolated", on_a
    assert {p["outcome"] for p in on_a["targets"] + on_a["peer"]} <= {"timeout", "unreachable"}


def test_dead_and_hung_databases_are_told_from_live_ones(healthy_lab: Lab) -> None:
    """The peer's server killed: refused at every address, peer_dead. The peer's
    server frozen (SIGSTOP): the kernel completes the TCP handshake but no
    greeting comes, no_greeting, peer_dead. The evidence says which."""
    healthy_lab.kill_db("a", "pg")
    dead = safety(healthy_lab, "b", "a", "postgresql")
    assert dead["verdict"] == "peer_dead", dead
    assert {p["outcome"] for p in dead["peer"]} == {"refused"}
    healthy_lab.stop_db("b", "mariadb")
    hung = safety(healthy_lab, "a", "b", "mariadb")
    assert hung["verdict"] == "peer_dead", hung
    assert {p["outcome"] for p in hung["peer"]} == {"no_greeting"}
