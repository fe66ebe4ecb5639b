"""End-to-end benchmark of a local 3-node p2plog cluster, through the client protocol.

    python scripts/bench.py                  # full: 3 runs x 20 shapes x 5 s + 50 kills, ~12 min
    python scripts/bench.py --quick --skip-failover     # smoke test: 1 run x 2 s per shape
    python scripts/bench.py --runs 3 --seconds 3 --kills 5
    python scripts/bench.py --compare        # then the same shapes on etcd (scripts/bench_etcd.py)
    python scripts/bench.py --shapes client_batched,raw_1 --runs 5   # only some shapes
    python scripts/bench.py --skip-failover --json     # one JSON object on stdout
    python scripts/bench.py --keep           # keep the work dirs (peers.toml, data, logs)
    python scripts/bench.py --node-log-level DEBUG --keep --skip-failover   # investigate

Every run of every shape starts a FRESH cluster (``benchlib.new_cluster`` over the process
harness ``p2plog.testing.proc``): three ``python -m p2plog run --config peers.toml --node nX``
subprocesses on 127.0.0.1 (free ports from binding port 0), with a
``peers.toml`` (``[cluster] tick_ms`` from ``--tick-ms``, election/heartbeat ticks = the defaults
of ``p2plog.config.ClusterConfig``) and data directories in a fresh work directory created next
to the repository (same filesystem as the repo; ``PYTHONPATH`` points at this checkout, so the
working tree's code is measured). Node stdout/stderr go to ``<work>/nX.log``. Runs are
interleaved (run 1 of every shape, then run 2 ...), so drift of the machine spreads over all
shapes; ``--runs N`` (default 3) runs per shape, and the tables give median [min-max] over them.

This process is the load generator, a process of its own (the nodes are separate processes),
with four drivers:

* ``raw``: ``benchwire.py``'s raw-protocol client (trio-websocket + cbor2, many requests in
  flight per connection, replies matched by ``req``, every wait under ``trio.fail_after``).
  Frames are built
  from one pre-encoded record with a fresh uuid4 and the current ``ts`` spliced in (checked at
  start-up to decode to the intended map; a sanity record is read back from every node).
* ``client``: ``p2plog.open_client`` / ``Client.submit`` (lists, or one dict per call through the
  client's coalescing batcher). Records are dicts copied from one ~200-byte template with only
  ``id`` (16 random uuid4 bytes from a pool) and ``ts`` set fresh: the Client keeps ids it is
  given (it assigns a text uuid4 to a record without one). The time spent building them is
  measured (``build_cores``) so the generator's own share is known.
* ``otlp`` and ``loki`` (``bench_ingest.py``): the node's HTTP ingest endpoints, ``POST
  /v1/logs`` (OTLP/HTTP ``ExportLogsServiceRequest`` protobuf) and ``POST /loki/api/v1/push``
  (Loki ``PushRequest`` protobuf, snappy), one HTTP/1.1 keep-alive connection (trio + h11) per
  request in flight. The same ~200-byte records (level, source, a ~100-character message, two
  fields) in the endpoint's encoding, each with a fixed-width counter in its message (the
  nodes derive ids from content and time) and a fresh time, spliced into a body serialized
  once (``build_cores`` includes the snappy compression). A 429/503 resends the same body
  after its Retry-After (capped at ``MAX_RETRY_SLEEP_S``) and counts as an error reply.

Records: ~200 bytes of CBOR each (uuid4 ``id`` as 16 bytes, ``ts``, ``level``, ``source``,
``msg``, two ``fields``). Shapes (``--shapes`` picks some by key; ack=quorum unless said):

  client_batched    Client, lists of 1000 records per submit, 8 submit calls in flight
  client_256        Client, one record per submit, 256 tasks (the client coalesces into frames)
  client_1          Client, one record per submit, 1 in flight (default linger 2 ms)
  client_1_linger0  the same with ClientOptions(linger_ms=0)
  raw_1, raw_1_ack_leader, raw_1_via_follower     raw, one record per submit, 1 in flight
  raw_256, raw_256_4conns                         raw, one record per submit, 256 in flight
  raw_b100, raw_b1000 (+ _via_follower)           raw, 100/1000 per submit, 4 conns x 3 frames
  client_batched_secure, raw_1_secure             client_batched and raw_1 on a cluster with
                                                  TLS on every link, a cluster secret and a
                                                  client token (what issue 13's trust costs)
  client_batched_http, raw_1_http                 client_batched and raw_1 with every node's
                                                  HTTP port on and /metrics of each scraped
                                                  once a second (what issue 17's port costs)
  otlp_batched                                    OTLP/HTTP protobuf to the leader's HTTP port,
                                                  1000 records per request, 8 connections
                                                  with one request in flight each
  loki_batched                                    the same as Loki push (snappy protobuf);
                                                  no /metrics scraping in either: compare
                                                  them with client_batched
  otlp_batched_via_follower                       otlp_batched to a follower's port (the
                                                  follower decodes, the leader re-checks)

Measurements per run (each bounded by ``--seconds`` AND ``--max-records``): records/s (acked /
wall time); ack latency p50/p99 of each submit call (one frame for raw, one ``Client.submit``
for client); fsyncs per record of the leader and of the followers (delta ``fsyncs`` / delta
``records`` from ``status``, after every node applied the leader's commit index -- Raft indices
compared with Raft indices only: the ``index`` of acks/queries is a record number); CPU cores
(CPU s / wall s over the timed window) of each node by role (leader, follower 1 = the one the
client talks to for via-follower shapes, else the lower id, follower 2), of the load generator
and of the REST of the machine ("other": /proc/stat busy time minus ours); RSS/peak RSS of every
node at the end of the run. The bench also lists other processes that used CPU meanwhile: on a
shared 2-core machine, other work skews every number here.

Failover (one series of ``--kills``, default 50, on one fresh cluster after the shape runs):
kill -9 the leader while one paced writer per surviving node submits single records (a new
request every 10 ms, 1 s timeout each); the failover time is kill -> first ack whose ``term``
exceeds the old leader's. The killed node is restarted and must catch up (applied_index >= the
leader's commit_index) before the next kill. p50/p99/max.

``--compare`` then runs ``bench_etcd.etcd_compare`` (same shapes and run count, fresh etcd
clusters) and prints p2plog and etcd side by side. Last, a TARGETS table: each target of
issue 7, its threshold, p2plog's median and met / not met.

Anything odd (error replies, client timeouts, a leadership change or dropped peer frames during
a run, WARNING/ERROR lines in node logs, a node exiting, an unclean SIGTERM stop) is printed to
stderr with node log tails and listed under "anomalies"; a dead node or a cluster without a
leader fails that run (recorded, the others go on; after 3 failed runs the rest are skipped).
Every node started is stopped by pid (SIGTERM, bounded wait, then SIGKILL) and every work
directory removed, also on errors and Ctrl-C (``--keep`` keeps them). Progress goes to stderr;
the tables to stdout (to stderr with --json, where stdout carries one JSON object with every
run's values and the aggregates). Exit code 1 if a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import trio
from benchlib import (
    POLL_S,
    REPO,
    SCRIPTS,
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
    CONNECT_TIMEOUT_S,
    HOST,
    REQUEST_TIMEOUT_S,
    BenchFailed,
    Conn,
    ConnLost,
    RecordFactory,
    encode_msg,
    uuid4s,
)

from p2plog.client import (
    Client,
    ClientError,
    ClientOptions,
    RecordsRejected,
    SubmitError,
    open_client,
)
from p2plog.config import ClusterConfig
from p2plog.testing.proc import ProcCluster, system_busy_s

SETTLE_WAIT_S = 15.0
CATCH_UP_WAIT_S = 90.0
MAX_RETRY_SLEEP_S = 1.0

FAILOVER_PACE_S = 0.010
FAILOVER_REQUEST_TIMEOUT_S = 1.0
FAILOVER_MAX_OUTSTANDING = 200
FAILOVER_WAIT_S = 20.0
FAILOVER_PRE_WAIT_S = 10.0
FAILOVER_MAX_WRITES = 5000  # per writer and kill: 50 s at the pace above


# ---------------------------------------------------------------------------- bench state


async def wait_settled(bench: Bench, leader: str, phase: str) -> dict[str, Any]:
    """Wait until every node applied the leader's commit index; the final statuses."""
    t0 = trio.current_time()
    st: dict[str, Any] = {}
    while trio.current_time() - t0 < SETTLE_WAIT_S:
        st = await all_status(bench.cluster)
        lead = st.get(leader)
        if lead is not None and all(
            s is not None and s["applied_index"] >= lead["commit_index"] for s in st.values()
        ):
            return st
        await trio.sleep(POLL_S)
    bench.anomaly(
        phase,
        f"nodes did not all apply the commit index within {SETTLE_WAIT_S:.0f} s: "
        + ", ".join(
            f"{k}: applied {v and v['applied_index']} commit {v and v['commit_index']}"
            for k, v in st.items()
        ),
    )
    return st


# ---------------------------------------------------------------------------- load runs


@dataclass(frozen=True, slots=True)
class LoadSpec:
    name: str
    via: str  # "leader" or "follower"
    frame_records: int  # records per submit (a frame for raw, a Client.submit call for client)
    conns: int  # raw: connections; client: always 1 (one Client)
    inflight: int  # raw: frames in flight per connection; client: concurrent submit tasks;
    # otlp/loki: HTTP connections, one request in flight on each
    ack: str = "quorum"  # otlp/loki: always quorum (what the endpoints do)
    key: str = ""
    driver: str = "raw"  # "raw" protocol, "client" (p2plog.Client), "otlp" or "loki" (HTTP)
    linger_ms: float | None = None  # client only: ClientOptions.linger_ms (None: the default)
    secure: bool = False  # TLS on every link, a cluster secret, a client token
    http: bool = False  # every node's HTTP port on
    scrape: bool = False  # (with http) /metrics of each node scraped every second


SHAPES = (
    LoadSpec(
        "Client: 1000/submit, 8 in flight",
        "leader",
        1000,
        1,
        8,
        key="client_batched",
        driver="client",
    ),
    LoadSpec("Client: 1/submit, 256 tasks", "leader", 1, 1, 256, key="client_256", driver="client"),
    LoadSpec("Client: 1/submit, 1 in flight", "leader", 1, 1, 1, key="client_1", driver="client"),
    LoadSpec(
        "Client: 1 in flight, linger 0",
        "leader",
        1,
        1,
        1,
        key="client_1_linger0",
        driver="client",
        linger_ms=0.0,
    ),
    LoadSpec(
        "Client: 1000/submit, 8 in flight, TLS + token",
        "leader",
        1000,
        1,
        8,
        key="client_batched_secure",
        driver="client",
        secure=True,
    ),
    LoadSpec(
        "Client: 1000/submit, 8 in flight, /metrics scraped 1/s",
        "leader",
        1000,
        1,
        8,
        key="client_batched_http",
        driver="client",
        http=True,
        scrape=True,
    ),
    LoadSpec(
        "OTLP/HTTP protobuf: 1000/request, 8 in flight",
        "leader",
        1000,
        1,
        8,
        key="otlp_batched",
        driver="otlp",
        http=True,
    ),
    LoadSpec(
        "Loki push snappy protobuf: 1000/request, 8 in flight",
        "leader",
        1000,
        1,
        8,
        key="loki_batched",
        driver="loki",
        http=True,
    ),
    LoadSpec(
        "OTLP/HTTP protobuf: 1000/request, 8 in flight, via follower",
        "follower",
        1000,
        1,
        8,
        key="otlp_batched_via_follower",
        driver="otlp",
        http=True,
    ),
    LoadSpec("raw: 1 in flight", "leader", 1, 1, 1, key="raw_1"),
    LoadSpec(
        "raw: 1 in flight, /metrics scraped 1/s",
        "leader",
        1,
        1,
        1,
        key="raw_1_http",
        http=True,
        scrape=True,
    ),
    LoadSpec("raw: 1 in flight, TLS + token", "leader", 1, 1, 1, key="raw_1_secure", secure=True),
    LoadSpec("raw: 1 in flight, ack=leader", "leader", 1, 1, 1, "leader", key="raw_1_ack_leader"),
    LoadSpec("raw: 1 in flight, via follower", "follower", 1, 1, 1, key="raw_1_via_follower"),
    LoadSpec("raw: 256 in flight, 1 conn", "leader", 1, 1, 256, key="raw_256"),
    LoadSpec("raw: 256 in flight, 4 conns", "leader", 1, 4, 64, key="raw_256_4conns"),
    LoadSpec("raw: 100/frame, 4x3 in flight", "leader", 100, 4, 3, key="raw_b100"),
    LoadSpec("raw: 1000/frame, 4x3 in flight", "leader", 1000, 4, 3, key="raw_b1000"),
    LoadSpec("raw: 100/frame, via follower", "follower", 100, 4, 3, key="raw_b100_via_follower"),
    LoadSpec("raw: 1000/frame, via follower", "follower", 1000, 4, 3, key="raw_b1000_via_follower"),
)
SPECS = SHAPES  # the earlier name
INGEST_DRIVERS = ("otlp", "loki")  # scripts/bench_ingest.py: one request per HTTP connection
SHAPE_KEYS = {s.key: s for s in SHAPES}

CLIENT_SUBMIT_DEADLINE_S = 20.0  # ClientOptions.submit_deadline_s of the client shapes
ID_POOL = 4096  # uuid4 ids made at once by an IdPool


@dataclass
class LoadStats:
    sent: int = 0
    acked: int = 0
    frames: int = 0  # submit calls answered (frames for raw, Client.submit calls for client)
    dups: int = 0
    record_errors: int = 0
    client_timeouts: int = 0
    conn_lost: int = 0
    stopped_by_count: bool = False
    build_s: float = 0.0  # time spent building frames / record dicts (perf_counter: thread_time
    # is a syscall here, and cost the client shapes a quarter of the generator's CPU)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.samples) < 10:
            self.samples.append(text)


class Meter:
    """CPU of the nodes, of this process and of the machine, and wall time, over a window."""

    def __init__(self, cluster: ProcCluster) -> None:
        self.cluster = cluster
        self.cpu0 = cluster.live_cpu_s()
        self.gen0 = time.process_time()
        self.sys0 = system_busy_s()
        self.t0 = trio.current_time()

    def stop(self) -> tuple[float, dict[str, float | None]]:
        """(elapsed s, cores per node id + ``loadgen`` + ``other``)."""
        elapsed = trio.current_time() - self.t0
        cpu1 = self.cluster.live_cpu_s()
        gen1 = time.process_time()
        sys1 = system_busy_s()
        cores: dict[str, float | None] = {}
        for nid in self.cluster.nodes:
            a, b = self.cpu0[nid], cpu1[nid]
            cores[nid] = round((b - a) / elapsed, 3) if a is not None and b is not None else None
        cores["loadgen"] = round((gen1 - self.gen0) / elapsed, 3)
        ours = sum(v for v in cores.values() if v is not None)
        cores["other"] = round(max(0.0, (sys1 - self.sys0) / elapsed - ours), 3)
        return elapsed, cores


def _load_bound_s(bench: Bench) -> float:
    """Upper bound of one timed window: the load plus the longest a last call may take."""
    return bench.seconds + 2 * max(REQUEST_TIMEOUT_S, CLIENT_SUBMIT_DEADLINE_S) + 15


async def submitter(
    bench: Bench, conn: Conn, spec: LoadSpec, deadline: float, st: LoadStats
) -> None:
    n = spec.frame_records
    while trio.current_time() < deadline:
        if st.sent + n > bench.max_records:
            st.stopped_by_count = True
            return
        req = conn.next_req()
        b0 = time.perf_counter()
        frame = bench.factory.submit_frame(req, spec.ack, n)
        st.build_s += time.perf_counter() - b0
        st.sent += n
        t = trio.current_time()
        try:
            reply = await conn.call(req, frame, REQUEST_TIMEOUT_S)
        except trio.TooSlowError:
            st.client_timeouts += 1
            st.note(f"{conn.name}: no reply to a {n}-record submit within {REQUEST_TIMEOUT_S} s")
            continue
        except ConnLost as e:
            st.conn_lost += 1
            st.note(f"connection lost: {e}")
            return
        st.latencies_s.append(trio.current_time() - t)
        st.frames += 1
        kind = reply.get("kind")
        if kind == "ack":
            acks = reply["acks"]
            st.acked += len(acks)
            st.dups += sum(1 for a in acks if a["dup"])
            if reply["errors"]:
                st.record_errors += len(reply["errors"])
                st.note(f"record errors: {reply['errors'][:2]}")
        elif kind == "error":
            st.errors[reply["code"]] += 1
            st.note(f"error reply: {reply['code']}: {reply.get('msg')}")
            await trio.sleep(min(reply.get("retry_after_ms", 100) / 1000, MAX_RETRY_SLEEP_S))
        else:
            st.note(f"unexpected reply: {reply!r}"[:300])


async def drive_raw(
    bench: Bench, spec: LoadSpec, target: str, _addresses: list[str], st: LoadStats, _phase: str
) -> tuple[float, dict[str, float | None], dict[str, Any]]:
    """The raw-protocol load; (elapsed s, cores, extra result fields)."""
    cluster = bench.cluster
    async with trio.open_nursery() as nursery:
        conns = [
            await Conn.connect(nursery, cluster.port(target), f"{target}#{i}")
            for i in range(spec.conns)
        ]
        meter = Meter(cluster)
        with trio.fail_after(_load_bound_s(bench)):
            async with trio.open_nursery() as workers:
                for c in conns:
                    for _ in range(spec.inflight):
                        workers.start_soon(submitter, bench, c, spec, meter.t0 + bench.seconds, st)
        elapsed, cores = meter.stop()
        for c in conns:
            await c.aclose()
        nursery.cancel_scope.cancel()
    return elapsed, cores, {}


class IdPool:
    """Random version-4 UUIDs as 16-byte strings, made ``ID_POOL`` (or more) at a time."""

    def __init__(self) -> None:
        self._ids: list[bytes] = []

    def fill(self, n: int = ID_POOL) -> None:
        raw = bytes(uuid4s(max(n, ID_POOL)))
        self._ids += [raw[i : i + 16] for i in range(0, len(raw), 16)]

    def take(self, n: int) -> list[bytes]:
        if n > len(self._ids):
            self.fill(n)
        out = self._ids[-n:]
        del self._ids[-n:]
        return out


async def client_submitter(
    bench: Bench,
    client: Client,
    spec: LoadSpec,
    deadline: float,
    st: LoadStats,
    ids: IdPool,
) -> None:
    """Loops ``await client.submit(...)``: one dict, or a list of ``frame_records`` dicts."""
    n = spec.frame_records
    template = bench.factory.template
    while trio.current_time() < deadline:
        if st.sent + n > bench.max_records:
            st.stopped_by_count = True
            return
        b0 = time.perf_counter()
        ts = time.time_ns()
        batch: dict[str, Any] | list[dict[str, Any]]
        if n == 1:
            batch = {**template, "id": ids.take(1)[0], "ts": ts}
        else:
            batch = [{**template, "id": i, "ts": ts} for i in ids.take(n)]
        st.build_s += time.perf_counter() - b0
        st.sent += n
        t = trio.current_time()
        try:
            acks = await client.submit(batch, spec.ack)
        except RecordsRejected as e:
            st.record_errors += len(e.errors)
            st.note(f"records rejected: {e}"[:300])
            acks = [a for a in e.acks if a is not None]
        except SubmitError as e:
            st.errors[f"{type(e).__name__}:{e.code}"] += 1
            st.acked += sum(1 for a in e.acks if a is not None)
            st.note(f"{type(e).__name__} ({e.code}): {e}"[:300])
            continue
        except ClientError as e:
            st.errors[type(e).__name__] += 1
            st.note(f"{type(e).__name__}: {e}"[:300])
            await trio.sleep(MAX_RETRY_SLEEP_S)
            continue
        st.latencies_s.append(trio.current_time() - t)
        st.frames += 1
        st.acked += len(acks)
        st.dups += sum(1 for a in acks if a.dup)


async def drive_client(
    bench: Bench, spec: LoadSpec, target: str, addresses: list[str], st: LoadStats, phase: str
) -> tuple[float, dict[str, float | None], dict[str, Any]]:
    """The load through ``p2plog.Client``; (elapsed s, cores, extra result fields)."""
    defaults = ClientOptions()
    opts = ClientOptions(
        submit_deadline_s=CLIENT_SUBMIT_DEADLINE_S,
        linger_ms=defaults.linger_ms if spec.linger_ms is None else spec.linger_ms,
        token=bench.cluster.credentials.token,
        ca=None if bench.cluster.security.ca_path is None else str(bench.cluster.security.ca_path),
    )
    async with open_client(addresses, opts, lazy=True) as client:
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S * len(addresses) + 5):
                await client.connection()
        except (ClientError, trio.TooSlowError) as e:
            raise BenchFailed(f"{phase}: p2plog.Client could not connect: {e!r}") from e
        ids = IdPool()  # one pool for all tasks (a trio thread: no races), filled ahead
        ids.fill()
        meter = Meter(bench.cluster)
        with trio.fail_after(_load_bound_s(bench)):
            async with trio.open_nursery() as workers:
                for _ in range(spec.inflight):
                    workers.start_soon(
                        client_submitter, bench, client, spec, meter.t0 + bench.seconds, st, ids
                    )
        elapsed, cores = meter.stop()
        stats = client.statistics()
    extra = {
        "client_options": {"linger_ms": opts.linger_ms, "frame_records": opts.frame_records},
        "client_stats": asdict(stats),
        "records_per_frame": round(stats.records_sent / stats.frames_sent, 1)
        if stats.frames_sent
        else None,
    }
    if stats.retries or stats.failovers or stats.connects != 1:
        bench.anomaly(
            phase,
            f"the client retried {stats.retries}x, failed over {stats.failovers}x, "
            f"connected {stats.connects}x",
        )
    return elapsed, cores, extra


Driver = Callable[
    [Bench, LoadSpec, str, list[str], LoadStats, str],
    Awaitable[tuple[float, dict[str, float | None], dict[str, Any]]],
]


def driver_of(spec: LoadSpec) -> Driver:
    """The load driver of a shape: (bench, spec, target, addresses, stats, phase) -> (elapsed
    s, cores, extra result fields)."""
    if spec.driver == "raw":
        return drive_raw
    if spec.driver == "client":
        return drive_client
    from bench_ingest import Ingest  # lazily: it takes Meter & co from here (no import cycle)

    ingest = Ingest(Meter, _load_bound_s, MAX_RETRY_SLEEP_S)
    return {"otlp": ingest.drive_otlp, "loki": ingest.drive_loki}[spec.driver]


def by_role(values: dict[str, Any], leader: str, f1: str, f2: str) -> tuple[Any, Any, Any]:
    return values.get(leader), values.get(f1), values.get(f2)


def _ratio(num: float | None, den: float | None, nd: int = 5) -> float | None:
    if num is None or not den:
        return None
    return round(num / den, nd)


async def run_load(bench: Bench, spec: LoadSpec, phase: str | None = None) -> dict[str, Any]:
    cluster = bench.cluster
    phase = phase or spec.name
    leader, term, _ = await wait_leader(cluster)
    followers = sorted(n for n in cluster.nodes if n != leader)
    target = leader if spec.via == "leader" else followers[0]
    f1, f2 = followers if target == leader else (target, followers[1])
    # the target first; the client fails over to the others in this order
    order = [target, *[n for n in (leader, f1, f2) if n != target]]
    addresses = [f"{HOST}:{cluster.port(n)}" for n in order]
    conns, inflight = (
        (spec.inflight, 1) if spec.driver in INGEST_DRIVERS else (spec.conns, spec.inflight)
    )
    progress(
        f"{phase}: {spec.driver}, {conns} conn(s) x {inflight} in flight, "
        f"{spec.frame_records} record(s)/submit, ack={spec.ack}, to {target} (leader {leader}) ..."
    )
    before = await wait_settled(bench, leader, phase)
    st = LoadStats()
    elapsed, cores, extra = await driver_of(spec)(bench, spec, target, addresses, st, phase)
    after = await wait_settled(bench, leader, phase)
    await bench.check_nodes(phase)

    fsyncs: dict[str, int | None] = {}
    records: dict[str, int | None] = {}
    per_record: dict[str, float | None] = {}
    dropped: dict[str, int | None] = {}
    for nid in cluster.nodes:
        b0, b1 = before.get(nid), after.get(nid)
        if b0 is None or b1 is None:
            fsyncs[nid] = records[nid] = per_record[nid] = dropped[nid] = None
            continue
        dropped[nid] = sum(v["dropped_frames"] for v in b1["peers"].values()) - sum(
            v["dropped_frames"] for v in b0["peers"].values()
        )
        nf = fsyncs[nid] = b1["fsyncs"] - b0["fsyncs"]
        nr = records[nid] = b1["records"] - b0["records"]
        per_record[nid] = round(nf / nr, 5) if nr else None
    lead_after = after.get(leader)
    term_after = lead_after["term"] if lead_after else None
    roles = {nid: (s["role"] if s else None) for nid, s in after.items()}
    mem = {nid: cluster.mem(nid) for nid in cluster.nodes}
    rss = {nid: round(m["VmRSS"] / 1024, 1) if "VmRSS" in m else None for nid, m in mem.items()}
    hwm = {nid: round(m["VmHWM"] / 1024, 1) if "VmHWM" in m else None for nid, m in mem.items()}
    lat = lat_ms(st.latencies_s)
    fol_fsyncs = [fsyncs[f] for f in (f1, f2)]
    fol_records = [records[f] for f in (f1, f2)]
    fol_rss = [x for x in by_role(rss, leader, f1, f2)[1:] if x is not None]
    fol_hwm = [x for x in by_role(hwm, leader, f1, f2)[1:] if x is not None]
    c_l, c_f1, c_f2 = by_role(cores, leader, f1, f2)
    figures: dict[str, float | None] = {
        "records_per_s": round(st.acked / elapsed, 1),
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "fsyncs_per_record_leader": per_record.get(leader),
        "fsyncs_per_record_followers": None
        if None in fol_fsyncs or None in fol_records
        else _ratio(sum(fol_fsyncs), sum(fol_records)),  # type: ignore[arg-type]
        "cores_leader": c_l,
        "cores_follower1": c_f1,
        "cores_follower2": c_f2,
        "cores_loadgen": cores["loadgen"],
        "cores_other": cores["other"],
        "build_cores": round(st.build_s / elapsed, 3),
        "rss_mib_leader": rss.get(leader),
        "rss_mib_followers": max(fol_rss) if fol_rss else None,
        "hwm_mib_leader": hwm.get(leader),
        "hwm_mib_followers": max(fol_hwm) if fol_hwm else None,
        "records_per_frame": extra.get("records_per_frame", float(spec.frame_records)),
    }
    result: dict[str, Any] = {
        **asdict(spec),
        "target": target,
        "leader": leader,
        "followers": [f1, f2],
        "seconds": round(elapsed, 3),
        "frames": st.frames,
        "records_sent": st.sent,
        "records_acked": st.acked,
        "records_per_s": figures["records_per_s"],
        "latency_ms": lat,
        "frame_latency_ms": lat,
        "stopped_by": "count" if st.stopped_by_count else "time",
        "error_replies": dict(st.errors),
        "record_errors": st.record_errors,
        "dup_acks": st.dups,
        "client_timeouts": st.client_timeouts,
        "conn_lost": st.conn_lost,
        "cpu_cores": cores,
        "fsyncs": fsyncs,
        "records_applied": records,
        "fsyncs_per_record": per_record,
        "node_fsync_ms": {
            nid: (v and {"p50": v["fsync_ms_p50"], "p99": v["fsync_ms_p99"]})
            for nid, v in after.items()
        },
        "rss_mib": rss,
        "hwm_mib": hwm,
        "peer_frames_dropped": dropped,
        "roles": roles,
        "term_before": term,
        "term_after": term_after,
        "figures": figures,
        **extra,
    }
    if st.errors or st.record_errors or st.client_timeouts or st.conn_lost:
        bench.anomaly(
            phase,
            f"error replies {dict(st.errors)}, record errors {st.record_errors}, client "
            f"timeouts {st.client_timeouts}, lost connections {st.conn_lost}",
            st.samples,
        )
    if st.dups:
        retries = (extra.get("client_stats") or {}).get("retries")
        why = f" (the client retried {retries}x: a retried record that was stored is acked dup)"
        bench.anomaly(
            phase, f"{st.dups} acks said dup=true for fresh uuid4 ids" + (why if retries else "")
        )
    if any(dropped.values()):
        bench.anomaly(phase, f"peer-link frames dropped (link queue full): {dropped}")
    if term_after != term or roles.get(leader) != "leader":
        bench.anomaly(
            phase,
            f"leadership changed during the run: {leader} led term {term} before, roles after "
            f"{roles}, term after {term_after}",
        )
    counts = bench.scan_logs(phase)
    result["log_warnings"] = dict(counts)
    progress(
        f"  {figures['records_per_s']:,.0f} records/s, ack p50 {lat['p50']} ms p99 "
        f"{lat['p99']} ms, {figures['records_per_frame']} records/frame, cores {cores}"
    )
    return result


async def sanity_check(bench: Bench) -> dict[str, Any]:
    """One record to the leader, acked by quorum, read back from every node."""
    cluster = bench.cluster
    leader, _, _ = await wait_leader(cluster)
    async with trio.open_nursery() as nursery:
        conn = await Conn.connect(nursery, cluster.port(leader), "sanity")
        req = conn.next_req()
        frame = bench.factory.submit_frame(req, "quorum", 1)
        sent = cbor2.loads(frame)["records"][0]
        reply = await conn.call(req, frame, REQUEST_TIMEOUT_S)
        await conn.aclose()
        nursery.cancel_scope.cancel()
    if reply.get("kind") != "ack" or len(reply["acks"]) != 1 or reply["errors"]:
        raise BenchFailed(f"sanity submit to the leader {leader} got {reply!r}")
    index = reply["acks"][0]["index"]
    await wait_settled(bench, leader, "sanity")
    for nid in cluster.nodes:
        async with trio.open_nursery() as nursery:
            conn = await Conn.connect(nursery, cluster.port(nid), f"sanity-{nid}")
            req = conn.next_req()
            q = encode_msg("query", {"req": req, "from_index": index, "to_index": index})
            got = await conn.call(req, q, REQUEST_TIMEOUT_S)
            await conn.aclose()
            nursery.cancel_scope.cancel()
        rows = got.get("records") or []
        ok = (
            got.get("kind") == "batch"
            and len(rows) == 1
            and rows[0]["msg"] == sent["msg"]
            and rows[0]["id"] == str(uuid.UUID(bytes=sent["id"]))
            and rows[0]["ts"] == sent["ts"]
            and rows[0]["fields"] == sent["fields"]
        )
        if not ok:
            raise BenchFailed(f"sanity: record {index} read back from {nid} as {got!r}"[:800])
    return {"index": index, "leader": leader}


# ---------------------------------------------------------------------------- failover


@dataclass
class FailoverState:
    old_term: int
    t_kill: float | None = None
    first_new: float | None = None
    new_term: int | None = None
    via: str | None = None
    outstanding: int = 0
    pre_ok: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)
    errors_after_kill: Counter[str] = field(default_factory=Counter)
    errors_before_kill: Counter[str] = field(default_factory=Counter)
    timeouts_after_kill: int = 0
    timeouts_before_kill: int = 0
    writes: int = 0
    conn_lost: list[str] = field(default_factory=list)


async def failover_write(bench: Bench, conn: Conn, fs: FailoverState) -> None:
    req = conn.next_req()
    frame = bench.factory.submit_frame(req, "quorum", 1)
    sent_before_kill = fs.t_kill is None
    fs.outstanding += 1
    fs.writes += 1
    try:
        reply = await conn.call(req, frame, FAILOVER_REQUEST_TIMEOUT_S)
    except trio.TooSlowError:
        if sent_before_kill:
            fs.timeouts_before_kill += 1
        else:
            fs.timeouts_after_kill += 1
        return
    except ConnLost as e:
        fs.conn_lost.append(str(e))
        return
    finally:
        fs.outstanding -= 1
    now = trio.current_time()
    if reply.get("kind") == "ack" and reply["acks"]:
        term = reply["acks"][0]["term"]
        if term <= fs.old_term:
            fs.pre_ok.set()
        elif fs.t_kill is not None and fs.first_new is None:
            fs.first_new = now
            fs.new_term = term
            fs.via = conn.name
            fs.done.set()
        return
    if reply.get("errors"):
        code = "record error"
    else:
        # the message says why: no leader known, no link to the leader, leadership moved ...
        msg = re.sub(r"\bn\d+\b", "nX", str(reply.get("msg", "")))[:60]
        code = f"{reply.get('code', reply.get('kind', '?'))}: {msg}"
    if fs.t_kill is None:
        fs.errors_before_kill[str(code)] += 1
    else:
        fs.errors_after_kill[str(code)] += 1


async def failover_writer(bench: Bench, conn: Conn, fs: FailoverState) -> None:
    """A new single-record submit every FAILOVER_PACE_S (bounded outstanding and count)."""
    async with trio.open_nursery() as nursery:
        for _ in range(FAILOVER_MAX_WRITES):
            if fs.done.is_set():
                break
            if fs.outstanding < FAILOVER_MAX_OUTSTANDING and conn.closed is None:
                nursery.start_soon(failover_write, bench, conn, fs)
            await trio.sleep(FAILOVER_PACE_S)
        nursery.cancel_scope.cancel()


async def wait_caught_up(bench: Bench, nid: str, timeout_s: float) -> float | None:
    """Seconds until the restarted ``nid`` applied the leader's commit index (None: timed out)."""
    t0 = trio.current_time()
    while trio.current_time() - t0 < timeout_s:
        st = await all_status(bench.cluster)
        me = st.get(nid)
        if me is not None and me["leader"] is not None:
            lead = st.get(me["leader"])
            if lead is not None and me["applied_index"] >= lead["commit_index"]:
                return trio.current_time() - t0
        await trio.sleep(POLL_S * 2)
    return None


async def one_failover(bench: Bench, k: int) -> dict[str, Any]:
    cluster = bench.cluster
    phase = f"failover #{k}"
    leader, term, _ = await wait_leader(cluster)
    others = sorted(n for n in cluster.nodes if n != leader)
    fs = FailoverState(term)
    out: dict[str, Any] = {"kill": k, "old_leader": leader, "old_term": term}
    # Peer links are one-way (each node sends on the link it dialed); a link that is down at
    # the kill delays the election, so say which ones were (from every node's status).
    pre = await all_status(cluster)
    out["links_down_at_kill"] = sorted(
        f"{a}->{b}"
        for a, st in pre.items()
        if st is not None
        for b, pe in st["peers"].items()
        if not pe["connected"]
    )
    async with trio.open_nursery() as nursery:
        conns = [await Conn.connect(nursery, cluster.port(n), n) for n in others]
        async with trio.open_nursery() as writers:
            for c in conns:
                writers.start_soon(failover_writer, bench, c, fs)
            with trio.move_on_after(FAILOVER_PRE_WAIT_S):
                await fs.pre_ok.wait()
            if not fs.pre_ok.is_set():
                raise BenchFailed(
                    f"{phase}: no write through {others} was acked within "
                    f"{FAILOVER_PRE_WAIT_S:.0f} s before the kill (errors "
                    f"{dict(fs.errors_before_kill)}, timeouts {fs.timeouts_before_kill})"
                )
            cluster.kill(leader, signal.SIGKILL)
            fs.t_kill = trio.current_time()
            with trio.move_on_after(FAILOVER_WAIT_S):
                while not fs.done.is_set() and not cluster.dead():
                    with trio.move_on_after(POLL_S):
                        await fs.done.wait()
            fs.done.set()
            writers.cancel_scope.cancel()
        for c in conns:
            await c.aclose()
        nursery.cancel_scope.cancel()
    try:
        await cluster.wait_exit(leader, 5.0)
    except trio.TooSlowError:
        raise BenchFailed(f"{phase}: {leader} did not die within 5 s of SIGKILL") from None
    await bench.check_nodes(phase)
    if fs.first_new is None or fs.t_kill is None:
        out["failover_ms"] = None
        bench.anomaly(
            phase,
            f"no ack with a term above {term} within {FAILOVER_WAIT_S:.0f} s of killing "
            f"{leader} (errors after kill {dict(fs.errors_after_kill)}, timeouts "
            f"{fs.timeouts_after_kill})",
        )
    else:
        out["failover_ms"] = round((fs.first_new - fs.t_kill) * 1e3, 1)
    new_leader, new_term, _ = await wait_leader(cluster, exclude=leader)
    out.update(
        new_leader=new_leader,
        new_term=new_term,
        first_ack_term=fs.new_term,
        first_ack_via=fs.via,
        writes=fs.writes,
        errors_after_kill=dict(fs.errors_after_kill),
        timeouts_after_kill=fs.timeouts_after_kill,
    )
    if fs.errors_before_kill or fs.timeouts_before_kill or fs.conn_lost:
        bench.anomaly(
            phase,
            f"writes through followers failed before the kill: errors "
            f"{dict(fs.errors_before_kill)}, timeouts {fs.timeouts_before_kill}, lost "
            f"connections {fs.conn_lost[:3]}",
        )
    t_restart = trio.current_time()
    await cluster.start(leader)
    caught = await wait_caught_up(bench, leader, CATCH_UP_WAIT_S)
    out["restart_catch_up_s"] = (
        None if caught is None else round(trio.current_time() - t_restart, 2)
    )
    if caught is None:
        raise BenchFailed(
            f"{phase}: restarted {leader} did not catch up within {CATCH_UP_WAIT_S:.0f} s"
        )
    await bench.check_nodes(phase)
    lines: list[str] = []
    counts = bench.scan_logs(phase, expect_warnings=True, keep=lines)
    out["log_warnings"] = dict(counts)
    slow_ms = 4 * 2 * ClusterConfig().election_ticks * cluster.tick_ms  # 4 x max timeout
    if out["failover_ms"] is not None and out["failover_ms"] > slow_ms:
        # what the nodes said: elections, role changes, links; sorted by timestamp
        excerpt = sorted(
            (ln for ln in lines if re.search(r"role |became|link|campaign|vote|WARNING", ln)),
            key=lambda ln: ln.split(": ", 1)[1],
        )
        out["log_excerpt"] = excerpt[:60]
        bench.anomaly(
            phase,
            f"slow failover: {out['failover_ms']} ms (> {slow_ms} ms = 4 x the longest election "
            f"timeout); peer links down just before the kill: {out['links_down_at_kill']}; "
            f"replies after the kill: {dict(fs.errors_after_kill)}",
            excerpt,
        )
    progress(
        f"{phase}: killed {leader} (term {term}); first new-term ack after "
        f"{out['failover_ms']} ms via {fs.via} (new leader {new_leader}, term {new_term}); "
        f"errors after kill {dict(fs.errors_after_kill)}, timeouts {fs.timeouts_after_kill}; "
        f"restart + catch-up {out['restart_catch_up_s']} s"
    )
    return out


def summarize_failover(fo: dict[str, Any]) -> None:
    runs = fo["runs"]
    times = sorted(r["failover_ms"] for r in runs if r["failover_ms"] is not None)
    catch = sorted(r["restart_catch_up_s"] for r in runs if r.get("restart_catch_up_s"))
    fo["measured"] = len(times)
    fo["failover_ms"] = {
        "p50": pct(times, 0.5) if times else None,
        "p99": pct(times, 0.99) if times else None,
        "max": times[-1] if times else None,
        "min": times[0] if times else None,
    }
    down = [r for r in runs if r.get("links_down_at_kill")]
    fo["kills_with_links_down"] = len(down)
    fo["failover_ms_all_links_up"] = sorted(
        r["failover_ms"] for r in runs if not r.get("links_down_at_kill") and r["failover_ms"]
    )
    fo["failover_ms_links_down"] = sorted(r["failover_ms"] for r in down if r["failover_ms"])
    fo["restart_catch_up_s"] = {
        "p50": pct(catch, 0.5) if catch else None,
        "max": catch[-1] if catch else None,
    }


# ---------------------------------------------------------------------------- the whole run


def resources(cluster: ProcCluster) -> dict[str, Any]:
    return {
        nid: {
            "pid": cluster.pid(nid),
            "starts": cluster.nodes[nid].starts,
            "rss_mib": round(m.get("VmRSS", 0) / 1024, 1) if m else None,
            "hwm_mib": round(m.get("VmHWM", 0) / 1024, 1) if m else None,
            "cpu_s_all_incarnations": round(cluster.cpu_s(nid), 2),
        }
        for nid in cluster.nodes
        for m in [cluster.mem(nid)]
    }


STATUS_KEYS = (
    "role",
    "term",
    "leader",
    "commit_index",
    "applied_index",
    "last_index",
    "records",
    "record_index",
    "fsyncs",
    "log_bytes",
    "fsync_ms_p50",
    "fsync_ms_p99",
)
MAX_FAILED_RUNS = 3  # then the remaining runs are skipped (the code under test is broken)
RUN_OVERHEAD_S = 4.0  # start, elect, sanity, settle, stop: for the time estimate only

Body = Callable[[Bench, dict[str, Any]], Awaitable[None]]


async def cluster_main(bench: Bench, body: Body, out: dict[str, Any]) -> None:
    """Start the nodes of ``bench.cluster``, check them, run ``body`` (it fills ``out``)."""
    cluster = bench.cluster
    t_start = trio.current_time()
    await cluster.start_all()
    leader, term, _ = await wait_leader(cluster)
    out["start_s"] = round(trio.current_time() - t_start, 2)
    progress(f"cluster up: leader {leader} term {term} after {out['start_s']:.2f} s")
    await bench.check_nodes("start-up")
    bench.scan_logs("start-up")
    out["sanity"] = await sanity_check(bench)
    await body(bench, out)
    out["final_status"] = {
        k: v and {x: v.get(x) for x in STATUS_KEYS} for k, v in (await all_status(cluster)).items()
    }
    out["resources"] = resources(cluster)


def fresh_cluster_run(
    bench: Bench,
    a: argparse.Namespace,
    label: str,
    body: Body,
    secure: bool = False,
    http: bool = False,
) -> dict[str, Any]:
    """One run on a FRESH cluster (own work directory, ports, data): start, ``body``, stop by
    pid, remove the directory. A failure of the run is recorded in ``out["failure"]`` and in
    ``bench.failures``; only an interrupt (Ctrl-C, SIGTERM) propagates, after the clean-up."""
    root = Path(tempfile.mkdtemp(prefix=".bench-", dir=REPO)).resolve()
    out: dict[str, Any] = {"label": label}
    cluster: ProcCluster | None = None
    try:
        cluster = bench.cluster = new_cluster(
            root, a.tick_ms, a.node_log_level, secure=secure, http=http
        )
        ports = [n.port for n in cluster.nodes.values()]
        progress(f"=== {label}: work directory {root}; ports {ports}")
        trio.run(cluster_main, bench, body, out)
    except BaseException as e:
        errors = list(leaves(e))
        if any(isinstance(x, KeyboardInterrupt) for x in errors):
            progress(f"interrupted during {label}; stopping the nodes")
            raise KeyboardInterrupt(label) from e  # unwrapped from trio's exception group
        msgs = [
            str(x) if isinstance(x, BenchFailed) else "".join(traceback.format_exception(x))
            for x in errors
        ]
        out["failure"] = "\n".join(m.rstrip() for m in msgs)
        bench.failures.append(f"{label}: {out['failure']}")
        progress(f"RUN FAILED ({label}): {out['failure']}")
        if cluster is not None:
            progress(cluster.log_tails(60))
    finally:
        try:
            if cluster is not None:
                bench.our_pids |= cluster.all_pids()
                out.setdefault("resources", resources(cluster))
                out["shutdown"] = shutdown = stop_cluster(cluster)  # SIGKILLs on an interrupt too
                bad = {k: v for k, v in shutdown.items() if v.get("exit_code") != 0}
                if bad:
                    progress(f"!!! nodes did not stop cleanly on SIGTERM: {bad}")
                    progress(cluster.log_tails(60))
                    bench.anomalies.append(
                        {"phase": f"{label}: shutdown", "what": f"unclean stop: {bad}", "lines": []}
                    )
        finally:
            if a.keep:
                progress(f"work directory kept: {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)
    return out


def run_shapes(bench: Bench, a: argparse.Namespace, shapes: list[LoadSpec]) -> None:
    """``a.runs`` runs of every shape, each on a fresh cluster, interleaved by run."""
    loads: list[dict[str, Any]] = bench.results.setdefault("loads", [])
    plan = [(r, spec) for r in range(a.runs) for spec in shapes]
    for i, (r, spec) in enumerate(plan):
        if len(bench.failures) >= MAX_FAILED_RUNS:
            progress(f"{len(bench.failures)} runs failed: skipping the remaining runs")
            break
        label = f"{spec.key} run {r + 1}/{a.runs}"

        async def body(
            b: Bench, out: dict[str, Any], spec: LoadSpec = spec, lb: str = label
        ) -> None:
            if not spec.scrape:
                out["load"] = await run_load(b, spec, lb)
                return
            scrapes: list[float] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(scrape_metrics, b.cluster, scrapes)
                out["load"] = await run_load(b, spec, lb)
                nursery.cancel_scope.cancel()
            out["load"]["scrapes"] = len(scrapes)
            out["load"]["scrape_ms_p50"] = (
                round(statistics.median(scrapes) * 1000, 2) if scrapes else None
            )

        out = fresh_cluster_run(
            bench, a, f"[{i + 1}/{len(plan)}] {label}", body, spec.secure, spec.http
        )
        load = out.get("load") or {**asdict(spec), "failed": out.get("failure") or "?"}
        load.update(
            shape=spec.key,
            run=r + 1,
            cluster_start_s=out.get("start_s"),
            shutdown=out.get("shutdown"),
        )
        loads.append(load)


async def scrape_metrics(cluster: ProcCluster, took: list[float]) -> None:
    """What a Prometheus server does: GET /metrics of every node once a second (bounded by
    the load it runs beside: cancelled when the load ends)."""
    while True:
        for port in cluster.http_ports.values():
            t0 = time.perf_counter()
            with trio.move_on_after(2.0):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(
                        b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
                    )
                    while await stream.receive_some(65536):
                        pass
                took.append(time.perf_counter() - t0)
        await trio.sleep(1.0)


def run_failover(bench: Bench, a: argparse.Namespace) -> None:
    """One series of ``a.kills`` leader kills on one fresh cluster."""
    fo: dict[str, Any] = {"kills": a.kills, "runs": []}
    bench.results["failover"] = fo

    async def body(b: Bench, out: dict[str, Any]) -> None:
        for k in range(a.kills):
            fo["runs"].append(await one_failover(b, k + 1))

    out = fresh_cluster_run(bench, a, f"failover, {a.kills} kills", body)
    fo["resources_end"] = out.get("resources")
    fo["shutdown"] = out.get("shutdown")
    if out.get("failure"):
        fo["failure"] = out["failure"]
    summarize_failover(fo)


def run_compare(bench: Bench, a: argparse.Namespace) -> dict[str, Any]:
    """etcd's figures from ``scripts/bench_etcd.py`` (``available: False`` and why if not)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    try:
        from bench_etcd import etcd_compare  # type: ignore[import-not-found,unused-ignore]
    except Exception as e:
        return {"available": False, "reason": f"cannot import scripts/bench_etcd.py: {e!r}"}
    work = Path(tempfile.mkdtemp(prefix=".bench-etcd-", dir=REPO)).resolve()
    try:
        got: dict[str, Any] = etcd_compare(
            seconds=a.seconds, runs=a.runs, work_root=work, progress=progress
        )
    except Exception as e:
        progress("etcd comparison failed:\n" + "".join(traceback.format_exception(e)))
        return {"available": False, "reason": f"etcd_compare raised {e!r}"}
    finally:
        if a.keep:
            progress(f"etcd work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return got


# ---------------------------------------------------------------------------- aggregates

FIGURES = (
    "records_per_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "records_per_frame",
    "fsyncs_per_record_leader",
    "fsyncs_per_record_followers",
    "cores_leader",
    "cores_follower1",
    "cores_follower2",
    "cores_loadgen",
    "build_cores",
    "cores_other",
    "node_cpu_us_per_record",
    "loadgen_cpu_us_per_record",
    "rss_mib_leader",
    "rss_mib_followers",
    "hwm_mib_leader",
    "hwm_mib_followers",
)


def run_errors(r: dict[str, Any]) -> int:
    n = sum(r["error_replies"].values())
    return int(n + r["record_errors"] + r["client_timeouts"] + r["conn_lost"])


def per_run_figures(r: dict[str, Any]) -> dict[str, float | None]:
    f = dict(r["figures"])
    f["errors"] = run_errors(r)
    rps = f["records_per_s"]
    vals = (f["cores_leader"], f["cores_follower1"], f["cores_follower2"])
    nodes = [x for x in vals if x is not None]
    f["node_cpu_us_per_record"] = (
        round(sum(nodes) / rps * 1e6, 2) if rps and len(nodes) == len(vals) else None
    )
    gen = f["cores_loadgen"]
    f["loadgen_cpu_us_per_record"] = round(gen / rps * 1e6, 2) if rps and gen is not None else None
    return f


def agg(values: list[float | None]) -> dict[str, Any] | None:
    """median/min/max over the runs that have the figure (``runs``: every run's value)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return {
        "median": round(statistics.median(xs), 6),
        "min": min(xs),
        "max": max(xs),
        "n": len(xs),
        "runs": values,
    }


def aggregate_shapes(loads: list[dict[str, Any]], shapes: list[LoadSpec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in shapes:
        runs = [r for r in loads if r.get("shape") == spec.key]
        ok = [r for r in runs if "figures" in r]
        figs = [per_run_figures(r) for r in ok]
        out[spec.key] = {
            "name": spec.name,
            "spec": asdict(spec),
            "runs_ok": len(ok),
            "runs_failed": len(runs) - len(ok),
            "per_run": figs,
            "figures": {k: agg([f.get(k) for f in figs]) for k in FIGURES},
        }
    return out


def etcd_aggregates(cmp: dict[str, Any]) -> dict[str, Any]:
    """Per etcd shape: median/min/max of records/s, p50, p99, errors, CPU cores, CPU us/write."""
    out: dict[str, Any] = {}
    for shape, runs in (cmp.get("shapes") or {}).items():
        rows = []
        for r in runs or []:
            cpu = r.get("cpu_s") or {}
            wall = r.get("wall_s") or 0.0
            members = [cpu.get(m) for m in ("etcd1", "etcd2", "etcd3")]
            rps = r.get("records_per_s")
            node_cpu = sum(members) if None not in members else None  # type: ignore[arg-type]
            rows.append(
                {
                    "records_per_s": rps,
                    "p50_ms": r.get("p50_ms"),
                    "p99_ms": r.get("p99_ms"),
                    "errors": r.get("errors"),
                    "node_cores": round(node_cpu / wall, 3) if node_cpu and wall else None,
                    "loadgen_cores": round(cpu["loadgen"] / wall, 3)
                    if cpu.get("loadgen") is not None and wall
                    else None,
                    "node_cpu_us_per_record": round(node_cpu / (rps * wall) * 1e6, 2)
                    if node_cpu and rps and wall
                    else None,
                }
            )
        out[shape] = {
            "runs_ok": len(rows),
            "figures": {k: agg([row[k] for row in rows]) for k in (rows[0] if rows else {})},
        }
    return out


def median_of(shapes: dict[str, Any], key: str, figure: str) -> float | None:
    a = ((shapes.get(key) or {}).get("figures") or {}).get(figure)
    return None if a is None else float(a["median"])


TARGETS = (
    # (what, shape key, figure, op, threshold, unit)
    (
        "Batched submission via p2plog.Client (1000/submit)",
        "client_batched",
        "records_per_s",
        ">=",
        200_000.0,
        "records/s",
    ),
    (
        "One record per submit, 256 in flight, one Client",
        "client_256",
        "records_per_s",
        ">=",
        30_000.0,
        "records/s",
    ),
    ("One in flight: ack p50, raw protocol", "raw_1", "p50_ms", "<=", 1.0, "ms"),
    ("One in flight: ack p99, raw protocol", "raw_1", "p99_ms", "<=", 3.0, "ms"),
    ("One in flight: ack p50, Client (default linger)", "client_1", "p50_ms", "<=", 1.0, "ms"),
    ("One in flight: ack p99, Client (default linger)", "client_1", "p99_ms", "<=", 3.0, "ms"),
    ("One in flight: ack p50, Client (linger 0)", "client_1_linger0", "p50_ms", "<=", 1.0, "ms"),
    ("One in flight: ack p99, Client (linger 0)", "client_1_linger0", "p99_ms", "<=", 3.0, "ms"),
)
FAILOVER_TARGET_MS = 600.0
FAILOVER_TARGET_KILLS = 50


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    shapes = report.get("shapes") or {}
    rows: list[dict[str, Any]] = []
    for what, key, fig, op, thr, unit in TARGETS:
        a = ((shapes.get(key) or {}).get("figures") or {}).get(fig)
        m = None if a is None else a["median"]
        met = None if m is None else (m >= thr if op == ">=" else m <= thr)
        rows.append(
            {
                "target": what,
                "shape": key,
                "figure": fig,
                "op": op,
                "threshold": thr,
                "unit": unit,
                "median": m,
                "min": a and a["min"],
                "max": a and a["max"],
                "met": met,
            }
        )
    fo = report.get("failover")
    p99 = (fo or {}).get("failover_ms", {}).get("p99")
    n = (fo or {}).get("measured", 0)
    note = None
    if fo and n < FAILOVER_TARGET_KILLS:
        note = f"{n} kills measured, the target says {FAILOVER_TARGET_KILLS}"
    rows.append(
        {
            "target": f"Leader kill -9 to first new commit: p99 over {n} kills",
            "shape": "failover",
            "figure": "failover_ms.p99",
            "op": "<",
            "threshold": FAILOVER_TARGET_MS,
            "unit": "ms",
            "median": p99,
            "min": None,
            "max": None,
            "met": None if p99 is None else p99 < FAILOVER_TARGET_MS,
            "note": note,
        }
    )
    for what, fig in (
        ("fsyncs/record at the batched rate, leader", "fsyncs_per_record_leader"),
        ("fsyncs/record at the batched rate, followers", "fsyncs_per_record_followers"),
        ("peak RSS at the batched rate, leader", "hwm_mib_leader"),
        ("peak RSS at the batched rate, followers (max)", "hwm_mib_followers"),
    ):
        a = ((shapes.get("client_batched") or {}).get("figures") or {}).get(fig)
        rows.append(
            {
                "target": what,
                "shape": "client_batched",
                "figure": fig,
                "op": "report",
                "threshold": None,
                "unit": "MiB" if "mib" in fig else "",
                "median": a and a["median"],
                "min": a and a["min"],
                "max": a and a["max"],
                "met": None,
            }
        )
    return rows


# ---------------------------------------------------------------------------- output


def mmm(a: dict[str, Any] | None, spec: str) -> str:
    """``median [min-max]`` of an aggregate (just the value for one run)."""
    if a is None:
        return "-"
    if a["n"] == 1 or a["min"] == a["max"]:
        return format(a["median"], spec)
    return f"{format(a['median'], spec)} [{format(a['min'], spec)}-{format(a['max'], spec)}]"


def _ratio_text(p: float | None, e: float | None) -> str:
    if p is None or not e:
        return "-"
    return f"{p / e:.2f}"


def print_table(report: dict[str, Any], out: Any) -> None:
    info = report["info"]

    def p(s: str = "") -> None:
        print(s, file=out)

    p(
        f"p2plog bench: 3 nodes on {HOST}, tick {info['tick_ms']} ms, election "
        f"{info['election_ticks']} ticks, heartbeat {info['heartbeat_ticks']} ticks; "
        f"{info['record_bytes']}-byte records; {info['runs']} run(s) x {info['seconds']:g} s per "
        f"shape, a fresh cluster per run; {info['cpus']} CPUs; Python {info['python']}; total "
        f"{info['total_s']:.0f} s"
    )
    g = info["git"]
    p(f"code: HEAD {g['head']}; uncommitted changes under p2plog/: {g['p2plog_changes'] or 'none'}")
    shapes: dict[str, Any] = report.get("shapes") or {}
    others = [
        f
        for s in shapes.values()
        for f in (s["figures"].get("cores_other") or {"runs": []})["runs"]
    ]
    others = [x for x in others if x is not None]
    if others and sum(others) / len(others) > 0.25:
        p(
            f"WARNING: the rest of the machine used {sum(others) / len(others):.2f} cores on "
            f"average during the runs (see 'other' and 'machine' below); the numbers are skewed"
        )
    rows = [(k, s) for k, s in shapes.items() if s["runs_ok"] or s["runs_failed"]]
    nw = max([34, *(len(s["name"]) for _, s in rows)])  # the shape column
    if rows:
        p()
        p(
            "THROUGHPUT AND ACK LATENCY, median [min-max] over the runs (latency: one raw frame "
            "or one Client.submit call, submit -> ack; rec/frame: as sent, after coalescing)"
        )
        hdr = (
            f"{'shape':{nw}} {'to':>2} {'rec/call':>8} {'in flight':>10} {'ack':>6} "
            f"{'records/s':>25} {'ack p50 ms':>22} {'ack p99 ms':>24} {'rec/frame':>9} "
            f"{'errors':>6} {'runs':>4}"
        )
        p(hdr)
        p("-" * len(hdr))
        for _key, s in rows:
            sp, f = s["spec"], s["figures"]
            infl = (
                f"{sp['inflight']} task" + ("s" if sp["inflight"] > 1 else "")
                if sp["driver"] == "client"
                else f"{sp['inflight']} conns"
                if sp["driver"] in INGEST_DRIVERS
                else f"{sp['conns']} x {sp['inflight']}"
            )
            runs = f"{s['runs_ok']}" + (f"+{s['runs_failed']}F" if s["runs_failed"] else "")
            errs = f["errors"]
            p(
                f"{s['name']:{nw}} {sp['via'][0].upper():>2} {sp['frame_records']:>8} {infl:>10} "
                f"{sp['ack']:>6} {mmm(f['records_per_s'], ',.0f'):>25} "
                f"{mmm(f['p50_ms'], '.2f'):>22} {mmm(f['p99_ms'], '.2f'):>24} "
                f"{fmt(f['records_per_frame'] and f['records_per_frame']['median'], '.0f'):>9} "
                f"{fmt(errs and sum(x or 0 for x in errs['runs'])):>6} {runs:>4}"
            )
        p()
        p(
            "FSYNCS PER RECORD (delta fsyncs / delta records from status) AND MEMORY (peak RSS, "
            "VmHWM, MiB, at the end of the run; followers: the larger)"
        )
        hdr = (
            f"{'shape':{nw}} {'fsyncs/rec leader':>26} {'fsyncs/rec followers':>26} "
            f"{'peak RSS leader':>17} {'peak RSS followers':>18}"
        )
        p(hdr)
        p("-" * len(hdr))
        for _key, s in rows:
            f = s["figures"]
            p(
                f"{s['name']:{nw}} {mmm(f['fsyncs_per_record_leader'], '.4f'):>26} "
                f"{mmm(f['fsyncs_per_record_followers'], '.4f'):>26} "
                f"{mmm(f['hwm_mib_leader'], '.0f'):>17} {mmm(f['hwm_mib_followers'], '.0f'):>18}"
            )
        p()
        p(
            "CPU CORES (CPU s / wall s over the timed window; follower1 = the one a via-follower "
            "shape talks to; loadgen = this process, 'build' its share building records; "
            "other = rest of the machine; us/rec = the 3 nodes' CPU per acked record)"
        )
        hdr = (
            f"{'shape':{nw}} {'leader':>17} {'follower1':>17} {'follower2':>17} {'loadgen':>17} "
            f"{'build':>5} {'other':>5} {'node us/rec':>19}"
        )
        p(hdr)
        p("-" * len(hdr))
        for _key, s in rows:
            f = s["figures"]
            p(
                f"{s['name']:{nw}} {mmm(f['cores_leader'], '.2f'):>17} "
                f"{mmm(f['cores_follower1'], '.2f'):>17} {mmm(f['cores_follower2'], '.2f'):>17} "
                f"{mmm(f['cores_loadgen'], '.2f'):>17} "
                f"{fmt(f['build_cores'] and f['build_cores']['median'], '.2f'):>5} "
                f"{fmt(f['cores_other'] and f['cores_other']['median'], '.2f'):>5} "
                f"{mmm(f['node_cpu_us_per_record'], '.0f'):>19}"
            )
    fo = report.get("failover")
    if fo and fo["runs"]:
        p()
        fm = fo["failover_ms"]
        p(
            f"FAILOVER (kill -9 leader -> first ack with a higher term), {fo['measured']}/"
            f"{fo['kills']} measured: p50 {fmt(fm['p50'])} ms, p99 {fmt(fm['p99'])} ms, max "
            f"{fmt(fm['max'])} ms, min {fmt(fm['min'])} ms; restart + catch-up p50 "
            f"{fmt(fo['restart_catch_up_s']['p50'])} s, "
            f"max {fmt(fo['restart_catch_up_s']['max'])} s"
        )
        up, dn = fo["failover_ms_all_links_up"], fo["failover_ms_links_down"]
        p(
            f"  all peer links up at the kill: {len(up)} kills, p50 "
            f"{fmt(pct(up, 0.5) if up else None)} ms, max {fmt(up[-1] if up else None)} ms; "
            f"a link down at the kill: {len(dn)} kills, p50 {fmt(pct(dn, 0.5) if dn else None)} "
            f"ms, max {fmt(dn[-1] if dn else None)} ms"
        )
        shown = [
            r
            for r in fo["runs"]
            if len(fo["runs"]) <= 20
            or r["failover_ms"] is None
            or r["failover_ms"] >= FAILOVER_TARGET_MS
        ]
        if len(shown) < len(fo["runs"]):
            p(f"  kills at or above {FAILOVER_TARGET_MS:.0f} ms (all {len(fo['runs'])} in JSON):")
        for r in shown:
            replies = {k.split(";")[0]: v for k, v in r["errors_after_kill"].items()}
            p(
                f"  #{r['kill']:<3} killed {r['old_leader']} (term {r['old_term']}) -> "
                f"{fmt(r['failover_ms'], '.1f'):>7} ms, new leader {r['new_leader']} term "
                f"{r['new_term']}, first ack via {r['first_ack_via']}; replies {replies}, "
                f"timeouts {r['timeouts_after_kill']}; catch-up {r['restart_catch_up_s']} s; "
                f"links down at kill: {r['links_down_at_kill'] or 'none'}"
            )
        for nid, e in (fo.get("resources_end") or {}).items():
            p(
                f"  {nid} at the end: RSS {fmt(e.get('rss_mib'))} MiB "
                f"(peak {fmt(e.get('hwm_mib'))}), started {fmt(e.get('starts'))}x, "
                f"CPU {fmt(e.get('cpu_s_all_incarnations'))} s"
            )
    p()
    p(f"load generator (this process): CPU {info['loadgen_cpu_s']:.2f} s in all")
    unclean = [
        f"{r['shape']} run {r['run']}: {k} exit {v.get('exit_code')}"
        for r in report.get("loads") or []
        for k, v in (r.get("shutdown") or {}).items()
        if v.get("exit_code") != 0
    ]
    stops = [
        v["stop_s"]
        for r in report.get("loads") or []
        for v in (r.get("shutdown") or {}).values()
        if "stop_s" in v
    ]
    p(
        f"shutdown (SIGTERM): {len(stops)} clean stops, max {fmt(max(stops) if stops else None)} s;"
        f" unclean: {unclean or 'none'}"
    )
    m = report.get("machine")
    if m:
        p(
            f"machine: load average {m['loadavg_before']} before, {m['loadavg_after']} after; "
            f"other processes using >= 1 CPU s during the bench: "
            f"{len(m['other_processes_cpu']) or 'none'}"
        )
        for o in m["other_processes_cpu"]:
            p(f"    pid {o['pid']}: {o['cpu_s']} s  {o['cmd']}")
    cmp = report.get("compare")
    if cmp is not None:
        print_compare(report, p)
    targets = report.get("targets") or []
    if targets:
        p()
        p(f"TARGETS (issue 7): p2plog's median [min-max] over {info['runs']} run(s)")
        hdr = f"{'target':52} {'threshold':>20} {'measured':>34}  result"
        p(hdr)
        p("-" * len(hdr))
        for t in targets:
            unit = f" {t['unit']}" if t["unit"] else ""
            spec = ",.0f" if t["unit"] == "records/s" else (".4f" if not t["unit"] else ".2f")
            thr = "-" if t["threshold"] is None else f"{t['op']} {t['threshold']:,g}{unit}"
            if t["median"] is None:
                meas = "not measured"
            elif t["min"] is None or t["min"] == t["max"]:
                meas = f"{t['median']:{spec}}{unit}"
            else:
                meas = f"{t['median']:{spec}} [{t['min']:{spec}}-{t['max']:{spec}}]{unit}"
            res = {True: "met", False: "NOT MET", None: "-"}[t["met"]]
            if t["op"] == "report" and t["median"] is not None:
                res = "(figure)"
            if t.get("note"):
                res += f" ({t['note']})"
            p(f"{t['target']:52} {thr:>20} {meas:>34}  {res}")
    anomalies = report.get("anomalies") or []
    for f in report.get("failure") or []:
        p()
        p("RUN FAILED: " + f.splitlines()[0])
        for line in f.splitlines()[1:12]:
            p(f"    {line}")
    p()
    p(f"ANOMALIES: {len(anomalies) or 'none'}")
    for a in anomalies:
        p(f"  [{a['phase']}] {a['what']}")
        for line in a["lines"][:5]:
            p(f"      {line}")


def print_compare(report: dict[str, Any], p: Callable[[str], None]) -> None:
    cmp = report["compare"]
    p("")
    if not cmp.get("available"):
        p(f"COMPARISON WITH ETCD: not available: {cmp.get('reason')}")
        return
    ea = cmp["aggregates"]
    shapes = report.get("shapes") or {}

    def pf(key: str, fig: str) -> dict[str, Any] | None:
        a: dict[str, Any] | None = ((shapes.get(key) or {}).get("figures") or {}).get(fig)
        return a

    def ef(shape: str, fig: str) -> dict[str, Any] | None:
        a: dict[str, Any] | None = ((ea.get(shape) or {}).get("figures") or {}).get(fig)
        return a

    measured = [k for k, s in shapes.items() if s["figures"].get("records_per_s")]
    best_p = max(
        measured, key=lambda k: shapes[k]["figures"]["records_per_s"]["median"], default=""
    )
    e_max = [s for s in ("conns_256", "conns_1024") if ef(s, "records_per_s")]
    best_e = max(e_max, key=lambda s: ef(s, "records_per_s")["median"], default="")  # type: ignore[index]
    rows = [
        ("ack p50 ms, 1 in flight (raw protocol)", "raw_1", "p50_ms", "one_in_flight", "p50_ms"),
        ("ack p99 ms, 1 in flight (raw protocol)", "raw_1", "p99_ms", "one_in_flight", "p99_ms"),
        (
            "ack p50 ms, 1 in flight (Client, linger 2)",
            "client_1",
            "p50_ms",
            "one_in_flight",
            "p50_ms",
        ),
        (
            "ack p99 ms, 1 in flight (Client, linger 2)",
            "client_1",
            "p99_ms",
            "one_in_flight",
            "p99_ms",
        ),
        (
            "ack p50 ms, 1 in flight (Client, linger 0)",
            "client_1_linger0",
            "p50_ms",
            "one_in_flight",
            "p50_ms",
        ),
        ("records/s, 1 in flight", "raw_1", "records_per_s", "one_in_flight", "records_per_s"),
        (
            "records/s, 1 per request, 256 in flight",
            "client_256",
            "records_per_s",
            "conns_256",
            "records_per_s",
        ),
        ("max writes/s", best_p, "records_per_s", best_e, "records_per_s"),
        (
            "node CPU us per write at max writes/s",
            best_p,
            "node_cpu_us_per_record",
            best_e,
            "node_cpu_us_per_record",
        ),
        ("errors at max writes/s (sum over runs)", best_p, "errors", best_e, "errors"),
    ]
    p(
        f"P2PLOG vs ETCD {cmp.get('version') or '?'} (same machine; median [min-max]; ratio = "
        f"p2plog median / etcd median; latency and CPU: lower is better, writes/s: higher)"
    )
    hdr = f"{'figure':44} {'p2plog':>26} {'(shape)':>16} {'etcd':>26} {'(shape)':>13} {'ratio':>6}"
    p(hdr)
    p("-" * len(hdr))
    for what, pk, pfig, es, efig in rows:
        a, b = pf(pk, pfig), ef(es, efig)
        spec = ",.0f" if "records" in pfig or pfig == "errors" else ".2f"
        if pfig == "errors":
            pa = "-" if a is None else str(sum(x or 0 for x in a["runs"]))
            eb = "-" if b is None else str(sum(x or 0 for x in b["runs"]))
            ratio = "-"
        else:
            pa, eb = mmm(a, spec), mmm(b, spec)
            ratio = _ratio_text(a["median"] if a else None, b["median"] if b else None)
        p(f"{what:44} {pa:>26} {pk:>16} {eb:>26} {es:>13} {ratio:>6}")


# ---------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=None, help="runs per shape (default 3)")
    p.add_argument("--seconds", type=float, default=None, help="per run (default 5)")
    p.add_argument("--kills", type=int, default=None, help="leader kills (default 50)")
    p.add_argument(
        "--quick", action="store_true", help="smoke test: --runs 1 --seconds 2 --kills 5"
    )
    p.add_argument("--shapes", default="", help="comma-separated shape keys (default: all)")
    p.add_argument("--skip-failover", action="store_true", help="no kill -9 measurement")
    p.add_argument("--compare", action="store_true", help="then etcd (scripts/bench_etcd.py)")
    p.add_argument(
        "--max-records", type=int, default=3_000_000, help="record cap per run (default 3M)"
    )
    p.add_argument("--tick-ms", type=int, default=20, help="[cluster] tick_ms (default 20)")
    p.add_argument("--node-log-level", default="INFO", help="the nodes' --log-level (INFO)")
    p.add_argument("--keep", action="store_true", help="keep the work directories (data, logs)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = p.parse_args()
    quick = {"runs": 1, "seconds": 2.0, "kills": 5}
    full = {"runs": 3, "seconds": 5.0, "kills": FAILOVER_TARGET_KILLS}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.runs < 1 or a.seconds <= 0 or a.kills < 0 or a.max_records < 1000 or a.tick_ms < 1:
        p.error("--runs >= 1, --seconds > 0, --kills >= 0, --max-records >= 1000, --tick-ms >= 1")
    keys = [k.strip() for k in a.shapes.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SHAPE_KEYS]
    if unknown:
        p.error(f"unknown shape(s) {unknown}; known: {', '.join(SHAPE_KEYS)}")
    shapes = [SHAPE_KEYS[k] for k in keys] if keys else list(SHAPES)

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # a background job of a script
        signal.signal(signal.SIGINT, signal.default_int_handler)  # so trio installs its own
    signal.signal(signal.SIGTERM, raise_interrupt)
    git = git_state()
    factory = RecordFactory()
    factory.check()
    bench = Bench(factory, a.seconds, a.max_records)
    rc = 0
    t0 = time.monotonic()
    n_runs = a.runs * len(shapes)
    est = n_runs * (a.seconds + RUN_OVERHEAD_S)
    if not a.skip_failover:
        est += a.kills * 3.0
    progress(
        f"{n_runs} runs ({len(shapes)} shapes x {a.runs}), each on a fresh cluster"
        + ("" if a.skip_failover else f", then {a.kills} leader kills")
        + f": about {est / 60:.0f} min"
        + (" + etcd" if a.compare else "")
    )
    try:
        run_shapes(bench, a, shapes)
        if not a.skip_failover and a.kills > 0 and len(bench.failures) < MAX_FAILED_RUNS:
            run_failover(bench, a)
        bench.results["machine"] = bench.machine()
        if a.compare:
            cmp = run_compare(bench, a)
            if cmp.get("available"):
                cmp["aggregates"] = etcd_aggregates(cmp)
            else:
                progress(f"etcd comparison not available: {cmp.get('reason')}")
            bench.results["compare"] = cmp
    except KeyboardInterrupt:
        progress("interrupted: what was measured so far follows")
        rc = 130
    if bench.failures and rc == 0:
        rc = 1
    if "failover" in bench.results and "failover_ms" not in bench.results["failover"]:
        summarize_failover(bench.results["failover"])
    d = ClusterConfig()
    report: dict[str, Any] = {
        "info": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "runs": a.runs,
            "seconds": a.seconds,
            "kills": 0 if a.skip_failover else a.kills,
            "shapes": [s.key for s in shapes],
            "max_records": a.max_records,
            "tick_ms": a.tick_ms,
            "election_ticks": d.election_ticks,
            "heartbeat_ticks": d.heartbeat_ticks,
            "record_bytes": factory.record_bytes,
            "total_s": round(time.monotonic() - t0, 1),
            "loadgen_cpu_s": round(time.process_time(), 2),
            "git": git,
            "interrupted": rc == 130,
        },
        **bench.results,
        "shapes": aggregate_shapes(bench.results.get("loads") or [], shapes),
        "anomalies": bench.anomalies,
        "failure": bench.failures,
    }
    report["targets"] = evaluate_targets(report)
    print_table(report, sys.stderr if a.json else sys.stdout)
    if a.json:
        print(json.dumps(report, indent=2, default=str))
    return rc


if __name__ == "__main__":
    sys.exit(main())
