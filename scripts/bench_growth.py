"""Growth benchmark of a local 3-node p2plog cluster (issue 7): memory as the log grows, a
follower's catch-up, filtered query scans, tail keep-up.

    python scripts/bench_growth.py                                   # 10 GB target, fill <= 25 min
    python scripts/bench_growth.py --target-gb 0.3 --catchup-mb 100  # quick: a few minutes
    python scripts/bench_growth.py --target-gb 3 --catchup-mb 1000 --max-minutes 15 --json

One FRESH cluster (``benchlib.new_cluster`` over the process harness ``p2plog.testing.proc``:
three ``python -m p2plog run`` subprocesses on 127.0.0.1, data in ``.bench-growth-*`` next to the
repository, removed at the end unless ``--keep``). The load generator is the raw-protocol client
of ``benchwire.py`` (``bench.py``'s too): frames of 1000
~200-byte records (10 of them "needles": level ``critical``, ``msg`` containing ``NEEDLE``, so
1% of the log matches the query filters), 4 connections x 3 frames in flight, ``ack=quorum``,
to the leader.

1. Fill: write until the leader's ``log_bytes`` reaches ``--target-gb`` (or ``--max-minutes``,
   or ``--max-records``: whichever first; the report says which). Every ``--sample-s`` every
   node's ``status`` and VmRSS are sampled; VmRSS also every second for per-phase peaks. The
   report gives RSS vs log size at 10%..100% of the size reached, and the slope (MB of RSS per
   GB of log) per node, over all samples and over the second half (after warm-up: the dedup
   window of ``dedup_window_records`` ids fills during the first part).
2. Catch-up, inside the fill: at 20% of the target (or 25% of the time) one follower is stopped
   (SIGTERM; ``--kill9``: SIGKILL) while the others take ``--catchup-mb`` more log at full
   speed; then it is restarted while writes continue at a moderate pace (``--catchup-rate``,
   default a quarter of the fill rate so far). Measured: start-up time (restart -> first
   status reply), the bytes it was missing (leader ``log_bytes`` at restart - its own at first
   status), the time until its ``applied_index`` >= the leader's ``commit_index`` at restart
   (-> MB/s), and until it has applied the leader's live commit index (full catch-up). Raft
   indices are only compared with Raft indices; ``index`` in acks/query/tail is only used as
   an opaque position to page on.
3. Query (writes stopped, every node settled), on a follower that was not restarted:
   ``level: critical`` over the whole log, paged with ``next_index`` (``limit`` 10,000, the
   node's maximum), cold (the node's data files evicted from the page cache with
   ``posix_fadvise(DONTNEED)``, which only touches those files) and warm; ``grep: NEEDLE``
   and an unfiltered query for ``--query-side-s`` each. Records scanned/s = records in the
   range / wall time; disk bytes read from /proc/PID/io.
4. Tail: a ``tail`` (index order, from now) on that follower while the writer runs at full
   speed for ``--tail-seconds``; ingest rate vs delivered rate, lag when writes stop, drain
   time, ``end`` (``behind``) cut-offs (then resubscribed from ``resume_index``), and the
   delay from a record's ``ts`` (set when its frame was built) to its arrival.
5. Query under writes: one ``level: critical`` page (limit 10,000) on the LEADER while the
   writer runs at full speed: the longest gap between acks while the page is scanned.

``--cluster-option KEY=VALUE`` adds a ``[cluster]`` line to peers.toml (e.g.
``dedup_window_records=100000``, to see what the dedup window costs in RSS).

CPU cores of each node, this process and the rest of the machine ("other") per phase; on a
shared 2-core machine other work skews every number. Every wait is bounded, every load loop is
bounded in records and time, only processes started here are signalled (by pid), all traffic
goes to 127.0.0.1. Progress on stderr; table on stdout (stderr with ``--json``, where stdout
carries one JSON object). Exit code 1 if the run aborted (what was measured is still printed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import tomllib
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import trio
from benchlib import (
    REPO,
    STOP_WAIT_S,
    Bench,
    all_status,
    fmt,
    git_state,
    lat_ms,
    leaves,
    new_cluster,
    pct,
    progress,
    raise_interrupt,
    stop_cluster,
    wait_leader,
)
from benchwire import (
    PROTOCOL_VERSION,
    REQUEST_TIMEOUT_S,
    BenchFailed,
    Conn,
    ConnLost,
    RecordFactory,
    array_head,
    encode_msg,
    fetch_status,
)
from trio_websocket import HandshakeError

from p2plog.testing.proc import (
    ProcCluster,
    evict_page_cache,
    proc_read_bytes,
    system_busy_s,
)

MB = 1_000_000
GB = 1_000_000_000
FRAME_RECORDS = 1000
NEEDLES_PER_FRAME = 10  # 1% of the records match the query filters
NEEDLE = "NEEDLE-quota-7f3a"
CONNS = 4
INFLIGHT = 3
MAX_LIMIT = 10_000  # p2plog.state.scans.MAX_LIMIT: the node caps a query page at this
PROC_SAMPLE_S = 1.0
LOOP_S = 1.0
CATCHUP_POLL_S = 0.25
PROJECT_AFTER_S = 30.0
SETTLE_MAX_S = 300.0
TAIL_DRAIN_S = 60.0
TAIL_IDLE_S = 5.0
TAIL_MAX_RESUBSCRIBE = 50
MAX_WRITER_RESTARTS = 20
MAX_QUERY_PAGES = 1_000_000
MAX_RETRY_SLEEP_S = 1.0
RSS_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")  # RSS split: heap vs mapped files
TARGETS = {"rss_mb": 80, "catchup_mb_s": 50, "scan_records_s": 300_000}


class NeedleFactory(RecordFactory):
    """``RecordFactory`` records that match ``level: critical`` and ``grep: NEEDLE``."""

    def _fit(self, target: int) -> dict[str, Any]:
        rec = super()._fit(target - len(NEEDLE) - 5)
        rec["level"] = "critical"
        rec["msg"] = f"{NEEDLE} {rec['msg']}"
        return rec


# ---------------------------------------------------------------------------- helpers


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope dy/dx (None with < 3 points or no spread in x)."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx <= 1e-12:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def r(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


class StreamConn(Conn):
    """A ``Conn`` whose replies to registered requests (tail streams, many replies to one
    ``req``) go to a callback instead of a waiting ``call``."""

    def __init__(self, ws: Any, name: str) -> None:
        super().__init__(ws, name)
        self.streams: dict[int, Callable[[dict[str, Any]], None]] = {}

    def _deliver(self, msg: dict[str, Any]) -> None:
        cb = self.streams.get(msg.get("req"))
        if cb is not None:
            cb(msg)
        else:
            super()._deliver(msg)


# ---------------------------------------------------------------------------- run state


@dataclass
class Run:
    bench: Bench
    args: argparse.Namespace
    info: RecordFactory = field(default_factory=RecordFactory)
    needle: RecordFactory = field(default_factory=NeedleFactory)
    phase: str = "start-up"
    sent_total: int = 0
    acked_total: int = 0
    needles_total: int = 0
    needles_unknown: int = 0  # in frames answered by an error or not at all: maybe stored
    records_cap_hit: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)
    peaks: dict[str, dict[str, int]] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    down: str | None = None  # the follower stopped for the catch-up test

    @property
    def cluster(self) -> ProcCluster:
        return self.bench.cluster

    def frame(self, req: int) -> bytes:
        """A submit of FRAME_RECORDS fresh records, the last NEEDLES_PER_FRAME of them needles."""
        head = cbor2.dumps({"v": PROTOCOL_VERSION, "kind": "submit", "req": req, "ack": "quorum"})
        assert head[0] == 0xA4
        n_info = FRAME_RECORDS - NEEDLES_PER_FRAME
        a = self.info.records(n_info)
        b = self.needle.records(NEEDLES_PER_FRAME)
        return b"".join(
            (
                b"\xa5",
                head[1:],
                cbor2.dumps("records"),
                array_head(FRAME_RECORDS),
                memoryview(a)[len(array_head(n_info)) :],
                memoryview(b)[len(array_head(NEEDLES_PER_FRAME)) :],
            )
        )

    def check_frame(self) -> None:
        self.info.check()
        msg = cbor2.loads(self.frame(9))
        recs = msg["records"]
        assert (msg["kind"], msg["req"], len(recs)) == ("submit", 9, FRAME_RECORDS), msg.keys()
        assert len({x["id"] for x in recs}) == FRAME_RECORDS
        crit = [x for x in recs if x["level"] == "critical"]
        assert len(crit) == NEEDLES_PER_FRAME
        assert all(NEEDLE in x["msg"] for x in crit)
        assert all(NEEDLE not in x["msg"] for x in recs if x["level"] == "info")

    def set_phase(self, name: str) -> None:
        self.phase = name
        self.peaks.setdefault(name, {})


class Meter:
    """CPU cores of each node / this process / the rest of the machine over one phase."""

    def __init__(self, run: Run, name: str) -> None:
        self.run = run
        self.name = name
        run.set_phase(name)
        c = run.cluster
        self.cpu0 = {nid: c.cpu_s(nid) for nid in c.nodes}
        self.gen0 = time.process_time()
        self.sys0 = system_busy_s()
        self.t0 = time.monotonic()
        self.acked0 = run.acked_total

    def end(self, **extra: Any) -> dict[str, Any]:
        c = self.run.cluster
        el = max(1e-6, time.monotonic() - self.t0)
        cores: dict[str, float | None] = {
            nid: round((c.cpu_s(nid) - self.cpu0[nid]) / el, 2) for nid in c.nodes
        }
        cores["client"] = round((time.process_time() - self.gen0) / el, 2)
        ours = sum(v or 0.0 for v in cores.values())
        cores["other"] = round(max(0.0, (system_busy_s() - self.sys0) / el - ours), 2)
        acked = self.run.acked_total - self.acked0
        out = {
            "phase": self.name,
            "seconds": round(el, 1),
            "records_acked": acked,
            "records_per_s": round(acked / el),
            "cpu_cores": cores,
            "rss_peak_mb": {
                k: round(v / 1024, 1) for k, v in sorted(self.run.peaks[self.name].items())
            },
            **extra,
        }
        self.run.phases.append(out)
        progress(
            f"phase {self.name!r}: {el:.0f} s, {out['records_per_s']:,} rec/s acked, cores "
            f"{cores}, RSS peaks {out['rss_peak_mb']}"
        )
        return out


# ---------------------------------------------------------------------------- writer


@dataclass
class WStats:
    sent: int = 0
    acked: int = 0
    frames: int = 0
    dups: int = 0
    record_errors: int = 0
    timeouts: int = 0
    conn_lost: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # when each acked frame's reply came

    def note(self, text: str) -> None:
        if len(self.notes) < 10:
            self.notes.append(text)

    def trouble(self) -> str | None:
        if self.errors or self.record_errors or self.timeouts or self.conn_lost or self.dups:
            return (
                f"error replies {dict(self.errors)}, record errors {self.record_errors}, client "
                f"timeouts {self.timeouts}, lost connections {self.conn_lost}, dup acks "
                f"{self.dups}"
            )
        return None


class Writer:
    """CONNS x INFLIGHT workers submitting frames to one node until stopped, ``deadline``, or
    the run's record cap; full speed, or paced to ``rate`` records/s (changeable on the fly)."""

    def __init__(self, run: Run, target: str, rate: float | None = None) -> None:
        self.run = run
        self.target = target
        self.rate = rate
        self.st = WStats()
        self.next_t = 0.0
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        self.stopping = False
        self.started = trio.current_time()

    async def run_until(self, deadline: float) -> None:
        port = self.run.cluster.port(self.target)
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    conns = [
                        await Conn.connect(nursery, port, f"w-{self.target}#{i}")
                        for i in range(CONNS)
                    ]
                    async with trio.open_nursery() as workers:
                        for c in conns:
                            for _ in range(INFLIGHT):
                                workers.start_soon(self.worker, c, deadline)
                    for c in conns:
                        await c.aclose()
                    nursery.cancel_scope.cancel()
        except (OSError, HandshakeError, trio.TooSlowError) as e:
            self.st.note(f"cannot connect to {self.target}: {e!r}")
        finally:
            self.finished.set()

    async def stop(self) -> None:
        """No new frames; wait (bounded) for the replies to those in flight, then cancel."""
        self.stopping = True
        with trio.move_on_after(REQUEST_TIMEOUT_S + 5):
            await self.finished.wait()
        self.scope.cancel()
        with trio.fail_after(10):
            await self.finished.wait()

    async def worker(self, conn: Conn, deadline: float) -> None:
        run, st = self.run, self.st
        n_info = FRAME_RECORDS - NEEDLES_PER_FRAME
        while trio.current_time() < deadline and not self.stopping:
            if run.sent_total + FRAME_RECORDS > run.args.max_records:
                run.records_cap_hit = True
                return
            if self.rate:
                now = trio.current_time()
                t = max(now, self.next_t)
                self.next_t = t + FRAME_RECORDS / self.rate
                await trio.sleep_until(min(t, deadline))
                if trio.current_time() >= deadline:
                    return
            req = conn.next_req()
            frame = run.frame(req)
            run.sent_total += FRAME_RECORDS
            st.sent += FRAME_RECORDS
            t0 = trio.current_time()
            try:
                reply = await conn.call(req, frame, REQUEST_TIMEOUT_S)
            except trio.Cancelled:
                run.needles_unknown += NEEDLES_PER_FRAME
                raise
            except trio.TooSlowError:
                st.timeouts += 1
                run.needles_unknown += NEEDLES_PER_FRAME
                st.note(f"{conn.name}: no reply to a submit within {REQUEST_TIMEOUT_S:.0f} s")
                continue
            except ConnLost as e:
                st.conn_lost += 1
                run.needles_unknown += NEEDLES_PER_FRAME
                st.note(f"connection lost: {e}")
                return
            kind = reply.get("kind")
            if kind == "ack":
                st.latencies_s.append(trio.current_time() - t0)
                st.done_at.append(trio.current_time())
                st.frames += 1
                acks = reply["acks"]
                st.acked += len(acks)
                run.acked_total += len(acks)
                run.needles_total += sum(1 for a in acks if a["i"] >= n_info and not a["dup"])
                st.dups += sum(1 for a in acks if a["dup"])
                if reply["errors"]:
                    st.record_errors += len(reply["errors"])
                    st.note(f"record errors: {reply['errors'][:2]}")
            elif kind == "error":
                st.errors[reply["code"]] += 1
                run.needles_unknown += NEEDLES_PER_FRAME
                st.note(f"error reply: {reply['code']}: {reply.get('msg')}")
                await trio.sleep(min(reply.get("retry_after_ms", 100) / 1000, MAX_RETRY_SLEEP_S))
            else:
                st.note(f"unexpected reply: {reply!r}"[:300])


# ---------------------------------------------------------------------------- samplers


async def proc_sampler(run: Run) -> None:
    """VmRSS of every node each second, for per-phase peaks (reads /proc only)."""
    c = run.cluster
    while True:
        peaks = run.peaks.setdefault(run.phase, {})
        for nid in c.nodes:
            rss = c.mem(nid).get("VmRSS")
            if rss is not None:
                peaks[nid] = max(peaks.get(nid, 0), rss)
        await trio.sleep(PROC_SAMPLE_S)


async def take_sample(run: Run) -> dict[str, Any]:
    c = run.cluster
    st = await all_status(c)
    t = time.monotonic()
    nodes: dict[str, Any] = {}
    for nid, s in st.items():
        nd = c.nodes[nid]
        mem = c.mem(nid, RSS_KEYS)
        nodes[nid] = {
            "pid": nd.pid if nd.alive else None,
            "rss_mb": r(mem["VmRSS"] / 1024, 1) if "VmRSS" in mem else None,
            "hwm_mb": r(mem["VmHWM"] / 1024, 1) if "VmHWM" in mem else None,
            "anon_mb": r(mem["RssAnon"] / 1024, 1) if "RssAnon" in mem else None,
        }
        if s is not None:
            nodes[nid].update(
                {
                    k: s.get(k)
                    for k in (
                        "role",
                        "log_bytes",
                        "commit_index",
                        "applied_index",
                        "last_index",
                        "records",
                        "record_index",
                    )
                    if k in s
                }
            )
    sample = {
        "t": round(t - run.results["t0"], 1),
        "phase": run.phase,
        "acked": run.acked_total,
        "nodes": nodes,
    }
    run.samples.append(sample)
    return sample


async def status_sampler(run: Run) -> None:
    while True:
        await trio.sleep(run.args.sample_s)
        with trio.move_on_after(max(5.0, run.args.sample_s)):
            await take_sample(run)


# ---------------------------------------------------------------------------- node control


async def stop_node(run: Run, nid: str, kill9: bool) -> dict[str, Any]:
    """SIGTERM (or SIGKILL) one node we started, by pid; reap it (bounded)."""
    c = run.cluster
    t0 = trio.current_time()
    c.kill(nid, signal.SIGKILL if kill9 else signal.SIGTERM)
    try:
        code = await c.wait_exit(nid, STOP_WAIT_S)
    except trio.TooSlowError:
        c.kill(nid, signal.SIGKILL)
        try:
            code = await c.wait_exit(nid, 5.0)
        except trio.TooSlowError:
            raise BenchFailed(
                f"{nid} (pid {c.pid(nid)}) did not die within 5 s of SIGKILL"
            ) from None
        run.bench.anomaly(run.phase, f"{nid} did not stop within {STOP_WAIT_S:.0f} s of SIGTERM")
    return {
        "signal": "SIGKILL" if kill9 else "SIGTERM",
        "exit_code": code,
        "stop_s": round(trio.current_time() - t0, 2),
    }


async def current_leader(run: Run) -> str:
    leader, _, _ = await wait_leader(run.cluster, exclude=run.down)
    return leader


# ---------------------------------------------------------------------------- fill + catch-up


@dataclass
class Catch:
    state: str = "pending"  # pending -> down -> catching -> done
    node: str | None = None
    out: dict[str, Any] = field(default_factory=dict)
    t_restart: float = 0.0
    t_up: float | None = None
    target_commit: int = 0
    leader_bytes_at_restart: int = 0
    base: dict[str, Any] | None = None
    bytes_at_stop: int = 0


async def fill(run: Run, nursery: trio.Nursery) -> Writer:
    """Fill the log (with the catch-up test inside); returns the last writer (stopped)."""
    a = run.args
    c = run.cluster
    target = int(a.target_gb * GB)
    catch_bytes = int(a.catchup_mb * MB)
    t0 = trio.current_time()
    deadline = t0 + a.max_minutes * 60
    leader = await current_leader(run)
    s0 = await fetch_status(c.port(leader))
    lb0 = s0["log_bytes"] if s0 else 0
    progress(
        f"fill: target {a.target_gb:g} GB of log (~{target / 250 / 1e6:.0f} M records at ~250 "
        f"log bytes each); at 5-10 MB/s that takes {target / 10e6 / 60:.0f}-"
        f"{target / 5e6 / 60:.0f} min; --max-minutes {a.max_minutes:g} cuts it"
    )
    meter = Meter(run, "fill")
    writer = Writer(run, leader)
    nursery.start_soon(writer.run_until, deadline + a.catchup_max_s)
    writers = [writer]
    restarts = 0
    catch = Catch()
    stop_reason: str | None = None
    projected = False
    fill_rate_rec = 0.0
    lb = lb0
    # Hard bound on the loop: the fill's time plus the catch-up's own bound.
    hard_deadline = deadline + a.catchup_max_s + 60
    while trio.current_time() < hard_deadline:
        await trio.sleep(CATCHUP_POLL_S if catch.state == "catching" else LOOP_S)
        await run.bench.check_nodes(run.phase)
        now = trio.current_time()
        ls = await fetch_status(c.port(leader))
        if ls is None or ls["role"] != "leader":
            new = await current_leader(run)
            if new != leader:
                run.bench.anomaly(run.phase, f"leadership moved from {leader} to {new}")
                leader = new
                await writer.stop()
                restarts += 1
                writer = Writer(run, leader, writer.rate)
                writers.append(writer)
                nursery.start_soon(writer.run_until, deadline + a.catchup_max_s)
            continue
        lb = ls["log_bytes"]
        if writer.finished.is_set() and not run.records_cap_hit and now < deadline:
            if restarts >= MAX_WRITER_RESTARTS:
                raise BenchFailed(f"the writer stopped {restarts} times: {writer.st.notes}")
            progress(f"writer to {writer.target} stopped ({writer.st.notes[-1:]}); restarting")
            restarts += 1
            writer = Writer(run, leader, writer.rate)
            writers.append(writer)
            nursery.start_soon(writer.run_until, deadline + a.catchup_max_s)
        if not projected and now - t0 >= PROJECT_AFTER_S and lb > lb0:
            projected = True
            bps = (lb - lb0) / (now - t0)
            per_rec = (lb - lb0) / max(1, run.acked_total)
            eta = (target - lb) / bps
            cut = lb + bps * (deadline - now)
            progress(
                f"fill rate {bps / MB:.1f} MB/s of log, {run.acked_total / (now - t0):,.0f} "
                f"records/s, {per_rec:.0f} log bytes/record: {a.target_gb:g} GB in ~"
                f"{(now - t0 + eta) / 60:.1f} min; --max-minutes {a.max_minutes:g} ends it at "
                f"~{min(target, cut) / GB:.2f} GB"
            )
        # ---- catch-up state machine
        if catch.state == "pending" and (
            lb >= a.stop_follower_at * target or now - t0 >= 0.25 * a.max_minutes * 60
        ):
            fill_rate_rec = run.acked_total / max(1e-6, now - t0)
            node = sorted(n for n in c.nodes if n != leader)[0]
            fs = await fetch_status(c.port(node))
            catch.node = node
            catch.bytes_at_stop = fs["log_bytes"] if fs else 0
            run.down = node
            catch.out = {
                "node": node,
                "leader": leader,
                "leader_log_bytes_at_stop": lb,
                "follower_log_bytes_at_stop": catch.bytes_at_stop,
                "follower_applied_at_stop": fs["applied_index"] if fs else 0,
                "follower_records_at_stop": fs["records"] if fs else 0,
                "stop": await stop_node(run, node, a.kill9),
            }
            catch.state = "down"
            meter.end(leader_log_gb=r(lb / GB, 3))
            meter = Meter(run, "fill, follower down")
            progress(
                f"catch-up: stopped {node} at {lb / GB:.2f} GB ({catch.out['stop']}); "
                f"writing {a.catchup_mb:g} MB more"
            )
        elif catch.state == "down" and (
            lb >= catch.out["leader_log_bytes_at_stop"] + catch_bytes or now >= deadline
        ):
            down_node = catch.node
            assert down_node is not None
            rate = a.catchup_rate or max(1000.0, fill_rate_rec / 4)
            writer.rate = rate
            await trio.sleep(1.0)  # let the pace settle before the reference point
            ls2 = await fetch_status(c.port(leader))
            ls = ls2 or ls
            catch.target_commit = ls["commit_index"]
            catch.leader_bytes_at_restart = ls["log_bytes"]
            catch.out.update(
                leader_log_bytes_at_restart=ls["log_bytes"],
                leader_commit_at_restart=ls["commit_index"],
                leader_records_at_restart=ls["records"],
                written_while_down_mb=r(
                    (ls["log_bytes"] - catch.out["leader_log_bytes_at_stop"]) / MB, 1
                ),
                write_rate_during_catchup=round(rate),
                cut_short_by_time=now >= deadline,
            )
            meter.end(leader_log_gb=r(ls["log_bytes"] / GB, 3))
            meter = Meter(run, "catch-up (moderate writes)")
            catch.t_restart = trio.current_time()
            await c.start(down_node)
            run.down = None
            catch.state = "catching"
            progress(
                f"catch-up: restarted {down_node}; leader at {ls['log_bytes'] / GB:.2f} GB, commit "
                f"{ls['commit_index']}; writes paced to {rate:,.0f} records/s"
            )
        elif catch.state == "catching":
            down_node = catch.node
            assert down_node is not None
            fs = await fetch_status(c.port(down_node), 1.0)
            t = trio.current_time() - catch.t_restart
            if fs is not None and catch.base is None:
                catch.t_up = t
                catch.base = fs
                missing = catch.leader_bytes_at_restart - fs["log_bytes"]
                catch.out.update(
                    startup_s=r(t),
                    missing_bytes=missing,
                    applied_at_first_status=fs["applied_index"],
                    records_at_first_status=fs["records"],
                )
                progress(
                    f"catch-up: {down_node} answers after {t:.2f} s, applied "
                    f"{fs['applied_index']}, missing {missing / MB:.0f} MB"
                )
            if (
                fs is not None
                and "replayed_own_log_s" not in catch.out
                and fs["applied_index"] >= catch.out["follower_applied_at_stop"]
            ):
                # A restarted node re-applies its own log (dedup window rebuild) before it
                # can apply what it missed: how long that took.
                catch.out["replayed_own_log_s"] = r(t)
            if (
                fs is not None
                and "reached_s" not in catch.out
                and fs["applied_index"] >= catch.target_commit
            ):
                assert catch.base is not None
                assert catch.t_up is not None
                missing = catch.out["missing_bytes"]
                up = catch.t_up
                catch.out.update(
                    reached_s=r(t),
                    follower_log_bytes_delta=fs["log_bytes"] - catch.base["log_bytes"],
                    applied_entries=fs["applied_index"] - catch.base["applied_index"],
                    applied_records=fs["records"] - catch.base["records"],
                    mb_per_s=r(missing / MB / max(1e-6, t - up), 1),
                    mb_per_s_incl_startup=r(missing / MB / max(1e-6, t), 1),
                    missing_records=catch.out["leader_records_at_restart"]
                    - catch.out["follower_records_at_stop"],
                    records_per_s=round(
                        (
                            catch.out["leader_records_at_restart"]
                            - catch.out["follower_records_at_stop"]
                        )
                        / max(1e-6, t - up)
                    ),
                )
                progress(
                    f"catch-up: {down_node} applied the restart-time commit index after {t:.2f} "
                    f"s: {catch.out['mb_per_s']} MB/s ({catch.out['mb_per_s_incl_startup']} "
                    f"MB/s counting start-up)"
                )
            if (
                "reached_s" in catch.out
                and fs is not None
                and fs["applied_index"] >= ls["commit_index"]
            ):
                catch.out["full_catch_up_s"] = r(t)
                catch.out["lag_entries_at_end"] = ls["commit_index"] - fs["applied_index"]
                catch.state = "done"
                writer.rate = None
                meter.end(leader_log_gb=r(lb / GB, 3))
                meter = Meter(run, "fill after catch-up")
                progress(f"catch-up: {down_node} fully caught up after {t:.2f} s; full speed again")
            elif t > a.catchup_max_s:
                catch.out["timed_out_after_s"] = a.catchup_max_s
                run.bench.anomaly(
                    run.phase,
                    f"{down_node} did not catch up within {a.catchup_max_s:.0f} s: "
                    f"{fs and fs['applied_index']} applied vs commit {ls['commit_index']}",
                )
                catch.state = "done"
                writer.rate = None
                meter.end(leader_log_gb=r(lb / GB, 3))
                meter = Meter(run, "fill after catch-up")
        # ---- stop conditions (never while a follower is down or catching up)
        if catch.state in ("pending", "done"):
            if lb >= target:
                stop_reason = "target log size reached"
            elif run.records_cap_hit:
                stop_reason = f"--max-records {a.max_records:,} reached"
            elif now >= deadline:
                stop_reason = f"--max-minutes {a.max_minutes:g} reached"
            if stop_reason:
                break
    else:
        stop_reason = "hard time bound of the fill loop"
    await writer.stop()
    meter.end(leader_log_gb=r(lb / GB, 3))
    if catch.state != "done" and catch.node is not None and not c.nodes[catch.node].alive:
        await c.start(catch.node)  # never leave it down
        run.down = None
    run.results["catchup"] = catch.out
    st = WStats()
    for w in writers:
        for k in ("sent", "acked", "frames", "dups", "record_errors", "timeouts", "conn_lost"):
            setattr(st, k, getattr(st, k) + getattr(w.st, k))
        st.errors.update(w.st.errors)
        st.notes += w.st.notes
        st.latencies_s += w.st.latencies_s
    el = trio.current_time() - t0
    run.results["fill"] = {
        "stop_reason": stop_reason,
        "seconds": round(el, 1),
        "target_bytes": target,
        "leader_log_bytes": lb,
        "records_acked": st.acked,
        "needles_acked": run.needles_total,
        "records_per_s": round(st.acked / el),
        "log_mb_per_s": r((lb - lb0) / MB / el, 2),
        "log_bytes_per_record": r((lb - lb0) / max(1, st.acked), 1),
        "frame_latency_ms": lat_ms(st.latencies_s),
        "writer_restarts": restarts,
        "trouble": st.trouble(),
    }
    if st.trouble():
        run.bench.anomaly("fill", st.trouble() or "", st.notes)
    progress(f"fill done: {stop_reason}; leader log {lb / GB:.2f} GB after {el / 60:.1f} min")
    return writer


async def settle(run: Run) -> dict[str, Any]:
    """Writes stopped: wait (bounded) until every node applied the leader's commit index."""
    c = run.cluster
    t0 = trio.current_time()
    leader = await current_leader(run)
    st: dict[str, Any] = {}
    while trio.current_time() - t0 < SETTLE_MAX_S:
        st = await all_status(c)
        lead = st.get(leader)
        if lead is not None and all(
            s is not None and s["applied_index"] >= lead["commit_index"] for s in st.values()
        ):
            return {"seconds": r(trio.current_time() - t0), "leader": leader, "status": st}
        await trio.sleep(0.25)
    run.bench.anomaly(
        "settle",
        f"not every node applied the commit index within {SETTLE_MAX_S:.0f} s: "
        + ", ".join(f"{k}: {v and (v['applied_index'], v['commit_index'])}" for k, v in st.items()),
    )
    return {"seconds": None, "leader": leader, "status": st}


# ---------------------------------------------------------------------------- query


async def scan(
    run: Run, conn: Conn, nid: str, label: str, fields: dict[str, Any], max_s: float
) -> dict[str, Any]:
    """Page through the whole log with ``fields`` as the filter (bounded in time and pages)."""
    c = run.cluster
    pid = c.pid(nid)
    io0 = proc_read_bytes(pid)
    cpu0 = c.cpu_s(nid)
    gen0 = time.process_time()
    t0 = trio.current_time()
    frm, rows, pages, done, problem = 1, 0, 0, False, None
    page_s: list[float] = []
    while trio.current_time() - t0 < max_s and pages < MAX_QUERY_PAGES:
        req = conn.next_req()
        msg = encode_msg("query", {"req": req, "from_index": frm, "limit": MAX_LIMIT, **fields})
        tp = trio.current_time()
        reply = await conn.call(req, msg, REQUEST_TIMEOUT_S)
        page_s.append(trio.current_time() - tp)
        if reply.get("kind") != "batch":
            problem = f"query got {reply!r}"[:300]
            break
        pages += 1
        rows += len(reply["records"])
        nxt = reply["next_index"]
        if nxt <= frm and not reply["done"]:
            problem = f"next_index {nxt} did not advance from {frm}"
            break
        frm = nxt
        if reply["done"]:
            done = True
            break
    wall = trio.current_time() - t0
    io1 = proc_read_bytes(pid)
    covered = frm - 1
    out = {
        "query": label,
        "node": nid,
        "filter": fields,
        "done": done,
        "pages": pages,
        "rows": rows,
        "index_range": covered,
        "seconds": r(wall, 2),
        "range_per_s": round(covered / max(1e-6, wall)),
        "rows_per_s": round(rows / max(1e-6, wall)),
        "page_s": lat_ms(page_s),
        "disk_read_mb": r((io1 - io0) / MB, 1) if io0 is not None and io1 is not None else None,
        "node_cores": r((c.cpu_s(nid) - cpu0) / max(1e-6, wall)),
        "client_cores": r((time.process_time() - gen0) / max(1e-6, wall)),
        "problem": problem,
    }
    if problem:
        run.bench.anomaly(f"query {label}", problem)
    progress(
        f"query {label} on {nid}: {covered:,} indexes in {wall:.1f} s = "
        f"{out['range_per_s']:,}/s, {rows:,} rows, {pages} pages, done={done}, disk read "
        f"{out['disk_read_mb']} MB, node {out['node_cores']} cores"
    )
    return out


async def query_phase(run: Run, qnode: str, settled: dict[str, Any]) -> dict[str, Any]:
    a = run.args
    c = run.cluster
    qs = settled["status"].get(qnode) or {}
    records = qs.get("records")
    out: dict[str, Any] = {
        "node": qnode,
        "node_records": records,
        "node_log_bytes": qs.get("log_bytes"),
        "needles_acked": run.needles_total,
        "needles_maybe_stored": run.needles_unknown,
        "runs": [],
    }
    meter = Meter(run, "query")
    async with trio.open_nursery() as nursery:
        conn = await Conn.connect(nursery, c.port(qnode), f"query-{qnode}")
        evicted = evict_page_cache(c.nodes[qnode].data_dir)
        out["evicted_mb"] = r(evicted / MB, 1)
        crit = {"level": "critical"}
        for label, flt, max_s in (
            ("level=critical, cold", crit, a.query_max_s),
            ("level=critical, warm", crit, min(a.query_max_s, 120.0)),
            (f"grep={NEEDLE}, warm", {"grep": NEEDLE}, a.query_side_s),
            ("unfiltered, warm", {}, a.query_side_s),
        ):
            q = await scan(run, conn, qnode, label, flt, max_s)
            # Records scanned: the node's record count for a complete scan, else the index
            # range covered (Raft indexes before the batch change: records + no-ops/ticks).
            scanned = records if q["done"] and records is not None else q["index_range"]
            q["records_scanned"] = scanned
            q["records_scanned_per_s"] = round(scanned / max(1e-6, q["seconds"]))
            lo, hi = run.needles_total, run.needles_total + run.needles_unknown
            if flt and q["done"] and not lo <= q["rows"] <= hi:
                run.bench.anomaly(
                    "query",
                    f"{label}: {q['rows']} matches, but {lo} needles were acked (and "
                    f"{run.needles_unknown} more sent in frames answered by an error or not "
                    f"at all)",
                )
            out["runs"].append(q)
        await conn.aclose()
        nursery.cancel_scope.cancel()
    out["cpu"] = meter.end()["cpu_cores"]
    return out


async def query_under_writes(run: Run) -> dict[str, Any]:
    """One filtered page (``level: critical``, limit 10,000: ~1M records scanned) on the
    LEADER while the writer runs at full speed: do writes stall while the page is scanned?"""
    c = run.cluster
    leader = await current_leader(run)
    meter = Meter(run, "query under writes")
    writer = Writer(run, leader)
    out: dict[str, Any] = {"node": leader}
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        nursery.start_soon(writer.run_until, t0 + 3 * REQUEST_TIMEOUT_S)
        conn = await Conn.connect(nursery, c.port(leader), f"qw-{leader}")
        await trio.sleep(3.0)
        req = conn.next_req()
        msg = encode_msg(
            "query", {"req": req, "from_index": 1, "limit": MAX_LIMIT, "level": "critical"}
        )
        q0 = trio.current_time()
        reply = await conn.call(req, msg, REQUEST_TIMEOUT_S)
        q1 = trio.current_time()
        await trio.sleep(3.0)
        await writer.stop()
        await conn.aclose()
        nursery.cancel_scope.cancel()
    st = writer.st
    before = [x for x, d in zip(st.latencies_s, st.done_at, strict=True) if d < q0]
    during = sorted(d for d in st.done_at if q0 <= d <= q1)
    marks = [q0, *during, q1]
    out.update(
        query_s=r(q1 - q0),
        rows=len(reply.get("records") or []),
        next_index=reply.get("next_index"),
        frames_acked_during_query=len(during),
        longest_ack_gap_during_query_s=r(max(b - a for a, b in itertools.pairwise(marks))),
        frame_latency_before_ms=lat_ms(before),
        frame_latency_all_ms=lat_ms(st.latencies_s),
        writer_trouble=st.trouble(),
        cpu=meter.end()["cpu_cores"],
    )
    progress(
        f"query under writes on {leader}: page {out['query_s']} s, {out['rows']} rows, "
        f"{len(during)} frames acked meanwhile, longest ack gap "
        f"{out['longest_ack_gap_during_query_s']} s; frame latency before "
        f"{out['frame_latency_before_ms']}, all {out['frame_latency_all_ms']}"
    )
    return out


# ---------------------------------------------------------------------------- tail


@dataclass
class TailState:
    delivered: int = 0
    batches: int = 0
    ends: list[dict[str, Any]] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)
    last_at: float = 0.0
    ended: trio.Event = field(default_factory=trio.Event)
    t_stop: float | None = None
    delivered_at_stop: int = 0

    def on_msg(self, msg: dict[str, Any]) -> None:
        now = trio.current_time()
        kind = msg.get("kind")
        if kind == "batch":
            recs = msg.get("records") or []
            self.delivered += len(recs)
            self.batches += 1
            self.last_at = now
            if recs and isinstance(recs[-1].get("ts"), int):
                self.delays_s.append(time.time_ns() / 1e9 - recs[-1]["ts"] / 1e9)
        else:
            self.ends.append({k: msg.get(k) for k in ("kind", "code", "msg", "resume_index")})
            self.ended.set()


async def tail_phase(run: Run, tnode: str) -> dict[str, Any]:
    a = run.args
    c = run.cluster
    leader = await current_leader(run)
    ts = TailState()
    out: dict[str, Any] = {"node": tnode, "leader": leader}
    async with trio.open_nursery() as nursery:
        conn = await StreamConn.connect(nursery, c.port(tnode), f"tail-{tnode}")
        assert isinstance(conn, StreamConn)

        async def subscribe(fields: dict[str, Any]) -> int:
            req = conn.next_req()
            conn.streams[req] = ts.on_msg
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await conn.ws.send_message(encode_msg("tail", {"req": req, **fields}))
            return req

        req = await subscribe({})
        await trio.sleep(0.5)  # the subscription is in place before the first write
        meter = Meter(run, "tail")
        acked0 = run.acked_total
        writer = Writer(run, leader)
        t0 = trio.current_time()
        nursery.start_soon(writer.run_until, t0 + a.tail_seconds)
        resubscribed = 0
        with trio.move_on_after(a.tail_seconds + REQUEST_TIMEOUT_S + 5):
            while not writer.finished.is_set():
                with trio.move_on_after(0.2):
                    await ts.ended.wait()
                if ts.ended.is_set() and resubscribed < TAIL_MAX_RESUBSCRIBE:
                    ts.ended = trio.Event()
                    resume = ts.ends[-1].get("resume_index")
                    conn.streams.pop(req, None)
                    resubscribed += 1
                    req = await subscribe({"from_index": resume} if resume else {})
        await writer.stop()
        t1 = trio.current_time()
        window = t1 - t0
        acked = run.acked_total - acked0
        lag_at_stop = acked - ts.delivered
        delivered_in_window = ts.delivered
        # Drain: until every acked record arrived, or no progress for TAIL_IDLE_S (bounded).
        with trio.move_on_after(TAIL_DRAIN_S):
            for _ in range(int(TAIL_DRAIN_S / 0.05)):
                if ts.delivered >= acked or trio.current_time() - max(ts.last_at, t1) > TAIL_IDLE_S:
                    break
                await trio.sleep(0.05)
        drained = ts.delivered >= acked
        drain_s = (ts.last_at - t1) if drained and ts.last_at > t1 else 0.0
        with trio.move_on_after(2.0):
            await conn.ws.send_message(encode_msg("cancel", {"req": req}))
        await conn.aclose()
        nursery.cancel_scope.cancel()
    ph = meter.end()
    d = sorted(ts.delays_s)
    out.update(
        write_seconds=r(window),
        ingest_records_per_s=round(acked / window),
        tail_records_per_s_during_writes=round(delivered_in_window / window),
        records_acked=acked,
        records_delivered=ts.delivered,
        lag_records_when_writes_stopped=lag_at_stop,
        drained=drained,
        drain_s=r(drain_s),
        batches=ts.batches,
        ends=ts.ends[:10],
        cut_offs=len(ts.ends),
        resubscribed=resubscribed,
        delay_ts_to_arrival_ms={
            "p50": r(pct(d, 0.5) * 1e3, 1) if d else None,
            "p99": r(pct(d, 0.99) * 1e3, 1) if d else None,
            "max": r(d[-1] * 1e3, 1) if d else None,
        },
        writer_trouble=writer.st.trouble(),
        cpu=ph["cpu_cores"],
    )
    if writer.st.trouble():
        run.bench.anomaly("tail", writer.st.trouble() or "", writer.st.notes)
    progress(
        f"tail on {tnode}: ingest {out['ingest_records_per_s']:,}/s, delivered "
        f"{out['tail_records_per_s_during_writes']:,}/s during writes, lag {lag_at_stop:,} at "
        f"stop, drained={drained} in {drain_s:.2f} s, cut-offs {len(ts.ends)}"
    )
    return out


# ---------------------------------------------------------------------------- the run


def rss_series(run: Run) -> dict[str, Any]:
    """RSS vs log size: rows at 10%..100% of the largest leader log seen; slopes per node."""
    ids = list(run.cluster.nodes)

    def lead_bytes(s: dict[str, Any]) -> int:
        return max((n.get("log_bytes") or 0) for n in s["nodes"].values())

    samples = [s for s in run.samples if s["phase"].startswith(("fill", "catch-up", "settle"))]
    if not samples:
        return {"rows": [], "slopes": {}}
    top = max(lead_bytes(s) for s in samples)
    rows = []
    for pct10 in range(1, 11):
        want = top * pct10 / 10
        s = next((s for s in samples if lead_bytes(s) >= want), samples[-1])
        rows.append(
            {
                "pct_of_reached": pct10 * 10,
                "t_min": r(s["t"] / 60, 1),
                "phase": s["phase"],
                "log_gb": r(lead_bytes(s) / GB, 3),
                "acked": s["acked"],
                "rss_mb": {nid: s["nodes"][nid].get("rss_mb") for nid in ids},
                "anon_mb": {nid: s["nodes"][nid].get("anon_mb") for nid in ids},
            }
        )
    slopes: dict[str, Any] = {}
    for nid in ids:
        final_pid = run.cluster.pid(nid)
        pts = [
            ((s["nodes"][nid].get("log_bytes") or 0) / GB, s["nodes"][nid]["rss_mb"])
            for s in samples
            if s["nodes"][nid].get("pid") == final_pid
            and s["nodes"][nid].get("rss_mb") is not None
            and s["nodes"][nid].get("log_bytes") is not None
            and s["phase"].startswith(("fill", "catch-up"))
        ]
        xmax = max((x for x, _ in pts), default=0.0)
        half = [(x, y) for x, y in pts if x >= xmax / 2]
        slopes[nid] = {
            "points": len(pts),
            "mb_per_gb_all": r(slope(pts)),
            "mb_per_gb_second_half": r(slope(half)),
            "rss_mb_max": max((y for _, y in pts), default=None),
            "log_gb_range": [r(min((x for x, _ in pts), default=0.0), 3), r(xmax, 3)],
        }
    return {"top_log_bytes": top, "rows": rows, "slopes": slopes}


async def growth_main(run: Run) -> None:
    c = run.cluster
    res = run.results
    res["t0"] = time.monotonic()
    await c.start_all()
    leader, term, _ = await wait_leader(c)
    progress(f"cluster up: leader {leader} term {term}")
    await run.bench.check_nodes("start-up")
    run.bench.scan_logs("start-up")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proc_sampler, run)
        nursery.start_soon(status_sampler, run)
        await take_sample(run)
        await fill(run, nursery)
        run.set_phase("settle")
        run.bench.scan_logs("fill", expect_warnings=True)
        settled = await settle(run)
        res["settle_s"] = settled["seconds"]
        await take_sample(run)
        leader = settled["leader"]
        catch_node = res.get("catchup", {}).get("node")
        followers = sorted(n for n in c.nodes if n != leader)
        qnode = next((n for n in followers if n != catch_node), followers[0])
        res["query"] = await query_phase(run, qnode, settled)
        run.bench.scan_logs("query")
        res["tail"] = await tail_phase(run, qnode)
        run.bench.scan_logs("tail")
        res["query_under_writes"] = await query_under_writes(run)
        run.bench.scan_logs("query under writes")
        await take_sample(run)
        nursery.cancel_scope.cancel()
    res["final_status"] = {
        k: v
        and {
            x: v.get(x)
            for x in (
                "role",
                "term",
                "commit_index",
                "applied_index",
                "records",
                "log_bytes",
                "record_index",
            )
        }
        for k, v in (await all_status(c)).items()
    }


# ---------------------------------------------------------------------------- output


def print_table(rep: dict[str, Any], out: Any) -> None:
    def p(s: str = "") -> None:
        print(s, file=out)

    info = rep["info"]
    ids = info["nodes"]
    p(
        f"p2plog growth bench: 3 nodes on 127.0.0.1, {info['cpus']} CPUs, {info['ram_gb']} GB RAM, "
        f"Python {info['python']}; cluster options {info['args']['cluster_option'] or 'none'}; "
        f"{info['record_bytes']}-byte records, {FRAME_RECORDS}/frame "
        f"({NEEDLES_PER_FRAME} needles), {CONNS}x{INFLIGHT} in flight; total {info['total_s']:.0f}"
        f" s; HEAD {info['git']['head']}, uncommitted under p2plog/: "
        f"{len(info['git']['p2plog_changes']) or 'none'}"
    )
    f = rep.get("fill")
    if f:
        p()
        p(
            f"FILL: stopped by: {f['stop_reason']}; leader log {f['leader_log_bytes'] / GB:.2f} GB "
            f"of {f['target_bytes'] / GB:g} GB in {f['seconds'] / 60:.1f} min; "
            f"{f['records_per_s']:,} records/s, {f['log_mb_per_s']} MB/s of log, "
            f"{f['log_bytes_per_record']} log bytes/record; frame p50/p99 "
            f"{fmt(f['frame_latency_ms']['p50'], '.0f')}/{fmt(f['frame_latency_ms']['p99'], '.0f')}"
            f" ms; settle after fill {fmt(rep.get('settle_s'))} s"
        )
    s = rep.get("rss")
    if s and s["rows"]:
        p()
        p(f"RSS/RssAnon (MB) vs LOG SIZE (target: RSS <= {TARGETS['rss_mb']} MB, flat)")
        hdr = f"{'%':>4} {'min':>5} {'log GB':>7} {'records':>11}  " + " ".join(
            f"{n:>11}" for n in ids
        )
        p(hdr + "  phase")
        for row in s["rows"]:
            p(
                f"{row['pct_of_reached']:>4} {row['t_min']:>5} {row['log_gb']:>7.3f} "
                f"{row['acked']:>11,}  "
                + " ".join(
                    f"{fmt(row['rss_mb'][n], '.0f') + '/' + fmt(row['anon_mb'][n], '.0f'):>11}"
                    for n in ids
                )
                + f"  {row['phase']}"
            )
        for n in ids:
            sl = s["slopes"][n]
            p(
                f"  {n}: slope {fmt(sl['mb_per_gb_all'])} MB/GB overall, "
                f"{fmt(sl['mb_per_gb_second_half'])} MB/GB over the second half "
                f"({sl['points']} samples, log {sl['log_gb_range'][0]}-{sl['log_gb_range'][1]} "
                f"GB, current process); max RSS {fmt(sl['rss_mb_max'])} MB"
            )
    cu = rep.get("catchup")
    if cu:
        p()
        p(f"CATCH-UP (target >= {TARGETS['catchup_mb_s']} MB/s)")
        p(
            f"  {cu.get('node')} stopped ({cu.get('stop')}) at leader log "
            f"{fmt(cu.get('leader_log_bytes_at_stop'), ',')} B; "
            f"{fmt(cu.get('written_while_down_mb'))} MB written while down; restarted with "
            f"writes paced to "
            f"{fmt(cu.get('write_rate_during_catchup'), ',')} records/s"
        )
        p(
            f"  start-up {fmt(cu.get('startup_s'))} s; missing "
            f"{fmt(cu.get('missing_bytes') and round(cu['missing_bytes'] / MB))} MB; applied the "
            f"restart-time commit index after {fmt(cu.get('reached_s'))} s -> "
            f"{fmt(cu.get('mb_per_s'))} MB/s ({fmt(cu.get('mb_per_s_incl_startup'))} MB/s incl. "
            f"start-up), {fmt(cu.get('records_per_s'), ',')} records/s; fully caught up after "
            f"{fmt(cu.get('full_catch_up_s'))} s; had re-applied its own log (applied_index "
            f"{fmt(cu.get('follower_applied_at_stop'))} at stop, "
            f"{fmt(cu.get('applied_at_first_status'))} at first status) after "
            f"{fmt(cu.get('replayed_own_log_s'))} s"
            + (
                f"; TIMED OUT after {cu['timed_out_after_s']} s"
                if "timed_out_after_s" in cu
                else ""
            )
        )
    q = rep.get("query")
    if q:
        p()
        p(
            f"QUERY on {q['node']} ({fmt(q['node_records'], ',')} records, "
            f"{fmt(q['node_log_bytes'] and round(q['node_log_bytes'] / GB, 2))} GB; "
            f"{q.get('evicted_mb')} MB evicted from the page cache before the cold run; target "
            f">= {TARGETS['scan_records_s']:,} records/s filtered)"
        )
        p(
            f"  {'query':32} {'done':>5} {'scanned':>12} {'s':>7} {'records/s':>10} {'rows':>9} "
            f"{'pages':>6} {'page p50/max ms':>16} {'disk MB':>8} {'node cpu':>8}"
        )
        for x in q["runs"]:
            pl = x["page_s"]
            p(
                f"  {x['query']:32} {x['done']!s:>5} {x['records_scanned']:>12,} "
                f"{x['seconds']:>7} {x['records_scanned_per_s']:>10,} {x['rows']:>9,} "
                f"{x['pages']:>6} {fmt(pl['p50'], '.0f') + '/' + fmt(pl['max'], '.0f'):>16} "
                f"{fmt(x['disk_read_mb']):>8} {fmt(x['node_cores']):>8}"
            )
    t = rep.get("tail")
    if t:
        dl = t["delay_ts_to_arrival_ms"]
        p()
        p(
            f"TAIL on {t['node']} (index order, from now) while writing at full speed to "
            f"{t['leader']} for {t['write_seconds']} s"
        )
        p(
            f"  ingest {t['ingest_records_per_s']:,} records/s; delivered "
            f"{t['tail_records_per_s_during_writes']:,} records/s during writes; lag "
            f"{t['lag_records_when_writes_stopped']:,} records when writes stopped; drained="
            f"{t['drained']} in {t['drain_s']} s; {t['records_delivered']:,}/"
            f"{t['records_acked']:,} delivered; cut-offs (end) {t['cut_offs']} {t['ends'][:2]}; "
            f"ts->arrival p50/p99/max {dl['p50']}/{dl['p99']}/{dl['max']} ms"
        )
    qw = rep.get("query_under_writes")
    if qw:
        p()
        p(
            f"FILTERED PAGE ON THE LEADER {qw['node']} DURING FULL-SPEED WRITES: page "
            f"{qw['query_s']} s ({qw['rows']} rows); {qw['frames_acked_during_query']} frames "
            f"acked meanwhile, longest gap between acks {qw['longest_ack_gap_during_query_s']} s; "
            f"frame latency before the query p50/max {qw['frame_latency_before_ms']['p50']}/"
            f"{qw['frame_latency_before_ms']['max']} ms, overall max "
            f"{qw['frame_latency_all_ms']['max']} ms"
        )
    if rep.get("phases"):
        p()
        p(
            "PHASES: CPU cores (all incarnations of each node; other = rest of the machine), "
            "RSS peak"
        )
        p(
            f"  {'phase':28} {'s':>6} {'rec/s':>8} "
            + " ".join(f"{n:>5}" for n in [*ids, "client", "other"])
            + "  RSS peak MB"
        )
        for ph in rep["phases"]:
            cc = ph["cpu_cores"]
            p(
                f"  {ph['phase']:28} {ph['seconds']:>6} {ph['records_per_s']:>8,} "
                + " ".join(f"{fmt(cc.get(n)):>5}" for n in [*ids, "client", "other"])
                + f"  {ph['rss_peak_mb']}"
            )
    m = rep.get("machine")
    if m:
        p(
            f"  machine: load average {m['loadavg_before']} before, {m['loadavg_after']} after; "
            f"other processes >= 1 CPU s: "
            + (
                "; ".join(f"{o['cpu_s']} s {o['cmd'][:50]}" for o in m["other_processes_cpu"][:4])
                or "none"
            )
        )
    for fl in rep.get("failure") or []:
        p()
        p("RUN ABORTED: " + fl.splitlines()[0])
        for line in fl.splitlines()[1:10]:
            p(f"    {line}")
    an = rep.get("anomalies") or []
    p()
    p(f"ANOMALIES: {len(an) or 'none'}")
    for x in an:
        p(f"  [{x['phase']}] {x['what']}"[:300])
        for line in x["lines"][:4]:
            p(f"      {line}"[:300])


def make_bench(cluster: ProcCluster, max_records: int) -> Bench:
    """``benchlib.Bench`` (anomalies, node checks, log scans) around ``cluster``."""
    b = Bench(RecordFactory(), seconds=0.0, max_records=max_records)
    b.cluster = cluster
    return b


def cluster_options(options: list[str]) -> dict[str, Any]:
    """``--cluster-option KEY=VALUE`` values as ``[cluster]`` keys; VALUE is a TOML value
    (``100000``, ``"text"``), a bare word is taken as a string."""
    out: dict[str, Any] = {}
    for o in options:
        key, _, text = o.partition("=")
        try:
            out[key.strip()] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = text.strip()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--target-gb", type=float, default=10.0, help="log size to fill (10)")
    ap.add_argument("--max-minutes", type=float, default=25.0, help="fill time bound (25)")
    ap.add_argument("--max-records", type=int, default=0, help="record cap (0: 8 per KB target)")
    ap.add_argument("--catchup-mb", type=float, default=1000.0, help="written while down (1000)")
    ap.add_argument("--catchup-rate", type=float, default=0.0, help="records/s while catching up")
    ap.add_argument("--catchup-max-s", type=float, default=600.0, help="catch-up bound (600)")
    ap.add_argument("--stop-follower-at", type=float, default=0.2, help="fraction of target")
    ap.add_argument("--kill9", action="store_true", help="SIGKILL the follower, not SIGTERM")
    ap.add_argument("--sample-s", type=float, default=5.0, help="status/RSS sample period (5)")
    ap.add_argument("--query-max-s", type=float, default=180.0, help="per full filtered scan")
    ap.add_argument("--query-side-s", type=float, default=20.0, help="grep/unfiltered scans")
    ap.add_argument("--tail-seconds", type=float, default=10.0, help="writes during the tail")
    ap.add_argument("--tick-ms", type=int, default=20)
    ap.add_argument("--node-log-level", default="INFO")
    ap.add_argument(
        "--cluster-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra [cluster] line in peers.toml, e.g. dedup_window_records=100000",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = ap.parse_args()
    if a.target_gb <= 0 or a.max_minutes <= 0 or a.catchup_mb <= 0 or a.sample_s < 0.5:
        ap.error("--target-gb, --max-minutes, --catchup-mb > 0; --sample-s >= 0.5")
    if not 0 < a.stop_follower_at < 1:
        ap.error("--stop-follower-at is a fraction of the target, between 0 and 1")
    if a.max_records <= 0:
        a.max_records = int(a.target_gb * GB / 1000 * 8) + 10_000_000
    free = shutil.disk_usage(REPO).free
    need = 3 * (a.target_gb * GB + a.catchup_mb * MB) * 1.2 + 5 * GB
    if free < need:
        ap.error(f"{free / GB:.0f} GB free next to the repo; this run needs ~{need / GB:.0f} GB")

    signal.signal(signal.SIGTERM, raise_interrupt)
    git = git_state()
    root = Path(tempfile.mkdtemp(prefix=".bench-growth-", dir=REPO)).resolve()
    t0 = time.monotonic()
    rc = 0
    cluster: ProcCluster | None = None
    run: Run | None = None
    failure: list[str] = []
    shutdown: dict[str, Any] = {}
    try:
        cluster = new_cluster(
            root, a.tick_ms, a.node_log_level, cluster_keys=cluster_options(a.cluster_option)
        )
        run = Run(make_bench(cluster, a.max_records), a)
        run.check_frame()
        progress(f"work directory {root}; ports {[n.port for n in cluster.nodes.values()]}")
        trio.run(growth_main, run)
    except BaseException as e:
        errors = list(leaves(e))
        if any(isinstance(x, KeyboardInterrupt) for x in errors):
            progress("interrupted; stopping the nodes")
            rc = 130
        else:
            rc = 1
            for x in errors:
                failure.append(
                    str(x)
                    if isinstance(x, BenchFailed)
                    else "".join(traceback.format_exception(x)).rstrip()
                )
                progress(f"BENCH FAILED: {failure[-1]}")
            if cluster is not None:
                progress(cluster.log_tails(40))
    finally:
        if cluster is not None:
            if run is not None:
                run.results["machine"] = run.bench.machine()
            shutdown = stop_cluster(cluster)
            bad = {k: v for k, v in shutdown.items() if v.get("exit_code") != 0}
            if bad and run is not None:
                run.bench.anomalies.append(
                    {"phase": "shutdown", "what": f"unclean stop: {bad}", "lines": []}
                )
        if a.keep:
            progress(f"work directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if cluster is None or run is None or rc == 130:
        return rc or 1
    res = dict(run.results)
    res.pop("t0", None)
    report = {
        "info": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, 1),
            "nodes": list(cluster.nodes),
            "args": vars(a),
            "record_bytes": run.info.record_bytes,
            "total_s": round(time.monotonic() - t0, 1),
            "loadgen_cpu_s": round(time.process_time(), 2),
            "git": git,
            "targets": TARGETS,
        },
        **res,
        "rss": rss_series(run),
        "phases": run.phases,
        "samples": run.samples,
        "shutdown": shutdown,
        "anomalies": run.bench.anomalies,
        "failure": failure,
    }
    print_table(report, sys.stderr if a.json else sys.stdout)
    if a.json:
        print(json.dumps(report, indent=1, default=str))
    return rc


if __name__ == "__main__":
    sys.exit(main())
