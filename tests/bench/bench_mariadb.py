"""Benchmark of the MySQL/MariaDB driver on the lab's MariaDB pair.

    .venv/bin/python -m tests.bench.bench_mariadb --runs 7

Brings up its own lab (prefix ``myb`` unless told otherwise), measures, and
tears the lab down. Each figure is the median of ``--runs`` runs (probe: of
``--probes`` probes per role), with min and max beside it:

* probe: one ``probe()`` on the primary and on the replica (a new connection each);
* fence: ``fence()`` on the primary (read_only + end client connections + check);
* promote: ``promote()`` on a replica that has replayed everything;
* rejoin (repoint): the fenced old primary re-pointed at the new one;
* rejoin (re-clone): an old primary holding errant transactions, forced: keep
  them aside (binlog events + full dump), empty, copy from the new primary,
  replicate. The lab's data set is tiny (a few hundred rows): this is the fixed
  cost of a re-clone, not a throughput figure.

Roles alternate between the two hosts from run to run, so no rebuild is needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from dbha.db.mysql.driver import MysqlDriver
from dbha.lab.core import Lab
from dbha.lab.maria import MariaNode
from tests.lab.drivers_mysql import mariadb_driver, mariadb_upstream

TIMEOUT = 30.0


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def summary(values: list[float]) -> dict[str, float | int]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 2),
        "min_ms": round(min(values) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
        "n": len(values),
    }


class Pair:
    """The lab's MariaDB pair with its current roles."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.primary, self.replica = "b", "a"  # as built

    def driver(self, host: str) -> MysqlDriver:
        return mariadb_driver(self.lab, host)

    def node(self, host: str) -> MariaNode:
        n = self.lab.node("mariadb", host)
        assert isinstance(n, MariaNode)
        return n

    def write(self, host: str, count: int) -> None:
        for _ in range(count):
            self.node(host).write_token(f"bench-{uuid.uuid4().hex[:12]}")

    def swap(self) -> None:
        self.primary, self.replica = self.replica, self.primary


def bench(lab: Lab, runs: int, probes: int) -> dict[str, dict[str, float | int]]:
    pair = Pair(lab)
    results: dict[str, list[float]] = {
        k: []
        for k in (
            "probe_primary",
            "probe_replica",
            "fence",
            "promote",
            "rejoin_repoint",
            "rejoin_reclone",
        )
    }
    pair.write(pair.primary, 200)
    for host, key in ((pair.primary, "probe_primary"), (pair.replica, "probe_replica")):
        d = pair.driver(host)
        d.probe(TIMEOUT)  # warm up (imports, first connection)
        results[key] = [timed(partial(d.probe, TIMEOUT)) for _ in range(probes)]
    for _ in range(runs):
        # Planned switchover: fence, replay, promote, rejoin (re-point).
        p, r = pair.driver(pair.primary), pair.driver(pair.replica)
        pair.write(pair.primary, 10)
        results["fence"].append(timed(partial(p.fence, TIMEOUT)))
        r.wait_replayed(TIMEOUT)
        results["promote"].append(timed(partial(r.promote, TIMEOUT)))
        up = mariadb_upstream(pair.replica)
        results["rejoin_repoint"].append(timed(partial(p.rejoin, up, TIMEOUT)))
        pair.swap()
    for _ in range(runs):
        # Split brain: promote the replica without fencing, write on both, re-clone.
        p, r = pair.driver(pair.primary), pair.driver(pair.replica)
        r.wait_replayed(TIMEOUT)
        r.promote(TIMEOUT)
        pair.write(pair.primary, 3)  # errant
        pair.write(pair.replica, 3)
        up = mariadb_upstream(pair.replica)
        results["rejoin_reclone"].append(timed(partial(p.rejoin, up, TIMEOUT, force=True)))
        pair.swap()
    return {k: summary(v) for k, v in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--probes", type=int, default=50, help="probes per role")
    parser.add_argument("--prefix", default="myb")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    lab = Lab(args.prefix)
    try:
        started = time.monotonic()
        lab.up(supervisors=False)
        print(f"lab {args.prefix} up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        figures = bench(lab, args.runs, args.probes)
    finally:
        lab.down()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{'MariaDB 10.11 driver':<22}{'median':>10}{'min':>10}{'max':>10}{'n':>5}")
        for name, s in figures.items():
            print(
                f"{name:<22}{s['median_ms']:>8.2f}ms{s['min_ms']:>8.2f}ms"
                f"{s['max_ms']:>8.2f}ms{s['n']:>5}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
