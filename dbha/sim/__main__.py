"""``python -m dbha.sim``: run many schedules, report, print failing seeds."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterator

from dbha.sim.runner import run_seed
from dbha.sim.world import Result

CHUNK = 250


def _chunk(bounds: tuple[int, int]) -> list[Result]:
    lo, hi = bounds
    out = []
    for seed in range(lo, hi):
        r = run_seed(seed)
        r.trace = []
        out.append(r)
    return out


def run_many(first: int, count: int, workers: int) -> Iterator[Result]:
    """Results of seeds ``first .. first + count - 1`` (in order)."""
    chunks = [(lo, min(lo + CHUNK, first + count)) for lo in range(first, first + count, CHUNK)]
    if workers <= 1:
        for c in chunks:
            yield from _chunk(c)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for results in pool.imap(_chunk, chunks):
            yield from results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dbha.sim", description=__doc__)
    ap.add_argument("--schedules", type=int, default=1000, help="how many schedules (seeds)")
    ap.add_argument("--seed", type=int, default=0, help="the first seed")
    ap.add_argument("--workers", type=int, default=1, help="processes to run them on")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each schedule's trace")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    if args.verbose:
        results: Iterator[Result] = (
            run_seed(s, verbose=True) for s in range(args.seed, args.seed + args.schedules)
        )
    else:
        results = run_many(args.seed, args.schedules, args.workers)
    n = failed = promotions = acked = lost_async = documented = keeper = 0
    slowest = (0.0, -1)  # the longest convergence after the faults stopped, and its seed
    for r in results:
        n += 1
        slowest = max(slowest, (r.converged_after, r.seed))
        promotions += r.promotions
        acked += r.acked
        lost_async += r.lost_async
        documented += r.split_brain_documented
        keeper += r.keeper_fences
        if args.verbose:
            print("\n".join(r.trace))
        if not r.ok:
            failed += 1
            for v in r.violations:
                print(f"seed {r.seed}: {v}")
            print(f"  replay: python -m dbha.sim --seed {r.seed} --schedules 1 -v")
    took = time.perf_counter() - started
    print(
        f"{n} schedules, {failed} with violations; {promotions} promotions, {acked} "
        f"acknowledged commits, {lost_async} lost in async mode (allowed), "
        f"{documented} documented split-brain partitions, {keeper} keeper fences; "
        f"slowest convergence {slowest[0]:.2f} s (seed {slowest[1]}); "
        f"{took:.1f} s ({n / took:.0f} schedules/s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
