"""How long ``query --since T`` takes on a large log, on the leader and on a follower.

    python scripts/bench_seek.py                          # 2,000,000 records, this checkout
    python scripts/bench_seek.py --records 500000 --compare-with ../old-checkout

Writes ``--records`` records into a fresh local 3-node cluster, then ``--recent`` more after a
pause, and times a query for records since the pause (the newest ``--recent``): warm (median of
``--repeat``) and cold (after evicting the data files from the page cache; needs root). With
``--compare-with DIR`` the same data directories are then served by the nodes of that checkout
(``PYTHONPATH=DIR``) and the same queries are timed again, side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from p2plog import open_client
from p2plog.client.records import make_record
from p2plog.testing.proc import ProcCluster, evict_page_cache

STATUS_WAIT_S = 120.0


class Checkout(ProcCluster):
    """Nodes that run the code of another checkout (``PYTHONPATH`` first)."""

    def __init__(self, root: Path, code: Path | None, **kw: Any) -> None:
        super().__init__(root, **kw)
        self.code = code

    def node_env(self, nid: str) -> dict[str, str]:
        env = super().node_env(nid)
        if self.code is not None:
            env["PYTHONPATH"] = str(self.code)
        return env


async def wait_applied(c: ProcCluster, want: int) -> str:
    """Wait until every node applied record ``want``; returns the leader's id."""
    with trio.fail_after(STATUS_WAIT_S):
        while True:
            leaders, ok = set(), 0
            for nid, addr in zip(c.ids, c.addresses(), strict=True):
                try:
                    async with open_client([addr]) as cl:
                        st = await cl.status()
                except Exception:  # a node still starting (or replaying): ask again
                    continue
                ok += int(st["record_index"]) >= want
                if st["role"] == "leader":
                    leaders.add(nid)
            if ok == len(c.ids) and len(leaders) == 1:
                return leaders.pop()
            await trio.sleep(0.2)


async def write(c: ProcCluster, n: int, batch: int = 1000) -> int:
    async with open_client(c.addresses()) as cl:
        last = 0
        lanes = trio.Semaphore(8)  # frames in flight; held from before a task starts

        async def one(k: int, m: int) -> None:
            nonlocal last
            try:
                recs = [make_record(f"r{k + j}", source="bench") for j in range(m)]
                acks = await cl.submit(recs)
                last = max(last, acks[-1].index)
            finally:
                lanes.release()

        async with trio.open_nursery() as nursery:
            for k in range(0, n, batch):
                await lanes.acquire()
                nursery.start_soon(one, k, min(batch, n - k))
        return last


async def time_queries(
    c: ProcCluster, nid: str, since: int, want: int, repeat: int, cold: bool
) -> dict[str, float]:
    addr = c.addresses([nid])
    out: dict[str, float] = {}
    async with open_client(addr) as cl:
        if cold:
            for nd in c.nodes.values():
                evict_page_cache(nd.data_dir)
            t0 = time.perf_counter()
            rows = await cl.query(since=since, limit=want)
            out["cold_ms"] = (time.perf_counter() - t0) * 1000
            assert len(rows) == want, (len(rows), want)
        warm = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            rows = await cl.query(since=since, limit=want)
            warm.append((time.perf_counter() - t0) * 1000)
            assert len(rows) == want, (len(rows), want)
        out["warm_ms"] = statistics.median(warm)
    return out


async def measure(c: ProcCluster, since: int, last: int, a: argparse.Namespace) -> dict[str, Any]:
    leader = await wait_applied(c, last)
    follower = next(n for n in c.ids if n != leader)
    cold = os.geteuid() == 0
    async with open_client(c.addresses([leader])) as cl:
        index = (await cl.status()).get("time_index")  # None: nodes without one
    print(f"  the leader's time index: {index}", file=sys.stderr)
    return {
        "leader": await time_queries(c, leader, since, a.recent, a.repeat, cold),
        "follower": await time_queries(c, follower, since, a.recent, a.repeat, cold),
    }


async def main_async(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    c = Checkout(root, None, name="seek")
    await c.start_all()
    try:
        await wait_applied(c, 0)
        await write(c, a.records)
        await trio.sleep(2.5)  # past the seek slack: the bulk lies behind the seek point
        since = time.time_ns()
        last = await write(c, a.recent, batch=min(1000, a.recent))
        results = {"this checkout": await measure(c, since, last, a)}
    finally:
        await c.stop_all()
    if a.compare_with is not None:
        old = Checkout(root, a.compare_with.resolve(), name="seek")
        old.nodes = c.nodes  # the same ports, data directories and logs
        old.write_config(old.config_path)
        await old.start_all()
        try:
            results[str(a.compare_with)] = await measure(old, since, last, a)
        finally:
            await old.stop_all()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=2_000_000, help="the bulk written first")
    p.add_argument("--recent", type=int, default=1000, help="records the query asks for")
    p.add_argument("--repeat", type=int, default=5, help="warm queries per node")
    p.add_argument("--compare-with", type=Path, help="another checkout to serve the same data")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix=".bench-seek-", dir=Path.cwd()) as d:
        t0 = time.perf_counter()
        results = trio.run(main_async, a, Path(d))
        took = time.perf_counter() - t0
    print(f"query since the newest {a.recent} of {a.records + a.recent:,} records ({took:.0f} s)")
    for code, r in results.items():
        for role, t in r.items():
            figures = ", ".join(f"{k} {v:.1f}" for k, v in t.items())
            print(f"  {code:>16}  {role:<8}  {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
