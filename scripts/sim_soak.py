"""Soak the Raft simulator: many fresh seeds in parallel, bounded in count and time.

    python scripts/sim_soak.py --seeds 1000 --steps 20000            # fresh random seeds
    python scripts/sim_soak.py --first-seed 1 --seeds 500 --jobs 2   # a fixed range

Prints every failing seed with the command that reproduces it, then steps/s over the run.
Exits 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from p2plog.testing.sim import Simulation


def run_seed(seed: int, steps: int) -> tuple[int, bool, int, str, str]:
    r = Simulation(seed).run(steps)
    return seed, r.ok, r.stats.get("steps", 0), r.summary(), r.report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    p.add_argument("--steps", type=int, default=20_000, help="safety-phase steps per seed")
    p.add_argument("--first-seed", type=int, help="run seeds first..first+N-1 (default: fresh)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="stop starting new seeds")
    a = p.parse_args()
    first = a.first_seed if a.first_seed is not None else int.from_bytes(os.urandom(6), "big")
    seeds = range(first, first + a.seeds)
    print(f"soak: seeds {seeds.start}..{seeds.stop - 1}, {a.steps} steps each, {a.jobs} jobs")
    t0 = time.perf_counter()
    deadline = t0 + a.max_seconds
    failed: list[int] = []
    done = steps = 0
    with ProcessPoolExecutor(a.jobs) as pool:
        pending = {pool.submit(run_seed, s, a.steps) for s in seeds[: a.jobs * 2]}
        queue = iter(seeds[a.jobs * 2 :])
        while pending:
            fut = next(as_completed(pending))
            pending.remove(fut)
            seed, ok, n, summary, report = fut.result()
            done += 1
            steps += n
            if not ok:
                failed.append(seed)
                print(summary, report, sep="\n", flush=True)
            if time.perf_counter() < deadline:
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(run_seed, nxt, a.steps))
            if done % 100 == 0:
                print(f"  {done} seeds, {len(failed)} failed", flush=True)
    wall = time.perf_counter() - t0
    print(
        f"soak: {done} seeds, {len(failed)} failed {failed[:20]}, {steps:,} steps in {wall:.0f} s "
        f"= {steps / wall:,.0f} steps/s over {a.jobs} jobs"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
