"""Benchmark: what an idle supervisor costs (CPU share of a core, resident memory).

Run as root from the repository root (it builds and removes its own lab with
supervisors, prefix ``idb``, unless ``--existing`` names a lab that is up)::

    .venv/bin/python -m tests.bench.bench_idle [--windows 3] [--seconds 60]
    .venv/bin/python -m tests.bench.bench_idle --existing --prefix hi

The lab runs both services (PostgreSQL, MariaDB) with a supervisor on each of
the two database hosts: four ``dbha run`` processes, each with its lease keeper
(a child process). No client writes: the supervisors only watch. After
``--settle`` seconds (start-up and the first role decisions) it measures
``--windows`` consecutive windows of ``--seconds`` each, all processes over the
same windows:

- CPU: ``utime + stime`` from ``/proc/PID/stat`` (every thread of the process)
  at the start and the end of the window, in clock ticks, over the window's
  monotonic length: the share of one core, in percent;
- RSS: ``VmRSS`` from ``/proc/PID/status``, sampled every second; the window's
  peak is reported.

Prints one line per window and process, and a JSON summary with the median of
the windows per process (and the median over processes of one kind). It
reports; it does not assert: the machine is shared and noisy. Every wait is
bounded; a lab it built is torn down even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbha.lab.core import Lab

HZ = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Proc:
    label: str  # e.g. "pg@a supervisor"
    kind: str  # "supervisor" | "keeper"
    pid: int


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid``, in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def keeper_of(pid: int) -> int | None:
    for child in children(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dbha.node.keeper" in cmdline:
            return child
    return None


def processes(lab: Lab) -> list[Proc]:
    out = []
    for service, host in lab.supervisors.all():
        pid = lab.supervisors.pid(service, host)
        if pid is None:
            raise SystemExit(f"no supervisor runs for {service} on {host}")
        out.append(Proc(f"{service}@{host} supervisor", "supervisor", pid))
        keeper = keeper_of(pid)
        if keeper is None:
            raise SystemExit(f"the supervisor of {service} on {host} has no keeper")
        out.append(Proc(f"{service}@{host} keeper", "keeper", keeper))
    return out


def window(procs: list[Proc], seconds: float) -> dict[str, dict[str, float]]:
    """One window over every process at once: CPU % of a core, peak RSS in MB."""
    start = time.monotonic()
    ticks0 = {p.label: cpu_ticks(p.pid) for p in procs}
    peak = {p.label: rss_kib(p.pid) for p in procs}
    end = start + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        for p in procs:
            peak[p.label] = max(peak[p.label], rss_kib(p.pid))
    ticks1 = {p.label: cpu_ticks(p.pid) for p in procs}
    elapsed = time.monotonic() - start
    return {
        p.label: {
            "cpu_pct": round((ticks1[p.label] - ticks0[p.label]) / HZ / elapsed * 100, 3),
            "rss_mb": round(peak[p.label] / 1024, 1),
        }
        for p in procs
    }


def summarize(procs: list[Proc], windows: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    per: dict[str, dict[str, float]] = {}
    for p in procs:
        per[p.label] = {
            m: statistics.median(w[p.label][m] for w in windows) for m in ("cpu_pct", "rss_mb")
        }
    kinds: dict[str, dict[str, float]] = {}
    for kind in ("supervisor", "keeper"):
        labels = [p.label for p in procs if p.kind == kind]
        kinds[kind] = {
            m: round(statistics.median(per[x][m] for x in labels), 3) for m in ("cpu_pct", "rss_mb")
        }
        kinds[kind]["cpu_pct_max"] = max(per[x]["cpu_pct"] for x in labels)
        kinds[kind]["rss_mb_max"] = max(per[x]["rss_mb"] for x in labels)
    return {"windows": len(windows), "per_process": per, "per_kind": kinds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_idle")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=15.0)
    ap.add_argument("--prefix", default="idb")
    ap.add_argument(
        "--existing",
        action="store_true",
        help="measure the lab PREFIX as it is (it must be up with supervisors); keep it",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.windows <= 100 or not 1 <= args.seconds <= 3600:
        ap.error("--windows must be 1-100 and --seconds 1-3600")
    lab = Lab(args.prefix)
    results: list[dict[str, dict[str, float]]] = []
    try:
        if not args.existing:
            t0 = time.monotonic()
            lab.up(supervisors=True)
            print(f"lab {args.prefix} up in {time.monotonic() - t0:.1f} s", flush=True)
        elif lab.supervisor_mode() != "run":
            raise SystemExit(f"lab {args.prefix} runs no supervisors (dbha lab up --supervisors)")
        time.sleep(max(0.0, min(args.settle, 600.0)))
        procs = processes(lab)
        for i in range(args.windows):
            w = window(procs, args.seconds)
            results.append(w)
            for label, m in w.items():
                print(
                    f"window {i + 1}: {label:<20} cpu {m['cpu_pct']:6.2f} % "
                    f"rss {m['rss_mb']:5.1f} MB",
                    flush=True,
                )
        st = lab.status()
        if not st.get("healthy", False):
            print(f"warning: the lab is not healthy after measuring: {st.get('problems')}")
    finally:
        if not args.existing:
            lab.down()
    if results:
        summary = summarize(procs, results)
        summary["seconds"] = args.seconds
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
