"""End-to-end benchmark of a local 3-node p2plog cluster, through the client protocol.

    python scripts/bench.py                  # full: 3 runs x 13 shapes x 5 s + 50 kills, ~12 min
    python scripts/bench.py --quick --skip-failover     # smoke test: 1 run x 2 s per shape
    python scripts/bench.py --runs 3 --seconds 3 --kills 5
    python scripts/bench.py --compare        # then the same shapes on etcd (scripts/bench_etcd.py)
    python scripts/bench.py --shapes client_batched,raw_1 --runs 5   # only some shapes
    python scripts/bench.py --skip-failover --json     # one JSON object on stdout
    python scripts/bench.py --keep           # keep the work dirs (peers.toml, data, logs)
    python scripts/bench.py --node-log-level DEBUG --keep --skip-failover   # investigate

Every run of every shape starts a FRESH cluster: three ``python -m p2plog run --config
peers.toml --node nX`` subprocesses on 127.0.0.1 (free ports from binding port 0), with a
``peers.toml`` (``[cluster] tick_ms`` from ``--tick-ms``, election/heartbeat ticks = the defaults
of ``p2plog.config.ClusterConfig``) and data directories in a fresh work directory created next
to the repository (same filesystem as the repo; ``PYTHONPATH`` points at this checkout, so the
working tree's code is measured). Node stdout/stderr go to ``<work>/nX.log``. Runs are
interleaved (run 1 of every shape, then run 2 ...), so drift of the machine spreads over all
shapes; ``--runs N`` (default 3) runs per shape, and the tables give median [min-max] over them.

This process is the load generator, a process of its own (the nodes are separate processes),
with two drivers:

* ``raw``: a small raw-protocol client (trio-websocket + cbor2, many requests in flight per
  connection, replies matched by ``req``, every wait under ``trio.fail_after``). Frames are built
  from one pre-encoded record with a fresh uuid4 and the current ``ts`` spliced in (checked at
  start-up to decode to the intended map; a sanity record is read back from every node).
* ``client``: ``p2plog.open_client`` / ``Client.submit`` (lists, or one dict per call through the
  client's coalescing batcher). Records are dicts copied from one ~200-byte template with only
  ``id`` (16 random uuid4 bytes from a pool) and ``ts`` set fresh: the Client keeps ids it is
  given (it assigns a text uuid4 to a record without one). The time spent building them is
  measured (``build_cores``) so the generator's own share is known.

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
import contextlib
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cbor2
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
if str(REPO) not in sys.path:  # measure this checkout's p2plog, whatever is installed
    sys.path.insert(0, str(REPO))

from p2plog.client import (  # noqa: E402
    Client,
    ClientError,
    ClientOptions,
    RecordsRejected,
    SubmitError,
    open_client,
)
from p2plog.config import ClusterConfig  # noqa: E402
from p2plog.security import certs, tokens  # noqa: E402
from p2plog.security.tls import client_context  # noqa: E402
from p2plog.testing.ports import free_ports  # noqa: E402

NODE_IDS = ("n1", "n2", "n3")
HOST = "127.0.0.1"
PROTOCOL_VERSION = 1
RECORD_BYTES = 200

CONNECT_TIMEOUT_S = 5.0
STATUS_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 30.0  # the node answers `timeout` itself after 10 s
LEADER_WAIT_S = 20.0
SETTLE_WAIT_S = 15.0
CATCH_UP_WAIT_S = 90.0
STOP_WAIT_S = 15.0
MAX_RETRY_SLEEP_S = 1.0
MAX_CLIENT_MESSAGE = 16 << 20
RECEIVE_BUFFER = 64 << 10
POLL_S = 0.05

FAILOVER_PACE_S = 0.010
FAILOVER_REQUEST_TIMEOUT_S = 1.0
FAILOVER_MAX_OUTSTANDING = 200
FAILOVER_WAIT_S = 20.0
FAILOVER_PRE_WAIT_S = 10.0
FAILOVER_MAX_WRITES = 5000  # per writer and kill: 50 s at the pace above

LOG_MARKERS = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchFailed(Exception):
    """The cluster misbehaved so badly that the run cannot go on (the message says how)."""


class ConnLost(Exception):
    """The client websocket closed while a request was waiting."""


# ---------------------------------------------------------------------------- records


def _array_head(n: int) -> bytes:
    if n < 24:
        return bytes([0x80 + n])
    if n < 256:
        return bytes([0x98, n])
    assert n < 65536
    return b"\x99" + n.to_bytes(2, "big")


def _uuid4s(n: int) -> bytearray:
    """``n`` random version-4 UUIDs, 16 bytes each, back to back."""
    b = bytearray(os.urandom(16 * n))
    b[6::16] = bytes((x & 0x0F) | 0x40 for x in b[6::16])
    b[8::16] = bytes((x & 0x3F) | 0x80 for x in b[8::16])
    return b


class RecordFactory:
    """Builds ``submit`` frames of ~200-byte records with fresh ids, cheaply.

    One record is CBOR-encoded once with placeholder ``id`` and ``ts``; a frame splices a fresh
    uuid4 per record and the current time into copies of those bytes, and wraps them in the
    ``submit`` map by hand (a definite-length CBOR array of pre-encoded maps).
    """

    ID_MARK = bytes(range(0xA0, 0xB0))
    TS_MARK = 0x1122334455667788  # > 2**32, so encoded like a real ns timestamp: 0x1b + 8 bytes
    MSG_BASE = (
        "GET /api/v1/orders?customer=48213&page=3 -> 200 OK in 3.2 ms; upstream=orders-7f9c "
        "cache=miss bytes=18234 agent=curl/8.5.0 trace=9f2c1d7e4b3a5f60 "
    )

    def __init__(self, target_bytes: int = RECORD_BYTES) -> None:
        self.template = self._fit(target_bytes)
        enc = cbor2.dumps(self.template)
        id_at = enc.index(b"\x50" + self.ID_MARK) + 1
        ts_at = enc.index(b"\x1b" + self.TS_MARK.to_bytes(8, "big")) + 1
        assert enc.count(self.ID_MARK) == 1
        assert ts_at > id_at + 16, "the template's keys must put id before ts"
        self.encoded = enc
        self.record_bytes = len(enc)
        self._pre = enc[:id_at]
        self._mid = enc[id_at + 16 : ts_at]
        self._post = enc[ts_at + 8 :]
        self._records_key = cbor2.dumps("records")

    def _fit(self, target: int) -> dict[str, Any]:
        def rec(msg: str) -> dict[str, Any]:
            return {
                "id": self.ID_MARK,
                "ts": self.TS_MARK,
                "level": "info",
                "source": "bench/web-01",
                "msg": msg,
                "fields": {"host": "web-01", "status": 200},
            }

        text = self.MSG_BASE * 4
        n = 0
        while n < len(text) and len(cbor2.dumps(rec(text[: n + 1]))) <= target:
            n += 1
        return rec(text[:n])

    def records(self, n: int) -> bytes:
        """A CBOR array of ``n`` records with fresh uuid4 ids and ts = now."""
        head = self._pre
        tail = self._mid + time.time_ns().to_bytes(8, "big") + self._post
        ids = memoryview(_uuid4s(n))
        parts: list[bytes | memoryview] = [_array_head(n)]
        for i in range(0, 16 * n, 16):
            parts += (head, ids[i : i + 16], tail)
        return b"".join(parts)

    def submit_frame(self, req: int, ack: str, n: int) -> bytes:
        head = cbor2.dumps({"v": PROTOCOL_VERSION, "kind": "submit", "req": req, "ack": ack})
        assert head[0] == 0xA4  # a map of 4; make it 5 and append "records"
        return b"\xa5" + head[1:] + self._records_key + self.records(n)

    def check(self) -> None:
        """The spliced frame decodes to the intended map (asserts)."""
        msg = cbor2.loads(self.submit_frame(7, "quorum", 3))
        assert (msg["kind"], msg["req"], msg["ack"]) == ("submit", 7, "quorum"), msg
        recs = msg["records"]
        assert len(recs) == 3
        assert len({r["id"] for r in recs}) == 3
        for r in recs:
            assert set(r) == set(self.template), r
            assert len(r["id"]) == 16
            assert (r["id"][6] >> 4, r["id"][8] >> 6) == (4, 2)  # uuid4, RFC 4122 variant
            assert abs(r["ts"] - time.time_ns()) < 10**10
            assert r["msg"] == self.template["msg"]
            assert len(cbor2.dumps(r)) == self.record_bytes


def encode_msg(kind: str, fields: dict[str, Any]) -> bytes:
    return cbor2.dumps({**fields, "v": PROTOCOL_VERSION, "kind": kind})


# ---------------------------------------------------------------------------- client


class _Slot:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: dict[str, Any] | None = None


# Ports of the nodes of a TLS + token cluster (the *_secure shapes): how to reach them.
SECURE: dict[int, tuple[ssl.SSLContext, list[tuple[bytes, bytes]]]] = {}


class Conn:
    """One client websocket; any number of requests in flight, replies matched by ``req``."""

    def __init__(self, ws: WebSocketConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.closed: str | None = None
        self.unmatched = 0
        self._reqs = itertools.count(1)
        self._waiting: dict[int, _Slot] = {}

    @classmethod
    async def connect(
        cls, nursery: trio.Nursery, port: int, name: str, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> Conn:
        ctx, headers = SECURE.get(port, (None, []))
        with trio.fail_after(timeout_s):
            ws = await connect_websocket_url(
                nursery,
                f"{'wss' if ctx else 'ws'}://{HOST}:{port}/client",
                ssl_context=ctx,
                extra_headers=headers,
                max_message_size=MAX_CLIENT_MESSAGE,
                receive_buffer_size=RECEIVE_BUFFER,
            )
        conn = cls(ws, name)
        nursery.start_soon(conn._read)
        return conn

    def next_req(self) -> int:
        return next(self._reqs)

    async def call(self, req: int, frame: bytes, timeout_s: float) -> dict[str, Any]:
        """Send one request frame and wait for the reply carrying ``req``."""
        if self.closed is not None:
            raise ConnLost(f"{self.name}: {self.closed}")
        slot = _Slot()
        self._waiting[req] = slot
        try:
            with trio.fail_after(timeout_s):
                await self.ws.send_message(frame)
                await slot.done.wait()
        except ConnectionClosed as e:
            raise ConnLost(f"{self.name}: {e.reason}") from None
        finally:
            self._waiting.pop(req, None)
        if slot.reply is None:
            raise ConnLost(f"{self.name}: {self.closed}")
        return slot.reply

    async def status(self, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        req = self.next_req()
        reply = await self.call(req, encode_msg("status", {"req": req}), timeout_s)
        if reply.get("kind") != "status":
            raise BenchFailed(f"{self.name}: status request got {reply!r}")
        node: dict[str, Any] = reply["node"]
        return node

    async def aclose(self) -> None:
        with trio.move_on_after(1.0):
            await self.ws.aclose()

    async def _read(self) -> None:
        try:
            while True:
                raw = await self.ws.get_message()
                assert isinstance(raw, bytes), "p2plog replies are binary frames"
                self._deliver(cbor2.loads(raw))
        except ConnectionClosed as e:
            self.closed = f"closed: {e.reason}"
        finally:
            if self.closed is None:
                self.closed = "reader stopped"
            for slot in self._waiting.values():
                slot.done.set()

    def _deliver(self, msg: dict[str, Any]) -> None:
        """Hand one reply to the ``call`` waiting for its ``req``."""
        slot = self._waiting.pop(msg.get("req"), None)
        if slot is None:
            self.unmatched += 1  # a reply that arrived after its request timed out
            return
        slot.reply = msg
        slot.done.set()


async def fetch_status(port: int, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """One node's ``status``, or None if it cannot be reached in time."""
    result: dict[str, Any] | None = None
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(timeout_s):
                conn = await Conn.connect(nursery, port, f"status:{port}", timeout_s)
                try:
                    result = await conn.status(timeout_s)
                finally:
                    await conn.aclose()
        except (OSError, HandshakeError, ConnLost, ConnectionClosed, trio.TooSlowError):
            result = None
        nursery.cancel_scope.cancel()
    return result


# ---------------------------------------------------------------------------- cluster


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process, in seconds (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def system_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle+iowait)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return (sum(vals[:8]) - vals[3] - vals[4]) / CLK_TCK


def all_procs_cpu_s() -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds) of every process we can read."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        cpu = proc_cpu_s(pid)
        if cpu is None:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out[pid] = (cmd[:120] or f"[pid {pid}]", cpu)
    return out


def other_cpu(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int]
) -> list[dict[str, Any]]:
    """Processes not started by this bench that used >= 1 CPU second between two snapshots."""
    rows: list[dict[str, Any]] = []
    for pid, (cmd, cpu) in after.items():
        if pid in ours:
            continue
        used = cpu - before[pid][1] if pid in before else cpu
        if used >= 1.0:
            rows.append({"pid": pid, "cpu_s": round(used, 1), "cmd": cmd})
    return sorted(rows, key=lambda r: float(r["cpu_s"]), reverse=True)[:8]


def node_env() -> dict[str, str]:
    """The nodes' environment: ours, with this checkout first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class NodeProc:
    id: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    starts: int = 0
    cpu_earlier_s: float = 0.0  # CPU of earlier (killed) incarnations
    expect_down: bool = False
    log_pos: int = 0


class Cluster:
    """The node subprocesses of one bench run; every method is sync and quick."""

    def __init__(
        self, root: Path, tick_ms: int, log_level: str = "INFO", secure: bool = False
    ) -> None:
        self.root = root
        self.secure = secure
        self.token: str | None = None
        self.log_level = log_level
        self.defaults = ClusterConfig()
        self.tick_ms = tick_ms
        ports = free_ports(len(NODE_IDS))
        self.nodes = {
            nid: NodeProc(nid, port, root / f"{nid}.log")
            for nid, port in zip(NODE_IDS, ports, strict=True)
        }
        self.config_path = root / "peers.toml"
        lines = [
            "[cluster]",
            'name = "bench"',
            f"tick_ms = {tick_ms}",
            f"election_ticks = {self.defaults.election_ticks}",
            f"heartbeat_ticks = {self.defaults.heartbeat_ticks}",
        ]
        if secure:
            lines += [
                "[security]",
                'secret_file = "cluster.secret"',
                'tokens_file = "tokens.toml"',
                "[tls]",
                'ca = "ca.pem"',
                'cert = "{id}.pem"',
                'key = "{id}.key"',
            ]
        for n in self.nodes.values():
            lines += ["", "[[node]]", f'id = "{n.id}"', f'address = "{HOST}:{n.port}"']
            lines.append(f'data_dir = "data/{n.id}"')
        self.config_path.write_text("\n".join(lines) + "\n")
        if secure:
            self._make_security_files()

    def _make_security_files(self) -> None:
        """What ``python -m p2plog certs`` and ``token add`` make: a CA, node certificates, the
        cluster secret, one write+read token; clients reach the nodes with wss:// and it."""
        plans = [
            certs.NodePlan(n.id, (HOST,), self.root / f"{n.id}.pem", self.root / f"{n.id}.key")
            for n in self.nodes.values()
        ]
        ca = self.root / "ca.pem"
        certs.create_cluster_files(
            "bench", ca, self.root / "ca.key", plans, self.root / "cluster.secret"
        )
        self.token = tokens.add(self.root / "tokens.toml", "bench", "admin")
        ctx = client_context(ca)
        for n in self.nodes.values():
            SECURE[n.port] = (ctx, [(b"authorization", f"Bearer {self.token}".encode())])

    def port(self, nid: str) -> int:
        return self.nodes[nid].port

    def pid(self, nid: str) -> int | None:
        p = self.nodes[nid].proc
        return p.pid if p is not None else None

    def start(self, nid: str) -> None:
        n = self.nodes[nid]
        assert n.proc is None or self.poll(nid) is not None, f"{nid} is running"
        n.starts += 1
        with open(n.log_path, "ab") as log:
            log.write(f"===== bench: start #{n.starts} of {nid} at {time.ctime()} =====\n".encode())
            log.flush()
            n.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "p2plog",
                    "run",
                    "--config",
                    str(self.config_path),
                    "--node",
                    nid,
                    "--log-level",
                    self.log_level,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=node_env(),
                start_new_session=True,  # Ctrl-C reaches only the bench; it stops the nodes
            )
        n.pids.append(n.proc.pid)
        n.expect_down = False

    def poll(self, nid: str) -> int | None:
        """The exit code if the current process of ``nid`` has exited (reaped here with
        ``wait4``, so its CPU time is kept even after a crash or kill -9), else None.

        Popen's own ``poll``/``wait`` are never used: they would reap without the rusage."""
        n = self.nodes[nid]
        p = n.proc
        if p is None or p.returncode is not None:
            return None if p is None else p.returncode
        try:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by the other thread a moment ago
            if p.returncode is None:
                p.returncode = -999
            return p.returncode
        if pid == 0:
            return None
        p.returncode = os.waitstatus_to_exitcode(status)
        n.cpu_earlier_s += ru.ru_utime + ru.ru_stime
        return p.returncode

    def running(self, nid: str) -> bool:
        return self.nodes[nid].proc is not None and self.poll(nid) is None

    def wait_exit(self, nid: str, timeout_s: float) -> int | None:
        """Block up to ``timeout_s`` for the node to exit; its exit code or None."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.poll(nid)
            if code is not None or time.monotonic() >= deadline:
                return code
            time.sleep(0.01)

    def kill9(self, nid: str) -> None:
        """SIGKILL now (the caller reaps with ``wait_exit``)."""
        n = self.nodes[nid]
        assert n.proc is not None
        n.expect_down = True
        os.kill(n.proc.pid, signal.SIGKILL)

    def cpu_s(self, nid: str) -> float:
        """CPU seconds of all incarnations of the node so far."""
        n = self.nodes[nid]
        now = proc_cpu_s(n.proc.pid) if n.proc is not None and self.running(nid) else None
        return n.cpu_earlier_s + (now or 0.0)

    def live_cpu_s(self) -> dict[str, float | None]:
        """CPU seconds of the current processes (for deltas over a run)."""
        return {
            nid: proc_cpu_s(n.proc.pid) if n.proc is not None else None
            for nid, n in self.nodes.items()
        }

    def all_pids(self) -> set[int]:
        return {pid for n in self.nodes.values() for pid in n.pids}

    def mem(self, nid: str) -> dict[str, int]:
        p = self.nodes[nid].proc
        return proc_mem_kib(p.pid) if p is not None and self.running(nid) else {}

    def dead(self) -> list[str]:
        """Nodes that exited without being told to."""
        out = []
        for nid, n in self.nodes.items():
            if n.proc is not None and not n.expect_down and self.poll(nid) is not None:
                out.append(f"{nid} (pid {n.proc.pid}) exited with code {n.proc.returncode}")
        return out

    def new_log_lines(self, nid: str) -> list[str]:
        n = self.nodes[nid]
        try:
            with open(n.log_path, "rb") as f:
                f.seek(n.log_pos)
                data = f.read()
        except OSError:
            return []
        n.log_pos += len(data)
        return data.decode(errors="replace").splitlines()

    def tails(self, lines: int = 30) -> str:
        out = []
        for nid, n in self.nodes.items():
            try:
                text = n.log_path.read_bytes().decode(errors="replace").splitlines()
            except OSError as e:
                text = [f"(cannot read {n.log_path}: {e})"]
            out.append(f"----- {nid} log ({n.log_path}), last {lines} lines -----")
            out += text[-lines:]
        return "\n".join(out)

    def stop_all(self) -> dict[str, dict[str, Any]]:
        """SIGTERM every running node, wait (bounded), SIGKILL the rest; per node what happened."""
        out: dict[str, dict[str, Any]] = {}
        running = [nid for nid in self.nodes if self.running(nid)]
        t0 = time.monotonic()
        for nid in running:
            self.nodes[nid].expect_down = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.nodes[nid].proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        try:
            for nid in running:
                code = self.wait_exit(nid, max(0.1, t0 + STOP_WAIT_S - time.monotonic()))
                if code is None:
                    out[nid] = {"exit_code": None, "killed": True}
                else:
                    out[nid] = {"exit_code": code, "stop_s": round(time.monotonic() - t0, 2)}
        finally:  # also on a second Ctrl-C: nothing we started outlives us
            for nid in running:
                if self.running(nid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.nodes[nid].proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
                    self.wait_exit(nid, 5.0)
        return out


# ---------------------------------------------------------------------------- bench state


@dataclass
class Bench:
    """State of the whole bench; ``cluster`` is the current run's (a fresh one per run)."""

    factory: RecordFactory
    seconds: float
    max_records: int
    cluster: Cluster = field(init=False)
    failures: list[str] = field(default_factory=list)  # one line per failed run
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    procs_at_start: dict[int, tuple[str, float]] = field(default_factory=all_procs_cpu_s)
    loadavg_at_start: tuple[float, float, float] = field(default_factory=os.getloadavg)
    our_pids: set[int] = field(default_factory=set)  # every node process of every run

    def machine(self) -> dict[str, Any]:
        """How busy the machine was with other work since the bench started."""
        current = getattr(self, "cluster", None)
        ours = {os.getpid(), *self.our_pids, *(current.all_pids() if current else ())}
        return {
            "loadavg_before": [round(x, 2) for x in self.loadavg_at_start],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "other_processes_cpu": other_cpu(self.procs_at_start, all_procs_cpu_s(), ours),
        }

    def anomaly(self, phase: str, what: str, lines: list[str] | None = None) -> None:
        self.anomalies.append({"phase": phase, "what": what, "lines": (lines or [])[:40]})
        progress(f"!!! ANOMALY in {phase}: {what}")
        for line in (lines or [])[:40]:
            progress(f"    {line}")
        progress(self.cluster.tails(25))

    async def check_nodes(self, phase: str) -> None:
        if self.cluster.dead():
            await trio.sleep(1.0)  # let a node that is crashing too finish, to name them all
            dead = self.cluster.dead()
            raise BenchFailed(f"during {phase}: node(s) died: {'; '.join(dead)}")

    def scan_logs(
        self, phase: str, *, expect_warnings: bool = False, keep: list[str] | None = None
    ) -> Counter[str]:
        """New WARNING+/Traceback lines in node logs since the last scan; anomalies unless
        ``expect_warnings`` (then only ERROR/CRITICAL/Traceback are). ``keep`` receives every
        new line, prefixed with the node id."""
        counts: Counter[str] = Counter()
        bad: list[str] = []
        for nid in self.cluster.nodes:
            for line in self.cluster.new_log_lines(nid):
                if keep is not None:
                    keep.append(f"{nid}: {line}")
                marker = next((m for m in LOG_MARKERS if m in line), None)
                if marker is None:
                    continue
                counts[marker.strip()] += 1
                if not expect_warnings or marker != " WARNING ":
                    bad.append(f"{nid}: {line}")
        if bad:
            self.anomaly(phase, f"{len(bad)} warning/error line(s) in node logs", bad)
        return counts


async def all_status(cluster: Cluster, nids: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def one(nid: str) -> None:
        out[nid] = await fetch_status(cluster.port(nid))

    async with trio.open_nursery() as nursery:
        for nid in nids or list(cluster.nodes):
            nursery.start_soon(one, nid)
    return out


async def wait_leader(
    cluster: Cluster, timeout_s: float = LEADER_WAIT_S, exclude: str | None = None
) -> tuple[str, int, dict[str, Any]]:
    """Wait until a majority agrees on one leader; (leader id, term, statuses)."""
    nids = [n for n in cluster.nodes if n != exclude]
    t0 = trio.current_time()
    last: dict[str, Any] = {}
    while trio.current_time() - t0 < timeout_s:
        last = await all_status(cluster, nids)
        leaders = [s for s in last.values() if s is not None and s["role"] == "leader"]
        if leaders:
            lead = max(leaders, key=lambda s: s["term"])
            agree = sum(
                1
                for s in last.values()
                if s is not None and s["leader"] == lead["id"] and s["term"] == lead["term"]
            )
            if agree * 2 > len(cluster.nodes):
                return lead["id"], lead["term"], last
        await trio.sleep(POLL_S)
    keys = ("role", "term", "leader", "commit_index")
    summary = {k: (v and {x: v[x] for x in keys}) for k, v in last.items()}
    raise BenchFailed(f"no leader agreed by a majority within {timeout_s:.0f} s; status: {summary}")


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
    inflight: int  # raw: frames in flight per connection; client: concurrent submit tasks
    ack: str = "quorum"
    key: str = ""
    driver: str = "raw"  # "raw" protocol or "client" (p2plog.Client)
    linger_ms: float | None = None  # client only: ClientOptions.linger_ms (None: the default)
    secure: bool = False  # TLS on every link, a cluster secret, a client token


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
    LoadSpec("raw: 1 in flight", "leader", 1, 1, 1, key="raw_1"),
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


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def lat_ms(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p99": None, "max": None}
    s = sorted(xs)
    return {
        "p50": round(pct(s, 0.5) * 1e3, 3),
        "p99": round(pct(s, 0.99) * 1e3, 3),
        "max": round(s[-1] * 1e3, 3),
    }


class Meter:
    """CPU of the nodes, of this process and of the machine, and wall time, over a window."""

    def __init__(self, cluster: Cluster) -> None:
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
        raw = bytes(_uuid4s(max(n, ID_POOL)))
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
        token=bench.cluster.token,
        ca=str(bench.cluster.root / "ca.pem") if bench.cluster.secure else None,
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
    progress(
        f"{phase}: {spec.driver}, {spec.conns} conn(s) x {spec.inflight} in flight, "
        f"{spec.frame_records} record(s)/submit, ack={spec.ack}, to {target} (leader {leader}) ..."
    )
    before = await wait_settled(bench, leader, phase)
    st = LoadStats()
    drive = drive_client if spec.driver == "client" else drive_raw
    elapsed, cores, extra = await drive(bench, spec, target, addresses, st, phase)
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
            cluster.kill9(leader)
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
    code = await trio.to_thread.run_sync(cluster.wait_exit, leader, 5.0)
    if code is None:
        raise BenchFailed(f"{phase}: {leader} did not die within 5 s of SIGKILL")
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
    cluster.start(leader)
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
    slow_ms = 4 * 2 * cluster.defaults.election_ticks * cluster.tick_ms  # 4 x max timeout
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


def resources(cluster: Cluster) -> dict[str, Any]:
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
    for nid in cluster.nodes:
        cluster.start(nid)
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
    bench: Bench, a: argparse.Namespace, label: str, body: Body, secure: bool = False
) -> dict[str, Any]:
    """One run on a FRESH cluster (own work directory, ports, data): start, ``body``, stop by
    pid, remove the directory. A failure of the run is recorded in ``out["failure"]`` and in
    ``bench.failures``; only an interrupt (Ctrl-C, SIGTERM) propagates, after the clean-up."""
    root = Path(tempfile.mkdtemp(prefix=".bench-", dir=REPO)).resolve()
    out: dict[str, Any] = {"label": label}
    cluster: Cluster | None = None
    try:
        cluster = bench.cluster = Cluster(root, a.tick_ms, a.node_log_level, secure)
        ports = [n.port for n in cluster.nodes.values()]
        progress(f"=== {label}: work directory {root}; ports {ports}")
        trio.run(cluster_main, bench, body, out)
    except BaseException as e:
        leaves = list(_leaves(e))
        if any(isinstance(x, KeyboardInterrupt) for x in leaves):
            progress(f"interrupted during {label}; stopping the nodes")
            raise KeyboardInterrupt(label) from e  # unwrapped from trio's exception group
        msgs = [
            str(x) if isinstance(x, BenchFailed) else "".join(traceback.format_exception(x))
            for x in leaves
        ]
        out["failure"] = "\n".join(m.rstrip() for m in msgs)
        bench.failures.append(f"{label}: {out['failure']}")
        progress(f"RUN FAILED ({label}): {out['failure']}")
        if cluster is not None:
            progress(cluster.tails(60))
    finally:
        try:
            if cluster is not None:
                bench.our_pids |= cluster.all_pids()
                out.setdefault("resources", resources(cluster))
                out["shutdown"] = shutdown = cluster.stop_all()  # SIGKILLs on an interrupt too
                bad = {k: v for k, v in shutdown.items() if v.get("exit_code") != 0}
                if bad:
                    progress(f"!!! nodes did not stop cleanly on SIGTERM: {bad}")
                    progress(cluster.tails(60))
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
            out["load"] = await run_load(b, spec, lb)

        out = fresh_cluster_run(bench, a, f"[{i + 1}/{len(plan)}] {label}", body, spec.secure)
        load = out.get("load") or {**asdict(spec), "failed": out.get("failure") or "?"}
        load.update(
            shape=spec.key,
            run=r + 1,
            cluster_start_s=out.get("start_s"),
            shutdown=out.get("shutdown"),
        )
        loads.append(load)


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


def _f(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


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
    if rows:
        p()
        p(
            "THROUGHPUT AND ACK LATENCY, median [min-max] over the runs (latency: one raw frame "
            "or one Client.submit call, submit -> ack; rec/frame: as sent, after coalescing)"
        )
        hdr = (
            f"{'shape':34} {'to':>2} {'rec/call':>8} {'in flight':>10} {'ack':>6} "
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
                else f"{sp['conns']} x {sp['inflight']}"
            )
            runs = f"{s['runs_ok']}" + (f"+{s['runs_failed']}F" if s["runs_failed"] else "")
            errs = f["errors"]
            p(
                f"{s['name']:34} {sp['via'][0].upper():>2} {sp['frame_records']:>8} {infl:>10} "
                f"{sp['ack']:>6} {mmm(f['records_per_s'], ',.0f'):>25} "
                f"{mmm(f['p50_ms'], '.2f'):>22} {mmm(f['p99_ms'], '.2f'):>24} "
                f"{_f(f['records_per_frame'] and f['records_per_frame']['median'], '.0f'):>9} "
                f"{_f(errs and sum(x or 0 for x in errs['runs'])):>6} {runs:>4}"
            )
        p()
        p(
            "FSYNCS PER RECORD (delta fsyncs / delta records from status) AND MEMORY (peak RSS, "
            "VmHWM, MiB, at the end of the run; followers: the larger)"
        )
        hdr = (
            f"{'shape':34} {'fsyncs/rec leader':>26} {'fsyncs/rec followers':>26} "
            f"{'peak RSS leader':>17} {'peak RSS followers':>18}"
        )
        p(hdr)
        p("-" * len(hdr))
        for _key, s in rows:
            f = s["figures"]
            p(
                f"{s['name']:34} {mmm(f['fsyncs_per_record_leader'], '.4f'):>26} "
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
            f"{'shape':34} {'leader':>17} {'follower1':>17} {'follower2':>17} {'loadgen':>17} "
            f"{'build':>5} {'other':>5} {'node us/rec':>19}"
        )
        p(hdr)
        p("-" * len(hdr))
        for _key, s in rows:
            f = s["figures"]
            p(
                f"{s['name']:34} {mmm(f['cores_leader'], '.2f'):>17} "
                f"{mmm(f['cores_follower1'], '.2f'):>17} {mmm(f['cores_follower2'], '.2f'):>17} "
                f"{mmm(f['cores_loadgen'], '.2f'):>17} "
                f"{_f(f['build_cores'] and f['build_cores']['median'], '.2f'):>5} "
                f"{_f(f['cores_other'] and f['cores_other']['median'], '.2f'):>5} "
                f"{mmm(f['node_cpu_us_per_record'], '.0f'):>19}"
            )
    fo = report.get("failover")
    if fo and fo["runs"]:
        p()
        fm = fo["failover_ms"]
        p(
            f"FAILOVER (kill -9 leader -> first ack with a higher term), {fo['measured']}/"
            f"{fo['kills']} measured: p50 {_f(fm['p50'])} ms, p99 {_f(fm['p99'])} ms, max "
            f"{_f(fm['max'])} ms, min {_f(fm['min'])} ms; restart + catch-up p50 "
            f"{_f(fo['restart_catch_up_s']['p50'])} s, max {_f(fo['restart_catch_up_s']['max'])} s"
        )
        up, dn = fo["failover_ms_all_links_up"], fo["failover_ms_links_down"]
        p(
            f"  all peer links up at the kill: {len(up)} kills, p50 "
            f"{_f(pct(up, 0.5) if up else None)} ms, max {_f(up[-1] if up else None)} ms; "
            f"a link down at the kill: {len(dn)} kills, p50 {_f(pct(dn, 0.5) if dn else None)} "
            f"ms, max {_f(dn[-1] if dn else None)} ms"
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
                f"{_f(r['failover_ms'], '.1f'):>7} ms, new leader {r['new_leader']} term "
                f"{r['new_term']}, first ack via {r['first_ack_via']}; replies {replies}, "
                f"timeouts {r['timeouts_after_kill']}; catch-up {r['restart_catch_up_s']} s; "
                f"links down at kill: {r['links_down_at_kill'] or 'none'}"
            )
        for nid, e in (fo.get("resources_end") or {}).items():
            p(
                f"  {nid} at the end: RSS {_f(e.get('rss_mib'))} MiB (peak {_f(e.get('hwm_mib'))}),"
                f" started {_f(e.get('starts'))}x, CPU {_f(e.get('cpu_s_all_incarnations'))} s"
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
        f"shutdown (SIGTERM): {len(stops)} clean stops, max {_f(max(stops) if stops else None)} s;"
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


def git_state() -> dict[str, Any]:
    """Which code was measured: HEAD and the files that differ from it under p2plog/."""

    def git(*argv: str) -> str:
        try:
            r = subprocess.run(
                ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return r.stdout.strip()

    dirty = git("status", "--porcelain", "--", "p2plog").splitlines()
    return {"head": git("rev-parse", "--short", "HEAD"), "p2plog_changes": dirty}


def _leaves(e: BaseException) -> Iterator[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        for x in e.exceptions:
            yield from _leaves(x)
    else:
        yield e


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM acts as Ctrl-C: through the SIGINT handler in place (inside ``trio.run`` trio's,
    which raises KeyboardInterrupt only where trio's internals can take it)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _raise_interrupt:
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt(f"signal {signum}")


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
    signal.signal(signal.SIGTERM, _raise_interrupt)
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
