"""Benchmark: the PostgreSQL driver's verbs on the lab's real PostgreSQL 15 pair.

Run as root from the repository root (it builds and removes its own lab, prefix
``pgb``)::

    .venv/bin/python -m tests.bench.bench_postgres [--runs 7] [--probes 20]

Each run starts from a freshly built pair (primary a, replica b) and measures,
with the monotonic clock around the driver call:

- probe latency on the primary and on the replica (``--probes`` calls each;
  each call opens its own session, so this includes connecting);
- soft fence (read-only + reload + verified + clients terminated) and unfence;
- planned switch: hard fence of a (fast stop), promote of b (pg_promote +
  CHECKPOINT), follow of a (restart as a standby, until it streams);
- rejoin by pg_rewind: a is promoted behind b's back and writes a row; b is
  rejoined to a (stop, dry run, WAL aside, pg_rewind, start, until it streams);
- rejoin by pg_basebackup: b is promoted behind a's back; a is stopped and its
  WAL removed so that pg_rewind cannot run; a is rejoined to b.

Prints one line per run and a JSON summary of medians at the end. Every wait is
bounded; the lab is torn down even on failure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dbha.lab.core import Lab
from dbha.lab.pg import PgNode
from tests.lab.drivers import pg_driver, pg_upstream

R = TypeVar("R")
T = 60.0


def timed(samples: dict[str, list[float]], name: str, call: Callable[[], R]) -> R:
    t0 = time.monotonic()
    result = call()
    samples.setdefault(name, []).append(time.monotonic() - t0)
    return result


def one_run(lab: Lab, probes: int) -> dict[str, list[float]]:
    lab.rebuild_service("pg")
    s: dict[str, list[float]] = {}
    a, b = pg_driver(lab, "a"), pg_driver(lab, "b")
    node_a = PgNode(lab.prefix, lab.layout, "a")
    node_b = PgNode(lab.prefix, lab.layout, "b")
    for _ in range(probes):
        st = timed(s, "probe_primary", lambda: a.probe(5))
        assert st.reachable, st
        st = timed(s, "probe_replica", lambda: b.probe(5))
        assert st.reachable, st
    timed(s, "fence", lambda: a.fence(T))
    timed(s, "unfence", lambda: a.unfence(T))
    # planned switch: a -> b
    node_a.write_token("switch")
    timed(s, "fence_hard", lambda: a.fence(T, hard=True))
    b.wait_replayed(T)
    timed(s, "promote", lambda: b.promote(T))
    timed(s, "follow_after_switch", lambda: a.follow(pg_upstream("b"), T))
    # split brain on a, rejoin b to a by pg_rewind
    a.promote(T)
    node_a.write_token("diverge-a")
    node_b.write_token("diverge-b")
    rep = timed(s, "rejoin_rewind", lambda: b.rejoin(pg_upstream("a"), T))
    assert rep.method == "pg_rewind", rep
    # split brain on b, rewind made impossible on a: rejoin a to b by pg_basebackup
    b.promote(T)
    node_a.write_token("diverge-a2")
    a.fence(T, hard=True)
    for f in (node_a.data / "pg_wal").iterdir():
        if len(f.name) == 24:
            f.unlink()
    rep = timed(s, "rejoin_basebackup", lambda: a.rejoin(pg_upstream("b"), T))
    assert rep.method == "pg_basebackup", rep
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.bench_postgres")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--prefix", default="pgb")
    args = ap.parse_args(argv)
    lab = Lab(args.prefix)
    all_samples: dict[str, list[float]] = {}
    try:
        t0 = time.monotonic()
        lab.up(supervisors=False)
        print(f"lab {args.prefix} up in {time.monotonic() - t0:.1f} s", flush=True)
        for i in range(args.runs):
            run = one_run(lab, args.probes)
            line = {k: round(statistics.median(v) * 1000, 1) for k, v in run.items()}
            print(f"run {i + 1}: {json.dumps(line)} (ms)", flush=True)
            for k, v in run.items():
                all_samples.setdefault(k, []).extend(v)
    finally:
        lab.down()
    summary: dict[str, Any] = {
        "runs": args.runs,
        "unit": "ms",
        "median": {k: round(statistics.median(v) * 1000, 1) for k, v in all_samples.items()},
        "min": {k: round(min(v) * 1000, 1) for k, v in all_samples.items()},
        "max": {k: round(max(v) * 1000, 1) for k, v in all_samples.items()},
        "samples": {k: len(v) for k, v in all_samples.items()},
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
