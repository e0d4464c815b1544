"""Heartbeats between hosts a and b of the lab, over the LAN and the private link.

The real HeartbeatService runs inside the namespaces (tests/lab/agent.py) with
the default timing (every 100 ms, a path down after 5 misses, up after 3
beats). Timings are measured and printed (run with -s to see them), never
asserted: the machine is shared.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbha.beat.wire import MAX_DATAGRAM, Beat, encode
from dbha.core.model import NodeRole
from dbha.lab.core import Lab
from tests.lab.agent import Agent, all_up, make_key, run_agent, start_heartbeats

PORT = 5405  # the pg service's heartbeat port; no supervisor runs in the lab yet


@pytest.fixture
def beats(healthy_lab: Lab, tmp_path: Path) -> Iterator[dict[str, Agent]]:
    """Heartbeat agents on a and b, both seeing each other on both paths."""
    agents = start_heartbeats(healthy_lab, make_key(tmp_path / "hb.key"), port=PORT)
    try:
        for agent in agents.values():
            agent.wait_for("both paths up", all_up)
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


def events_after(
    agent: Agent, t: float, kind: str, path: str | None = None
) -> list[dict[str, Any]]:
    return [
        e
        for e in agent.of("event")
        if e["noticed"] >= t and e["kind"] == kind and (path is None or e["path"] == path)
    ]


def test_cutting_the_private_link_downs_that_path_only(
    healthy_lab: Lab, beats: dict[str, Agent]
) -> None:
    """a's hb0 goes down: both nodes report the hb path down (and only it), the LAN
    stays up, the peer is never silent. Link up again: hb reported up on both."""
    time.sleep(random.uniform(0, 0.1))  # land the cut at a random phase of the beat cycle
    cut = time.monotonic()
    healthy_lab.link("a", "hb", False)
    for node, agent in beats.items():
        e = agent.wait_for(
            "hb down",
            lambda x: x["type"] == "event" and x["kind"] == "path_down" and x["noticed"] > cut,
        )
        assert e["path"] == "hb", e
        print(f"\n{node}: hb path down noticed {e['noticed'] - cut:.3f} s after the cut")
    settle = time.monotonic() + 1.0
    for agent in beats.values():
        agent.wait_for(
            "a snapshot a second later", lambda x: x["type"] == "snapshot" and x["t"] > settle
        )
        last = agent.of("snapshot")[-1]
        assert last["paths"]["lan"]["up"] and not last["paths"]["hb"]["up"]
        assert not last["peer_silent"]
        assert not events_after(agent, cut, "peer_silent")
        assert not events_after(agent, cut, "path_down", "lan")

    restore = time.monotonic()
    healthy_lab.link("a", "hb", True)
    for agent in beats.values():
        agent.wait_for(
            "hb up again",
            lambda x: x["type"] == "event" and x["kind"] == "path_up" and x["noticed"] > restore,
        )
        agent.wait_for("both paths up", lambda x: all_up(x) and x["t"] > restore)
        assert not events_after(agent, cut, "peer_silent")


def test_loss_and_jitter_on_one_path_never_silence_the_peer(
    healthy_lab: Lab, beats: dict[str, Agent]
) -> None:
    """30% loss and 100 ms +/- 100 ms delay on a's private link for 15 s: the hb path
    may flap, but the peer is never silent and the LAN path never goes down
    (tests/bench/bench_heartbeat.py runs the full minute)."""
    start = time.monotonic()
    healthy_lab.netem("a", "hb", "loss 30% delay 100ms 100ms")
    end = start + 15.0
    for agent in beats.values():
        agent.wait_for("15 s of impairment", lambda x: x["t"] > end, timeout=40)
    healthy_lab.heal()
    for node, agent in beats.items():
        snaps = [s for s in agent.of("snapshot") if start <= s["t"] <= end]
        assert snaps and not any(s["peer_silent"] for s in snaps)
        assert all(s["paths"]["lan"]["up"] for s in snaps)
        assert not events_after(agent, start, "peer_silent")
        assert not events_after(agent, start, "path_down", "lan")
        hb_changes = len(events_after(agent, start, "path_down", "hb")) + len(
            events_after(agent, start, "path_up", "hb")
        )
        c = snaps[-1]["counters"]["hb"]
        print(
            f"\n{node}: 15 s of loss+jitter on hb: {hb_changes} hb state changes, "
            f"accepted {c['accepted']}, dropped {c['drops']}"
        )


def _datagrams(to: str, payloads: list[bytes]) -> list[dict[str, Any]]:
    return [{"to": to, "port": PORT, "hex": p.hex()} for p in payloads]


def test_forged_replayed_and_garbage_datagrams_are_dropped_and_counted(
    healthy_lab: Lab, beats: dict[str, Agent], tmp_path: Path
) -> None:
    """From host c, to a's and b's heartbeat ports (LAN): garbage, oversize,
    unsigned, signed with another key, and real beats captured on the wire and
    sent again. Each is dropped and counted under its reason; then a flood of
    garbage. Both nodes keep every path up and keep admitting beats."""
    captured: dict[str, list[bytes]] = {}
    for host in ("a", "b"):
        cap = run_agent(healthy_lab, host, "capture", "--iface", "eth0", "--port", str(PORT))
        captured[host] = [bytes.fromhex(h) for h in cap.of("captured")[0]["payloads"]]
        assert len(captured[host]) == 3
    other_key = os.urandom(32)
    forged = [
        encode(Beat("pg", "a", "lan", "f" * 32, 2**40, 99, NodeRole.PRIMARY), other_key),
        encode(Beat("pg", "b", "lan", "e" * 32, 2**40, 99, NodeRole.PRIMARY), other_key),
    ]
    # A well-formed beat with its MAC cut off: the last 32 bytes of JSON fail as a MAC.
    unsigned = [
        encode(Beat("pg", "a", "lan", "d" * 32, 2**40, 99, NodeRole.PRIMARY), other_key)[:-32]
    ]
    garbage = [b"", b"hello", os.urandom(200), b"DBHA\x07" + os.urandom(80)]
    oversize = [b"DBHA\x01" + os.urandom(MAX_DATAGRAM)]
    before = {n: ag.of("snapshot")[-1]["counters"]["lan"] for n, ag in beats.items()}
    items: list[dict[str, Any]] = []
    for peer, addr in (("a", "198.18.0.12"), ("b", "198.18.0.11")):
        # Beats the peer really sent, captured on the wire, sent again by c: replays.
        items += _datagrams(addr, forged + unsigned + garbage + oversize + captured[peer])
    (tmp_path / "attack.json").write_text(json.dumps(items))
    sent = run_agent(healthy_lab, "c", "send", "--file", str(tmp_path / "attack.json"))
    assert sent.of("sent")[0]["count"] == len(items)

    expected = {
        "bad_signature": len(forged) + len(unsigned),
        "malformed": len(garbage),
        "oversize": len(oversize),
        "replayed": 3,
    }

    def counted(line: dict[str, Any], node: str) -> bool:
        if line["type"] != "snapshot":
            return False
        drops = line["counters"]["lan"]["drops"]
        return all(drops[r] - before[node]["drops"][r] >= n for r, n in expected.items())

    for node, agent in beats.items():
        line = agent.wait_for("every datagram counted", lambda x: counted(x, node))  # noqa: B023
        drops = line["counters"]["lan"]["drops"]
        delta = {r: drops[r] - before[node]["drops"][r] for r in drops}
        assert {r: delta[r] for r in expected} == expected, delta
        assert delta["unknown_node"] == 0 and delta["unproven_boot"] == 0, delta

    # A flood of garbage: counted (as far as the kernel's socket buffer lets it
    # through), and beats keep being admitted on both paths.
    flood = [
        {"to": addr, "port": PORT, "hex": os.urandom(64).hex()}
        for _ in range(1000)
        for addr in ("198.18.0.11", "198.18.0.12")
    ]
    (tmp_path / "flood.json").write_text(json.dumps(flood))
    t_flood = time.monotonic()
    run_agent(healthy_lab, "c", "send", "--file", str(tmp_path / "flood.json"), "--gap-ms", "0")
    for agent in beats.values():
        acc0 = agent.of("snapshot")[-1]["counters"]

        def flowing(x: dict[str, Any], acc0: dict[str, Any] = acc0) -> bool:
            return (
                all_up(x)
                and x["t"] > t_flood + 1.0
                and all(x["counters"][p]["accepted"] > acc0[p]["accepted"] + 3 for p in acc0)
            )

        line = agent.wait_for("beats admitted after the flood", flowing)
        assert line["counters"]["lan"]["drops"]["malformed"] > expected["malformed"]
        assert not events_after(agent, t_flood, "path_down")
        assert agent.proc.poll() is None  # still running
