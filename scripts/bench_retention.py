"""Retention under load (issue 15): two fresh local 3-node clusters side by side, one with
``[retention] max_bytes`` and one without, written in alternating chunks at the batched rate.

    python scripts/bench_retention.py                                  # 10 GB each, 2 GB bound
    python scripts/bench_retention.py --write-gb 1 --max-bytes-gb 0.2 --segment-mb 16   # quick

Both clusters run all the time (one idles while the other takes its chunk), so a chunk of each
sees the same machine: the throughput ratio is measured side by side, not against an old
figure. The load is ``benchwire``'s raw client (frames of 1000 ~200-byte records, 4
connections x 3 in flight, ``ack=quorum``, to the leader). After every chunk: the bytes on
disk of every node (all files of its data directory), every node's VmRSS.

In the retention cluster one follower is stopped (SIGTERM) after 20% of the writes and started
again after 70%: the leader has cut its log far past it, so it must rejoin via a snapshot.
At the end: that follower's ``status`` (snapshot index, first index) and whether every node of
the cluster holds the same records count, record index and applied index, and the same newest
records. Then ``query --since -1m`` (limit 1000, as the CLI asks) on the leader and on that
follower, cold (data files evicted from the page cache) and warm (median of 5).

Every wait is bounded; writes stop at ``--write-gb`` or ``--max-minutes``; only processes
started here are signalled; all traffic goes to 127.0.0.1. Data in ``.bench-retention-*`` next
to the repository, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from benchlib import new_cluster, progress
from benchwire import Conn, ConnLost, RecordFactory, fetch_status

from p2plog import open_client
from p2plog.testing.proc import ProcCluster, evict_page_cache

FRAME_RECORDS = 1000
CONNS, INFLIGHT = 4, 3
GB = 1e9


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def leader_of(c: ProcCluster, timeout_s: float = 30.0) -> str:
    with trio.fail_after(timeout_s):
        while True:
            for nid in c.live():
                st = await fetch_status(c.port(nid))
                if st is not None and st.get("role") == "leader":
                    return nid
            await trio.sleep(0.1)


async def write_chunk(c: ProcCluster, nbytes: float, deadline: float) -> dict[str, float]:
    """Full-speed writes to the leader until ``nbytes`` of records are acked (or the
    deadline); records/s and payload MB/s."""
    factory = RecordFactory()
    lead = await leader_of(c)
    per_frame = FRAME_RECORDS * factory.record_bytes
    frames = max(1, int(nbytes // per_frame))
    sent = acked = 0
    t0 = trio.current_time()

    async def worker(conn: Conn) -> None:
        nonlocal sent, acked
        while sent < frames and trio.current_time() < deadline:
            sent += 1
            req = conn.next_req()
            try:
                reply = await conn.call(req, factory.submit_frame(req, "quorum", FRAME_RECORDS), 30)
            except (trio.TooSlowError, ConnLost):
                continue
            if reply.get("kind") == "ack":
                acked += len(reply["acks"])
            else:
                await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        conns = [await Conn.connect(nursery, c.port(lead), f"w{i}") for i in range(CONNS)]
        async with trio.open_nursery() as workers:
            for conn in conns:
                for _ in range(INFLIGHT):
                    workers.start_soon(worker, conn)
        for conn in conns:
            await conn.aclose()
        nursery.cancel_scope.cancel()
    took = trio.current_time() - t0
    return {"records": acked, "s": took, "mb_s": acked * factory.record_bytes / took / 1e6}


def sample(c: ProcCluster) -> dict[str, Any]:
    return {
        nid: {"disk_gb": disk_bytes(nd.data_dir) / GB, "rss_mb": rss_mb(c.pid(nid))}
        for nid, nd in c.nodes.items()
    }


async def time_since(c: ProcCluster, nid: str, since: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with open_client(c.addresses([nid])) as cl:
        if os.geteuid() == 0:
            for nd in c.nodes.values():
                evict_page_cache(nd.data_dir)
            t0 = time.perf_counter()
            rows = await cl.query(since=since, limit=1000)
            out["cold_ms"] = (time.perf_counter() - t0) * 1000
        warm = []
        for _ in range(5):
            t0 = time.perf_counter()
            rows = await cl.query(since=since, limit=1000)
            warm.append((time.perf_counter() - t0) * 1000)
        out["warm_ms"] = statistics.median(warm)
        out["rows"] = len(rows)
    return out


async def converged(c: ProcCluster, timeout_s: float = 300.0) -> dict[str, Any]:
    keys = ("records", "record_index", "applied_index")
    with trio.fail_after(timeout_s):
        while True:
            sts = {nid: await fetch_status(c.port(nid)) for nid in c.ids}
            if all(sts.values()) and all(len({s[k] for s in sts.values() if s}) == 1 for k in keys):
                return sts
            await trio.sleep(0.5)


async def main_async(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    seg = int(a.segment_mb * 1e6)
    keep = new_cluster(root / "kept", 20, cluster_keys={"segment_bytes": seg})
    cut = new_cluster(root / "cut", 20, cluster_keys={"segment_bytes": seg})
    cut.config_path = cut.write_config(
        cut.config_path, ["[retention]", f"max_bytes = {int(a.max_bytes_gb * GB)}"]
    )
    try:
        await keep.start_all()
        await cut.start_all()
        return await run_both(a, keep, cut)
    finally:
        with trio.CancelScope(shield=True):
            await keep.stop_all()
            await cut.stop_all()


async def run_both(a: argparse.Namespace, keep: ProcCluster, cut: ProcCluster) -> dict[str, Any]:
    deadline = trio.current_time() + a.max_minutes * 60
    rep: dict[str, Any] = {"chunks": [], "args": vars(a)}
    victim: str | None = None
    stopped: dict[str, Any] = {}
    done = 0.0
    chunk = a.chunk_gb * GB
    while done < a.write_gb * GB and trio.current_time() < deadline:
        share = done / (a.write_gb * GB)
        if victim is None and share >= 0.2:
            lead = await leader_of(cut)
            victim = next(n for n in cut.ids if n != lead)
            progress(f"  stopping {victim} of the retention cluster")
            cut.kill(victim, 15)
            await cut.wait_exit(victim)
            stopped = sample(cut)
        if victim is not None and share >= 0.7 and victim not in cut.live():
            progress(f"  starting {victim} again")
            await cut.restart(victim)
        row: dict[str, Any] = {"at_gb": done / GB}
        for name, c in (("kept", keep), ("cut", cut)):
            row[name] = await write_chunk(c, chunk, deadline)
            row[name + "_nodes"] = sample(c)
        done += chunk
        rep["chunks"].append(row)
        progress(
            f"  {done / GB:5.1f} GB: kept {row['kept']['mb_s']:.1f} MB/s, cut "
            f"{row['cut']['mb_s']:.1f} MB/s; cut disk "
            + ", ".join(f"{n} {v['disk_gb']:.2f}" for n, v in row["cut_nodes"].items())
        )
    if victim is not None and victim not in cut.live():
        await cut.restart(victim)
    sts = await converged(cut)
    rep["converged"] = {
        n: {k: s[k] for k in ("records", "record_index", "applied_index")} for n, s in sts.items()
    }
    if victim is not None:
        rep["victim"] = {"id": victim, "retention": sts[victim]["retention"], "at_stop": stopped}
        lead = await leader_of(cut)
        since = time.time_ns() - 60 * 10**9
        rep["since_1m"] = {
            "leader": await time_since(cut, lead, since),
            "follower": await time_since(cut, victim, since),
        }
    return rep


def _rss(row: dict[str, Any], n: str) -> float:
    return float(row["cut_nodes"][n]["rss_mb"] or 0)


def summary(rep: dict[str, Any]) -> str:
    ch = rep["chunks"]
    nodes = list(ch[0]["cut_nodes"])
    kept = sum(r["kept"]["records"] for r in ch) / max(1e-9, sum(r["kept"]["s"] for r in ch))
    cut = sum(r["cut"]["records"] for r in ch) / max(1e-9, sum(r["cut"]["s"] for r in ch))
    lines = [
        f"records/s: without retention {kept:,.0f}, with {cut:,.0f} ({cut / kept - 1:+.1%})",
        "max disk per node with retention (GB): "
        + ", ".join(f"{n} {max(r['cut_nodes'][n]['disk_gb'] for r in ch):.2f}" for n in nodes),
        "RSS (MB) with retention, first -> last chunk: "
        + ", ".join(f"{n} {_rss(ch[0], n):.0f} -> {_rss(ch[-1], n):.0f}" for n in nodes),
        f"converged: {json.dumps(rep['converged'])}",
    ]
    if "victim" in rep:
        lines.append(f"rejoined {rep['victim']['id']}: {json.dumps(rep['victim']['retention'])}")
        lines.append(f"query --since -1m: {json.dumps(rep['since_1m'])}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--write-gb", type=float, default=10.0, help="record bytes per cluster")
    p.add_argument("--max-bytes-gb", type=float, default=2.0, help="[retention] max_bytes")
    p.add_argument("--chunk-gb", type=float, default=0.5, help="written per turn")
    p.add_argument("--segment-mb", type=float, default=64, help="[cluster] segment_bytes")
    p.add_argument("--max-minutes", type=float, default=60, help="stop writing after this")
    p.add_argument("--json", action="store_true", help="the whole report as JSON on stdout")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix=".bench-retention-", dir=Path.cwd()) as d:
        root = Path(d)
        (root / "kept").mkdir()
        (root / "cut").mkdir()
        rep = trio.run(main_async, a, root)
    print(json.dumps(rep, default=str) if a.json else summary(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
