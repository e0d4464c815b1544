"""Benchmark: time from a fault on the primary to the first write through the VIP.

Run as root from the repository root (it builds and removes its own lab, prefix
``fob``)::

    .venv/bin/python -m tests.bench.bench_failover [--runs 5] [--profile default|fast]
                                                  [--async] [--faults kill-host,kill-db,stop-db]
                                                  [--client-timeouts STATEMENT,CONNECT]
                                                  [--through vip,haproxy]

A lab with dbha supervisors on both hosts (synchronous replication unless
--async), the client in host c writing through each service's VIP. For each
engine and fault, --runs times: the fault hits the primary at a random phase
of the client's write loop; the sample is the time from the fault to the
first write acknowledged after it took effect (the client's monotonic clock,
the same in every namespace). After each run the lab is healed and the pair
rebuilt as it was. ``--through haproxy`` runs HAProxy in host c (dbha lab up
--haproxy) and has the client write through its write frontend, which routes by
the supervisors' HTTP doors; ``vip,haproxy`` measures both, run by run. Every
run is also checked as the lab tests check it: no
acknowledged write missing, never two reachable VIP holders, the VIP on the
one writable node; a run that fails a check is reported, not counted.
Prints one line per run and a JSON summary (median and max per engine and
fault) at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dbha.errors import DbhaError
from dbha.lab import client as cl
from dbha.lab import haproxy as hx
from dbha.lab import scenario
from dbha.lab import topology as topo
from dbha.lab.core import Lab

FAULTS = scenario.TAKEOVER_FAULTS


def _problems(o: scenario.ScenarioOutcome) -> list[str]:
    v = o.verdict
    out = []
    if any(v.missing.values()):
        out.append(f"acknowledged writes missing: { {h: len(m) for h, m in v.missing.items()} }")
    if o.doubles:
        out.append(f"two reachable VIP holders at {len(o.doubles)} samples")
    if o.vip_after != [v.primary]:
        out.append(f"VIP on {o.vip_after}, writable node {v.primary}")
    if v.primary != topo.SERVICES[o.service].replica:
        out.append("the replica did not take over")
    return out


def _haproxy_args(service: str) -> list[str]:
    return ["--address", topo.HOSTS[hx.HOST].lan, "--port", str(hx.FRONTENDS[service][0])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prefix", default="fob")
    ap.add_argument("--profile", default="default", choices=sorted(topo.PROFILES))
    ap.add_argument("--async", dest="sync", action="store_false")
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--services", default=",".join(topo.SERVICES))
    ap.add_argument(
        "--client-timeouts",
        metavar="STATEMENT,CONNECT",
        help="the client's bounds in seconds (default "
        f"{cl.STATEMENT_TIMEOUT:g},{cl.CONNECT_TIMEOUT:g}): it cannot see a write "
        "through again before its in-flight write times out",
    )
    ap.add_argument("--through", default="vip", help="vip, haproxy, or vip,haproxy")
    args = ap.parse_args(argv)
    ways = [w for w in args.through.split(",") if w]
    if not ways or not set(ways) <= {"vip", "haproxy"}:
        ap.error("--through: vip, haproxy or vip,haproxy")
    client_args: list[str] = []
    if args.client_timeouts:
        try:
            stmt, conn = (float(x) for x in args.client_timeouts.split(","))
        except ValueError:
            ap.error("--client-timeouts takes two numbers: STATEMENT,CONNECT")
        if not (0 < stmt <= 60 and 0 < conn <= 60):
            ap.error("--client-timeouts: each bound must be more than 0 and at most 60 s")
        client_args = ["--statement-timeout", f"{stmt:g}", "--connect-timeout", f"{conn:g}"]
    faults = [f for f in args.faults.split(",") if f]
    services = [s for s in args.services.split(",") if s]
    if not 1 <= args.runs <= 50 or not set(faults) <= set(FAULTS):
        ap.error(f"--runs in 1..50, --faults among {', '.join(FAULTS)}")
    lab = Lab(args.prefix)
    samples: dict[str, list[float]] = {}
    bad: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="dbha-bench-failover-"))
    try:
        t = lab.up(
            sync=args.sync,
            install=False,
            supervisors=True,
            profile=args.profile,
            haproxy="haproxy" in ways,
        )
        print(f"lab up in {t.total:.1f} s ({'sync' if args.sync else 'async'}, {args.profile})")
        for service in services:
            runs = [(f, i, w) for f in faults for i in range(args.runs) for w in ways]
            for fault, i, way in runs:
                key = f"{service} {fault}" + (f" via {way}" if len(ways) > 1 else "")
                lab.heal()
                lab.rebuild_service(service)
                out = work / f"{service}-{fault}-{i}-{way}.jsonl"
                extra = client_args + (_haproxy_args(service) if way == "haproxy" else [])
                try:
                    o = scenario.run(
                        lab, service, fault, scenario.primary_fault(lab, service, fault), out,
                        expect_takeover=True, client_args=extra,
                    )  # fmt: skip
                except DbhaError as exc:
                    bad.append(f"{key} run {i + 1}: {exc}")
                    print(f"{key} run {i + 1}: FAILED: {exc}", flush=True)
                    continue
                problems = _problems(o)
                if problems or o.recovery is None:
                    bad.append(f"{key} run {i + 1}: {'; '.join(problems) or 'no recovery'}")
                    print(f"{key} run {i + 1}: NOT COUNTED: {bad[-1]}", flush=True)
                    continue
                samples.setdefault(key, []).append(o.recovery)
                print(f"{key} run {i + 1}: {o.recovery:.3f} s", flush=True)
    finally:
        lab.down()
    summary: dict[str, Any] = {
        "profile": args.profile,
        "sync": args.sync,
        "runs": args.runs,
        "through": ways,
        "client_timeouts_s": args.client_timeouts
        or f"{cl.STATEMENT_TIMEOUT:g},{cl.CONNECT_TIMEOUT:g}",
        "fault_to_first_write_s": {
            k: {
                "n": len(v),
                "median": round(statistics.median(v), 3),
                "min": round(min(v), 3),
                "max": round(max(v), 3),
            }
            for k, v in samples.items()
        },
        "not_counted": bad,
        "finished": time.strftime("%F %T"),
    }
    print(json.dumps(summary, indent=2))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
