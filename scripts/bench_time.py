"""Benchmark p2plog's clocks: corrected-timestamp error, reorder-buffer cost, event-tail delay.

    python scripts/bench_time.py                 # ~25 s; needs root, chronyd, PyPI libfaketime
    python scripts/bench_time.py --records 100 --json

A 3-node cluster on 127.0.0.1 (the process harness ``p2plog.testing.proc``: free ports,
peers.toml and data in a temp dir, removed at the end) whose nodes run with faked wall clocks
(PyPI libfaketime ``.so``, monotonic untouched): n1 -5 s, n2 +3 s, n3 +0 s at +100 ppm, all with
``[ntp] servers`` = a chronyd on 127.0.0.1 at a free non-default port serving this machine's
real clock (``p2plog.testing.clockrig``). This process is not faked: its ``time.time_ns()`` is
the reference clock.

Reported:

1. Corrected-timestamp error per node, p50/p99/max of |error| in ms:
   - ``probe``: four-timestamp ``time`` probes (least delay of 3), node corrected - reference;
   - ``ts_corrected``: records without ``ts`` submitted through the node carry the node's
     corrected receive time; error = how far the stamp lies OUTSIDE the reference interval
     [before send, after ack] (0 inside: a lower bound of the true error; ``outside`` counts
     them), and, separately, its distance from the interval's midpoint (an upper bound that
     includes half the submit round trip, itself reported);
   - ``ingest_ts``: the leader's HLC stamp of the same records, distance outside the interval.
2. ``ReorderBuffer`` overhead: N records (ts jittered by up to 50 ms around a 1 ms step) fed
   through ``add_record`` vs the same loop calling a no-op; records/s and ns per record.
3. End-to-end delay from submit (reference time before the call) to arrival in a
   ``tail(order="event")`` on another node, p50/p99/max ms (dominated by the 1 s reorder
   window: a record is emitted once the watermark, max ingest time - window, passes it).

Every process started here is ended by its pid; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from p2plog.client import open_client
from p2plog.order.reorder import ReorderBuffer
from p2plog.testing.clockrig import ChronyServer, faketime_env, need_clock_tools
from p2plog.testing.proc import ProcCluster, section

MS = 1_000_000
CLOCKS = {"n1": (-5.0, 1.0), "n2": (3.0, 1.0), "n3": (0.0, 1.0001)}


def pct(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    if not s:
        return {}
    return {
        "p50": round(s[len(s) // 2], 3),
        "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))], 3),
        "max": round(s[-1], 3),
        "n": len(s),
    }


def bench_reorder(n: int) -> dict[str, Any]:
    rng = random.Random(1)
    base = 1_700_000_000 * 10**9
    rows = [(i + 1, base + i * MS + rng.randint(-50, 50) * MS, base + i * MS) for i in range(n)]

    def noop(index: int, ts: int, ingest: int, payload: None, size: int) -> list[Any]:
        return []

    buf: ReorderBuffer[None] = ReorderBuffer(reorder_window_ms=1000)
    out = 0
    t0 = time.perf_counter()
    for index, ts, ingest in rows:
        out += len(buf.add_record(index, ts, ingest, None, 200))
    t1 = time.perf_counter()
    out += len(buf.flush_all())
    assert out == n, (out, n)
    t2 = time.perf_counter()
    for index, ts, ingest in rows:
        out += len(noop(index, ts, ingest, None, 200))
    t3 = time.perf_counter()
    real, base_s = t1 - t0, t3 - t2
    return {
        "records": n,
        "reorder_records_per_s": round(n / real),
        "noop_loop_records_per_s": round(n / base_s),
        "overhead_ns_per_record": round((real - base_s) / n * 1e9),
        "late": buf.late,
    }


class SkewedCluster(ProcCluster):
    """The process harness's cluster, each node's wall clock faked as ``CLOCKS`` says."""

    def node_env(self, nid: str) -> dict[str, str]:
        off, rate = CLOCKS[nid]
        return faketime_env(off, rate, base=super().node_env(nid))


async def wait_ready(addrs: dict[str, str], timeout_s: float) -> None:
    """Until every node answers status with a synced clock and there is a leader."""
    with trio.fail_after(timeout_s):
        for _ in range(100_000):
            ok = True
            for addr in addrs.values():
                try:
                    with trio.fail_after(2):
                        async with open_client([addr]) as c:
                            st = await c.status()
                    ok = ok and st["clock"]["synced"] and st["leader"] is not None
                except Exception:
                    ok = False
            if ok:
                return
            await trio.sleep(0.2)


async def measure(addrs: dict[str, str], records: int, e2e: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for nid, addr in addrs.items():
        probes: list[float] = []
        tc_err: list[float] = []
        ing_err: list[float] = []
        tc_mid: list[float] = []
        rtt: list[float] = []
        outside = 0
        async with open_client([addr]) as c:
            for _ in range(records):
                best = None
                for _ in range(3):
                    t1 = time.time_ns()
                    r = await c.call("time", {"t1": t1})
                    t4 = time.time_ns()
                    d = (t4 - t1) - (r["t3"] - r["t2"])
                    o = ((r["t2"] - t1) + (r["t3"] - t4)) / 2
                    if best is None or d < best[1]:
                        best = (o, d)
                assert best is not None
                probes.append(abs(best[0]) / MS)
            sent: dict[str, tuple[int, int]] = {}
            for k in range(records):
                rec = {"level": "info", "source": f"bench.{nid}", "msg": f"r{k}"}
                before = time.time_ns()
                (ack,) = await c.submit([rec])
                sent[ack.id] = (before, time.time_ns())
                await trio.sleep(0.005)
            got = await c.query(limit=100_000, source=f"bench.{nid}")
            clock = (await c.status())["clock"]
        for r in got:
            if r["id"] not in sent:
                continue
            before, after = sent[r["id"]]
            tc, ing = r["ts_corrected"], r["ingest_ts"]
            tc_err.append(max(before - tc, tc - after, 0) / MS)
            ing_err.append(max(before - ing, ing - after, 0) / MS)
            tc_mid.append(abs(tc - (before + after) / 2) / MS)
            rtt.append((after - before) / MS)
            outside += not before <= tc <= after
        out[nid] = {
            "fake_clock": f"{CLOCKS[nid][0]:+g} s x{CLOCKS[nid][1]:g}",
            "probe_err_ms": pct(probes),
            "ts_corrected_err_ms": pct(tc_err),
            "ingest_ts_err_ms": pct(ing_err),
            "ts_corrected_outside_interval": outside,
            "ts_corrected_err_vs_midpoint_ms": pct(tc_mid),
            "submit_round_trip_ms": pct(rtt),
            "clock_status": {
                k: clock.get(k)
                for k in ("offset_ms", "drift_ppm", "delay_ms", "samples", "restarts", "rejected")
            },
        }

    # End-to-end: submit via n1 (ts = reference now), follow the event tail on n3.
    seen: dict[str, int] = {}
    sent_at: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        ready = trio.Event()

        async def follow() -> None:
            async with open_client([addrs["n3"]]) as c, c.tail(order="event") as t:
                ready.set()
                async for row in t:
                    seen[row["id"]] = time.time_ns()

        nursery.start_soon(follow)
        with trio.fail_after(10):
            await ready.wait()
        await trio.sleep(0.3)
        async with open_client([addrs["n1"]]) as c:
            for k in range(e2e):
                now = time.time_ns()
                rec = {"ts": now, "level": "info", "source": "bench.e2e", "msg": f"e{k}"}
                (ack,) = await c.submit([rec])
                sent_at[ack.id] = now
                await trio.sleep(0.02)
        for _ in range(300):  # up to 15 s
            if set(sent_at) <= set(seen):
                break
            await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    delays = [(seen[i] - t) / MS for i, t in sent_at.items() if i in seen]
    out["e2e_submit_to_event_tail_ms"] = pct(delays)
    out["e2e_missing"] = len(sent_at) - len(delays)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200, help="records and probes per node")
    ap.add_argument("--e2e", type=int, default=200, help="records for the end-to-end delay")
    ap.add_argument("--reorder-n", type=int, default=200_000)
    ap.add_argument("--poll-interval-s", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result: dict[str, Any] = {"reorder_buffer": bench_reorder(args.reorder_n)}
    reason = need_clock_tools()
    if reason is not None:
        print(f"skipping the cluster part: {reason}", file=sys.stderr)
    else:
        root = Path(tempfile.mkdtemp(prefix="p2plog-bench-time-"))
        chrony = ChronyServer(rundir=root / "chrony")
        (root / "chrony").mkdir()
        cluster: SkewedCluster | None = None
        try:
            chrony.start()
            ntp = {"servers": [chrony.spec], "poll_interval_s": args.poll_interval_s}
            cluster = SkewedCluster(
                root, n=len(CLOCKS), name="benchtime", sections=section("ntp", ntp)
            )
            trio.run(cluster.start_all)
            addrs = dict(zip(cluster.ids, cluster.addresses(), strict=True))
            trio.run(wait_ready, addrs, 30.0)
            print("cluster ready; measuring", file=sys.stderr)
            result.update(trio.run(measure, addrs, args.records, args.e2e))
        finally:
            if cluster is not None:
                trio.run(cluster.stop_all)
            chrony.stop()
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
