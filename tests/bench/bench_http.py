"""Benchmark: what the HTTP door answers per second, and what that costs the loop.

Run as root from the repository root (it builds and removes its own lab with
supervisors, prefix ``htb``)::

    .venv/bin/python -m tests.bench.bench_http [--seconds 10] [--threads 4] [--runs 3]

For each run: a load generator in host c asks the PostgreSQL primary's door
``GET /primary`` from ``--threads`` threads, one request per connection (the
door closes each), for ``--seconds``; it reports requests per second and the
latency percentiles it saw. Meanwhile the supervisor's CPU share (``utime +
stime`` of all its threads over the window) and its loop's mean tick duration
(from ``dbha_loop_tick_duration_seconds`` before and after) are read, and the
same figures over an idle window of the same length before it, for
comparison. Prints one line per run and a JSON summary (medians). It reports;
it does not assert: the machine is shared and noisy.

``python -m tests.bench.bench_http load ADDR PORT SECONDS THREADS`` is the load
generator itself (what runs in host c).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dbha.lab import topology as topo
from dbha.lab.core import Lab
from tests.lab.helpers import ns_exec

TICK = "dbha_loop_tick_duration_seconds"


def load(addr: str, port: int, seconds: float, threads: int) -> dict[str, Any]:
    lat: list[float] = []
    codes: dict[int, int] = {}
    errors = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker() -> None:
        mine: list[float] = []
        got: dict[int, int] = {}
        bad = 0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                c = http.client.HTTPConnection(addr, port, timeout=2)
                c.request("GET", "/primary")
                r = c.getresponse()
                r.read()
                c.close()
                got[r.status] = got.get(r.status, 0) + 1
                mine.append(time.perf_counter() - t0)
            except OSError:
                bad += 1
        with lock:
            lat.extend(mine)
            for k, v in got.items():
                codes[k] = codes.get(k, 0) + v
            errors[0] += bad

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 10)
    lat.sort()

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

    return {
        "requests": len(lat),
        "per_second": round(len(lat) / seconds, 1),
        "codes": codes,
        "errors": errors[0],
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
    }


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def _ticks(lab: Lab, addr: str, port: int) -> tuple[float, float]:
    """(sum, count) of the loop's tick durations from the door's /metrics."""
    code = (
        "import urllib.request as u, sys; "
        f"sys.stdout.write(u.urlopen('http://{addr}:{port}/metrics', timeout=5).read().decode())"
    )
    res = ns_exec(lab, "c", sys.executable, "-c", code)
    values = {}
    for line in res.stdout.splitlines():
        for part in ("_sum", "_count"):
            if line.startswith(TICK + part + " "):
                values[part] = float(line.split()[1])
    return values["_sum"], values["_count"]


def measure(lab: Lab, seconds: float, threads: int) -> dict[str, Any]:
    svc = topo.SERVICES["pg"]
    addr, port = topo.HOSTS[svc.primary].lan, svc.http_port
    pid = lab.supervisors.pid("pg", svc.primary)
    assert pid is not None, "no pg supervisor on the primary"
    hz = os.sysconf("SC_CLK_TCK")

    def window(run: Any) -> tuple[Any, float, float]:
        s0, n0 = _ticks(lab, addr, port)
        c0, t0 = _cpu_ticks(pid), time.monotonic()
        out = run()
        c1, t1 = _cpu_ticks(pid), time.monotonic()
        s1, n1 = _ticks(lab, addr, port)
        cpu = 100.0 * (c1 - c0) / hz / (t1 - t0)
        tick_ms = 1000.0 * (s1 - s0) / max(n1 - n0, 1)
        return out, round(cpu, 2), round(tick_ms, 3)

    _, idle_cpu, idle_tick = window(lambda: time.sleep(seconds))
    argv = [sys.executable, "-m", "tests.bench.bench_http", "load", addr, str(port)]
    argv += [str(seconds), str(threads)]
    res, busy_cpu, busy_tick = window(lambda: ns_exec(lab, "c", *argv, timeout=seconds + 60))
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return {
        **got,
        "supervisor_cpu_pct": {"idle": idle_cpu, "under_load": busy_cpu},
        "mean_tick_ms": {"idle": idle_tick, "under_load": busy_tick},
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["load"]:
        addr, port, seconds, threads = args[1], int(args[2]), float(args[3]), int(args[4])
        print(json.dumps(load(addr, port, seconds, threads)), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prefix", default="htb")
    a = ap.parse_args(args)
    if not (1 <= a.runs <= 20 and 1 <= a.threads <= 64 and 1 <= a.seconds <= 120):
        ap.error("--runs 1..20, --threads 1..64, --seconds 1..120")
    lab = Lab(a.prefix)
    runs = []
    try:
        lab.up(sync=True, install=False, supervisors=True)
        time.sleep(5)  # start-up decisions done
        for i in range(a.runs):
            r = measure(lab, a.seconds, a.threads)
            runs.append(r)
            print(f"run {i + 1}: {json.dumps(r)}", flush=True)
    finally:
        lab.down()

    def med(get: Any) -> float:
        return round(statistics.median(get(r) for r in runs), 3)

    summary = {
        "threads": a.threads,
        "seconds": a.seconds,
        "runs": a.runs,
        "per_second_median": med(lambda r: r["per_second"]),
        "p99_ms_median": med(lambda r: r["p99_ms"]),
        "supervisor_cpu_pct_median": {
            "idle": med(lambda r: r["supervisor_cpu_pct"]["idle"]),
            "under_load": med(lambda r: r["supervisor_cpu_pct"]["under_load"]),
        },
        "mean_tick_ms_median": {
            "idle": med(lambda r: r["mean_tick_ms"]["idle"]),
            "under_load": med(lambda r: r["mean_tick_ms"]["under_load"]),
        },
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
