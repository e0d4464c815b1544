"""Benchmark: heartbeat path-down detection, gratuitous ARP effect, a minute of loss.

Run as root from the repository root (it builds and removes its own lab, prefix
``hbb``)::

    .venv/bin/python -m tests.bench.bench_heartbeat [--cuts 7] [--moves 7] [--seconds 60]

Default timing (heartbeat every 100 ms, a path down after 5 misses, up after 3
beats; 3 gratuitous ARP rounds 200 ms apart). Prints one line per sample and a
JSON summary at the end. Every wait is bounded; the lab is torn down even on
failure.

- path-down detection: the private link of a is cut at a random phase of the
  beat cycle; the sample is the time from the cut to the moment each node's
  heartbeat service reports the hb path down (monotonic clock, same in every
  namespace).
- gratuitous ARP to client ARP update: the VIP moves between a and b while a
  client in c connects through it; the sample is the time from the first
  gratuitous ARP sent to c's neighbour entry showing the new holder's MAC
  (c polls its table every millisecond, so the resolution is about 1 ms).
- the loss/jitter minute: 'loss 30% delay 100ms 100ms' on a's private link for
  --seconds; counts peer-silent events, path state changes, beats lost.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dbha.lab.core import Lab
from tests.lab.agent import Agent, all_up, make_key, run_agent, start_heartbeats

VIP = "198.18.0.100"


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


def path_down(lab: Lab, agents: dict[str, Agent], cuts: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(cuts):
        for agent in agents.values():
            agent.wait_for("both paths up", lambda x: all_up(x) and x["t"] > time.monotonic() - 0.2)
        time.sleep(random.uniform(0.5, 0.6))  # random phase against the 100 ms beat cycle
        cut = time.monotonic()
        lab.link("a", "hb", False)
        for node, agent in agents.items():

            def down(x: dict[str, Any], cut: float = cut) -> bool:
                return bool(
                    x["type"] == "event" and x["kind"] == "path_down" and x["noticed"] > cut
                )

            e = agent.wait_for("hb down", down, timeout=10)
            samples[node].append(e["noticed"] - cut)
        print(f"cut {i + 1}: a {samples['a'][-1]:.3f} s, b {samples['b'][-1]:.3f} s", flush=True)
        lab.link("a", "hb", True)
    every = samples["a"] + samples["b"]
    return {
        "samples_s": {k: [round(v, 4) for v in vs] for k, vs in samples.items()},
        "median_s": _median(every),
        "min_s": round(min(every), 4),
        "max_s": round(max(every), 4),
    }


def _counters(agent: Agent, t0: float, t1: float) -> tuple[dict[str, Any], dict[str, Any]]:
    snaps = [s for s in agent.of("snapshot") if t0 <= s["t"] <= t1]
    return snaps[0]["counters"], snaps[-1]["counters"]


def loss_minute(lab: Lab, agents: dict[str, Agent], seconds: float) -> dict[str, Any]:
    for agent in agents.values():
        agent.wait_for("both paths up", lambda x: all_up(x) and x["t"] > time.monotonic() - 0.2)
    start = time.monotonic()
    lab.netem("a", "hb", "loss 30% delay 100ms 100ms")
    end = start + seconds
    for agent in agents.values():
        agent.wait_for("the impairment window", lambda x: x["t"] > end, timeout=seconds + 30)
    lab.heal()
    out: dict[str, Any] = {"seconds": seconds}
    first = {n: _counters(a, start, end) for n, a in agents.items()}
    for node, peer in (("a", "b"), ("b", "a")):
        ev = [e for e in agents[node].of("event") if start <= e["noticed"] <= end]
        snaps = [s for s in agents[node].of("snapshot") if start <= s["t"] <= end]
        c0, c1 = first[node]
        p0, p1 = first[peer]
        sent = p1["hb"]["sent"] - p0["hb"]["sent"]
        accepted = c1["hb"]["accepted"] - c0["hb"]["accepted"]
        replayed = c1["hb"]["drops"]["replayed"] - c0["hb"]["drops"]["replayed"]
        out[f"{peer}->{node} on hb"] = {
            "sent": sent,
            "accepted": accepted,
            "dropped_as_reordered": replayed,
            "never_arrived": sent - accepted - replayed,
            "hb_down_events": sum(1 for e in ev if e["kind"] == "path_down" and e["path"] == "hb"),
            "hb_up_events": sum(1 for e in ev if e["kind"] == "path_up" and e["path"] == "hb"),
            "lan_down_events": sum(
                1 for e in ev if e["kind"] == "path_down" and e["path"] == "lan"
            ),
            "peer_silent_events": sum(1 for e in ev if e["kind"] == "peer_silent"),
            "snapshots_peer_silent": sum(1 for s in snaps if s["peer_silent"]),
            "snapshots": len(snaps),
        }
        print(f"{peer}->{node} on hb: {out[f'{peer}->{node} on hb']}", flush=True)
    return out


def _mac(lab: Lab, host: str) -> str:
    line = run_agent(lab, host, "vip", "holder", "--address", f"{VIP}/24").of("ready")[0]
    return str(line["mac"])


def garp(lab: Lab, moves: int) -> dict[str, Any]:
    macs = {h: _mac(lab, h) for h in ("a", "b")}
    run_agent(lab, "a", "vip", "add", "--address", f"{VIP}/24")
    pw = str(lab.layout.secret_path("pg-app"))
    client = Agent(lab, "c", "client", "--address", VIP, "--password-file", pw, "--duration", "300")
    arp: list[float] = []
    probe_cost: list[float] = []
    first_conn: list[float] = []
    try:
        client.wait_for("c reaches a", lambda x: x["type"] == "conn" and x["host"] == "a")
        holder = "a"
        for i in range(moves):
            new = "b" if holder == "a" else "a"
            run_agent(lab, holder, "vip", "remove", "--address", f"{VIP}/24")
            add = run_agent(lab, new, "vip", "add", "--address", f"{VIP}/24").of("vip")[0]
            t_garp = add["sent_at"][0]

            def moved(x: dict[str, Any], mac: str = macs[new], t: float = add["started"]) -> bool:
                return bool(x["type"] == "neigh" and x["mac"] == mac and x["t"] > t)

            def reached(x: dict[str, Any], host: str = new, t: float = add["started"]) -> bool:
                return bool(x["type"] == "conn" and x["host"] == host and x["t"] > t)

            n = client.wait_for("c's ARP entry moves", moved, timeout=20)
            c = client.wait_for("c reaches the new holder", reached, timeout=20)
            arp.append(n["t"] - t_garp)
            probe_cost.append(t_garp - add["started"])
            first_conn.append(c["t"] - t_garp)
            print(
                f"move {i + 1} {holder}->{new}: ARP entry {1000 * arp[-1]:.2f} ms after the first "
                f"gratuitous ARP; probe+add {1000 * probe_cost[-1]:.0f} ms; first connection "
                f"{1000 * first_conn[-1]:.0f} ms after the ARP",
                flush=True,
            )
            holder = new
        run_agent(lab, holder, "vip", "remove", "--address", f"{VIP}/24")
    finally:
        client.stop()
    return {
        "arp_update_ms": [round(1000 * x, 3) for x in arp],
        "arp_update_median_ms": round(1000 * statistics.median(arp), 3) if arp else None,
        "probe_and_add_median_ms": round(1000 * statistics.median(probe_cost), 1),
        "first_connection_median_ms": round(1000 * statistics.median(first_conn), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_heartbeat")
    ap.add_argument("--prefix", default="hbb")
    ap.add_argument("--cuts", type=int, default=7)
    ap.add_argument("--moves", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=60.0)
    a = ap.parse_args(argv)
    lab = Lab(a.prefix)
    summary: dict[str, Any] = {"timing": "interval 100 ms, misses 5, rise 3; ARP 3 x 200 ms"}
    agents: dict[str, Agent] = {}
    try:
        lab.up(supervisors=False)
        with tempfile.TemporaryDirectory() as tmp:
            agents = start_heartbeats(
                lab, make_key(Path(tmp) / "hb.key"), duration=a.seconds + 600, report_ms=100
            )
            for agent in agents.values():
                agent.wait_for("both paths up", all_up)
            summary["path_down"] = path_down(lab, agents, a.cuts)
            summary["loss_jitter"] = loss_minute(lab, agents, a.seconds)
            for agent in agents.values():
                agent.stop()
        summary["garp"] = garp(lab, a.moves)
    finally:
        for agent in agents.values():
            agent.stop()
        lab.down()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
