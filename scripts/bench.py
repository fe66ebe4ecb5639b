"""End-to-end benchmark of a local 3-node p2plog cluster, through the client protocol.

    python scripts/bench.py                            # full run: ~3 min (20 leader kills)
    python scripts/bench.py --seconds 2 --kills 5      # quicker
    python scripts/bench.py --skip-failover --json     # throughput only; one JSON object on stdout
    python scripts/bench.py --keep                     # keep the work dir (peers.toml, data, logs)
    python scripts/bench.py --node-log-level DEBUG --keep --skip-failover   # investigate

Each run starts a FRESH cluster: three ``python -m p2plog run --config peers.toml --node nX``
subprocesses on 127.0.0.1 (free ports from binding port 0), with a ``peers.toml``
(``[cluster] tick_ms`` from ``--tick-ms``, election/heartbeat ticks = the defaults of
``p2plog.config.ClusterConfig``) and data directories in a fresh work directory created next to
the repository (same filesystem as the repo). Node stdout/stderr go to ``<work>/nX.log``. This
process is the load generator: a small raw-protocol client (trio-websocket + cbor2, many
requests in flight per connection, replies matched by ``req``, every wait under
``trio.fail_after``); it does not use ``p2plog.client``.

Records: ~200 bytes of CBOR each (uuid4 ``id`` as 16 bytes, ``ts``, ``level``, ``source``,
``msg``, two ``fields``). Frames are built from one pre-encoded record with a fresh uuid4 and
the current ``ts`` spliced in, so the generator spends little CPU per record (the frame is
checked to decode to the intended map at start-up, and a sanity record is read back).

Measurements (each bounded by ``--seconds`` AND ``--max-records``):

1. records/s, batched: 4 connections x 3 frames in flight, 100 and 1000 records per ``submit``,
   to the leader and (separately) through a follower (which forwards to the leader).
2. records/s, unbatched: one record per ``submit``, 1 in flight; 256 in flight on 1 connection;
   256 in flight over 4 connections (64 each).
3. ack latency p50/p99 at 1 in flight (sequential single-record submits), ``ack=quorum`` and
   ``ack=leader`` (and ``ack=quorum`` through a follower). Every run reports per-frame latency.
4. fsyncs per record for every node and run: delta ``fsyncs`` / delta ``records`` from
   ``status`` before and after the run (after waiting until every node applied the commit index).
5. failover: ``--kills`` times, kill -9 the leader while one paced writer per surviving node
   submits single records (a new request every 10 ms, 1 s timeout each, no retry back-off); the
   failover time is kill -> first ack whose ``term`` exceeds the old leader's. The killed node
   is restarted and must catch up (applied_index >= the leader's commit index) before the next
   kill. p50/p99/max.
6. RSS (VmRSS, VmHWM) of each node after the throughput runs and at the end; CPU seconds of
   each node (utime+stime from /proc/PID/stat while it runs, ``wait4`` rusage of incarnations
   that exited or were killed) and of the load generator. Every run also reports the CPU cores
   each node, the generator and the REST of the machine used ("other": /proc/stat busy time
   minus ours), and the bench lists other processes that used CPU meanwhile: on a shared
   2-core machine, other work skews every number here.

Anything odd (error replies, client timeouts, a leadership change or dropped peer frames during
a throughput run, WARNING/ERROR lines in node logs, a node exiting, an unclean SIGTERM stop) is
printed to stderr with node log tails and listed under "anomalies"; a dead node or a cluster
without a leader aborts the run, and what was measured until then is still printed. Every node
started is stopped by pid (SIGTERM, bounded wait, then SIGKILL) and the work directory removed,
also on errors and Ctrl-C (``--keep`` keeps it). Progress goes to stderr; the table to stdout
(to stderr with --json, where stdout carries the JSON object). Exit code 1 if the run aborted.
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
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
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

from p2plog.config import ClusterConfig

REPO = Path(__file__).resolve().parent.parent
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
        with trio.fail_after(timeout_s):
            ws = await connect_websocket_url(
                nursery,
                f"ws://{HOST}:{port}/client",
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
                msg = cbor2.loads(raw)
                slot = self._waiting.pop(msg.get("req"), None)
                if slot is None:
                    self.unmatched += 1  # a reply that arrived after its request timed out
                    continue
                slot.reply = msg
                slot.done.set()
        except ConnectionClosed as e:
            self.closed = f"closed: {e.reason}"
        finally:
            if self.closed is None:
                self.closed = "reader stopped"
            for slot in self._waiting.values():
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


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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

    def __init__(self, root: Path, tick_ms: int, log_level: str = "INFO") -> None:
        self.root = root
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
        for n in self.nodes.values():
            lines += ["", "[[node]]", f'id = "{n.id}"', f'address = "{HOST}:{n.port}"']
            lines.append(f'data_dir = "data/{n.id}"')
        self.config_path.write_text("\n".join(lines) + "\n")

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
    cluster: Cluster
    factory: RecordFactory
    seconds: float
    max_records: int
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    procs_at_start: dict[int, tuple[str, float]] = field(default_factory=all_procs_cpu_s)
    loadavg_at_start: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def machine(self) -> dict[str, Any]:
        """How busy the machine was with other work since the bench started."""
        return {
            "loadavg_before": [round(x, 2) for x in self.loadavg_at_start],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "other_processes_cpu": other_cpu(
                self.procs_at_start, all_procs_cpu_s(), {os.getpid(), *self.cluster.all_pids()}
            ),
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
    frame_records: int
    conns: int
    inflight: int  # frames in flight per connection
    ack: str = "quorum"


SPECS = (
    LoadSpec("unbatched, 1 in flight", "leader", 1, 1, 1),
    LoadSpec("unbatched, 1 in flight, ack=leader", "leader", 1, 1, 1, "leader"),
    LoadSpec("unbatched, 1 in flight, via follower", "follower", 1, 1, 1),
    LoadSpec("unbatched, 256 in flight, 1 conn", "leader", 1, 1, 256),
    LoadSpec("unbatched, 256 in flight, 4 conns", "leader", 1, 4, 64),
    LoadSpec("batched 100/frame", "leader", 100, 4, 3),
    LoadSpec("batched 1000/frame", "leader", 1000, 4, 3),
    LoadSpec("batched 100/frame, via follower", "follower", 100, 4, 3),
    LoadSpec("batched 1000/frame, via follower", "follower", 1000, 4, 3),
)


@dataclass
class LoadStats:
    sent: int = 0
    acked: int = 0
    frames: int = 0
    dups: int = 0
    record_errors: int = 0
    client_timeouts: int = 0
    conn_lost: int = 0
    stopped_by_count: bool = False
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


async def submitter(
    bench: Bench, conn: Conn, spec: LoadSpec, deadline: float, st: LoadStats
) -> None:
    n = spec.frame_records
    while trio.current_time() < deadline:
        if st.sent + n > bench.max_records:
            st.stopped_by_count = True
            return
        req = conn.next_req()
        frame = bench.factory.submit_frame(req, spec.ack, n)
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


async def run_load(bench: Bench, spec: LoadSpec) -> dict[str, Any]:
    cluster = bench.cluster
    phase = spec.name
    leader, term, _ = await wait_leader(cluster)
    followers = sorted(n for n in cluster.nodes if n != leader)
    target = leader if spec.via == "leader" else followers[0]
    progress(
        f"{phase}: {spec.conns} conn(s) x {spec.inflight} in flight, {spec.frame_records} "
        f"record(s)/frame, ack={spec.ack}, to {target} (leader {leader}) ..."
    )
    before = await wait_settled(bench, leader, phase)
    st = LoadStats()
    async with trio.open_nursery() as nursery:
        conns = [
            await Conn.connect(nursery, cluster.port(target), f"{target}#{i}")
            for i in range(spec.conns)
        ]
        cpu0 = cluster.live_cpu_s()
        gen0 = time.process_time()
        sys0 = system_busy_s()
        t0 = trio.current_time()
        with trio.fail_after(bench.seconds + REQUEST_TIMEOUT_S + 10):
            async with trio.open_nursery() as workers:
                for c in conns:
                    for _ in range(spec.inflight):
                        workers.start_soon(submitter, bench, c, spec, t0 + bench.seconds, st)
        elapsed = trio.current_time() - t0
        cpu1 = cluster.live_cpu_s()
        gen1 = time.process_time()
        sys1 = system_busy_s()
        for c in conns:
            await c.aclose()
        nursery.cancel_scope.cancel()
    after = await wait_settled(bench, leader, phase)
    await bench.check_nodes(phase)

    cores: dict[str, float | None] = {}
    for nid in cluster.nodes:
        a, b = cpu0[nid], cpu1[nid]
        cores[nid] = round((b - a) / elapsed, 3) if a is not None and b is not None else None
    cores["client"] = round((gen1 - gen0) / elapsed, 3)
    ours = sum(v for v in cores.values() if v is not None)
    cores["other"] = round(max(0.0, (sys1 - sys0) / elapsed - ours), 3)
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
    result: dict[str, Any] = {
        **asdict(spec),
        "target": target,
        "leader": leader,
        "seconds": round(elapsed, 3),
        "frames": st.frames,
        "records_sent": st.sent,
        "records_acked": st.acked,
        "records_per_s": round(st.acked / elapsed, 1),
        "frame_latency_ms": lat_ms(st.latencies_s),
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
        "peer_frames_dropped": dropped,
        "roles": roles,
        "term_before": term,
        "term_after": term_after,
    }
    if st.errors or st.record_errors or st.client_timeouts or st.conn_lost:
        bench.anomaly(
            phase,
            f"error replies {dict(st.errors)}, record errors {st.record_errors}, client "
            f"timeouts {st.client_timeouts}, lost connections {st.conn_lost}",
            st.samples,
        )
    if st.dups:
        bench.anomaly(phase, f"{st.dups} acks said dup=true for fresh uuid4 ids")
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
        f"  {result['records_per_s']:,.0f} records/s, frame p50 "
        f"{result['frame_latency_ms']['p50']} ms p99 {result['frame_latency_ms']['p99']} ms, "
        f"cores {cores}"
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


async def bench_main(bench: Bench, args: argparse.Namespace) -> None:
    """Fill ``bench.results`` as the measurements finish (a failure keeps what was measured)."""
    cluster = bench.cluster
    res = bench.results
    t_start = trio.current_time()
    for nid in cluster.nodes:
        cluster.start(nid)
    leader, term, _ = await wait_leader(cluster)
    progress(f"cluster up: leader {leader} term {term} after {trio.current_time() - t_start:.2f} s")
    await bench.check_nodes("start-up")
    bench.scan_logs("start-up")
    res["sanity"] = await sanity_check(bench)
    res["loads"] = []
    for spec in SPECS:
        res["loads"].append(await run_load(bench, spec))
    res["resources_after_loads"] = resources(cluster)
    if not args.skip_failover and args.kills > 0:
        res["failover"] = {"kills": args.kills, "runs": []}
        for k in range(args.kills):
            res["failover"]["runs"].append(await one_failover(bench, k + 1))
    res["final_status"] = {
        k: v and {x: v[x] for x in STATUS_KEYS} for k, v in (await all_status(cluster)).items()
    }


STATUS_KEYS = (
    "role",
    "term",
    "leader",
    "commit_index",
    "applied_index",
    "records",
    "fsyncs",
    "log_bytes",
    "fsync_ms_p50",
    "fsync_ms_p99",
)


# ---------------------------------------------------------------------------- output


def _f(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def print_table(report: dict[str, Any], out: Any) -> None:
    info = report["info"]

    def p(s: str = "") -> None:
        print(s, file=out)

    p(
        f"p2plog bench: 3 nodes on {HOST}, tick {info['tick_ms']} ms, election "
        f"{info['election_ticks']} ticks, heartbeat {info['heartbeat_ticks']} ticks; "
        f"{info['record_bytes']}-byte records; {info['seconds']:g} s per run; {info['cpus']} CPUs; "
        f"Python {info['python']}; total {info['total_s']:.0f} s"
    )
    others = [r["cpu_cores"].get("other") or 0.0 for r in report.get("loads") or []]
    if others and sum(others) / len(others) > 0.25:
        p(
            f"WARNING: the rest of the machine used {sum(others) / len(others):.2f} cores on "
            f"average during the throughput runs (see 'other' and 'machine' below); the numbers "
            f"are skewed by that load"
        )
    g = info["git"]
    p(f"code: HEAD {g['head']}; uncommitted changes under p2plog/: {g['p2plog_changes'] or 'none'}")
    loads = report.get("loads") or []
    if loads:
        ids = list(NODE_IDS)
        p()
        p("THROUGHPUT (records acked / wall time; frame latency = submit -> ack of one frame)")
        hdr = (
            f"{'run':36} {'to':>9} {'rec/frame':>9} {'conn x infl':>11} {'ack':>6} "
            f"{'records/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  errors"
        )
        p(hdr)
        p("-" * len(hdr))
        for r in loads:
            to = f"{r['target']}({'L' if r['target'] == r['leader'] else 'F'})"
            lat = r["frame_latency_ms"]
            errs = dict(r["error_replies"])
            for k in ("record_errors", "client_timeouts", "conn_lost"):
                if r[k]:
                    errs[k] = r[k]
            p(
                f"{r['name']:36} {to:>9} {r['frame_records']:>9} "
                f"{str(r['conns']) + ' x ' + str(r['inflight']):>11} {r['ack']:>6} "
                f"{r['records_per_s']:>10,.0f} {_f(lat['p50'], '.2f'):>8} "
                f"{_f(lat['p99'], '.2f'):>8} {_f(lat['max'], '.2f'):>8}  {errs or 'none'}"
            )
        p()
        p("ACK LATENCY at 1 in flight (one record per submit, sequential)")
        for r in loads:
            if r["conns"] == 1 and r["inflight"] == 1 and r["frame_records"] == 1:
                lat = r["frame_latency_ms"]
                p(
                    f"  ack={r['ack']:6} via {r['via']:8}: p50 {_f(lat['p50'], '.3f')} ms, "
                    f"p99 {_f(lat['p99'], '.3f')} ms, max {_f(lat['max'], '.3f')} ms "
                    f"({r['frames']} submits)"
                )
        p()
        p(
            "FSYNCS PER RECORD (delta fsyncs / delta records from status; role L/F), node fsync "
            "p99 ms (status), CPU cores per run ('other' = the rest of the machine)"
        )
        hdr2 = f"{'run':36} " + " ".join(f"{n + ' fs/rec':>13}" for n in ids)
        hdr2 += " " + " ".join(f"{n + ' p99':>7}" for n in ids)
        hdr2 += " " + " ".join(f"{n:>5}" for n in [*ids, "client", "other"])
        p(hdr2)
        p("-" * len(hdr2))
        for r in loads:
            cells = []
            for n in ids:
                role = (r["roles"].get(n) or "?")[0].upper()
                cells.append(f"{_f(r['fsyncs_per_record'][n], '.4f') + ' ' + role:>13}")
            fs = [f"{_f((r['node_fsync_ms'].get(n) or {}).get('p99'), '.1f'):>7}" for n in ids]
            cores = [f"{_f(r['cpu_cores'].get(n), '.2f'):>5}" for n in [*ids, "client", "other"]]
            p(f"{r['name']:36} " + " ".join(cells) + " " + " ".join(fs) + " " + " ".join(cores))
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
        for r in fo["runs"]:
            replies = {k.split(";")[0]: v for k, v in r["errors_after_kill"].items()}
            p(
                f"  #{r['kill']:<3} killed {r['old_leader']} (term {r['old_term']}) -> "
                f"{_f(r['failover_ms'], '.1f'):>7} ms, new leader {r['new_leader']} term "
                f"{r['new_term']}, first ack via {r['first_ack_via']}; replies {replies}, "
                f"timeouts {r['timeouts_after_kill']}; catch-up {r['restart_catch_up_s']} s; "
                f"links down at kill: {r['links_down_at_kill'] or 'none'}"
            )
    p()
    p("RESOURCES (RSS/HWM MiB; CPU s of all incarnations of each node)")
    ra, re_ = report.get("resources_after_loads"), report.get("resources_end")
    for nid in NODE_IDS:
        a = (ra or {}).get(nid, {})
        e = (re_ or {}).get(nid, {})
        p(
            f"  {nid}: after throughput runs RSS {_f(a.get('rss_mib'))} (HWM "
            f"{_f(a.get('hwm_mib'))}); at end RSS {_f(e.get('rss_mib'))} (HWM "
            f"{_f(e.get('hwm_mib'))}), started {_f(e.get('starts'))}x; CPU "
            f"{_f(e.get('cpu_s_all_incarnations'))} s"
        )
    p(f"  load generator (this process): CPU {info['loadgen_cpu_s']:.2f} s")
    sd = report.get("shutdown")
    if sd:
        p(
            "  shutdown (SIGTERM): "
            + ", ".join(
                f"{k} exit {v.get('exit_code')} in {v.get('stop_s', '?')} s"
                + (" (SIGKILLed)" if v.get("killed") else "")
                for k, v in sd.items()
            )
        )
    m = report.get("machine")
    if m:
        p(
            f"  machine: load average {m['loadavg_before']} before, {m['loadavg_after']} after; "
            f"other processes using >= 1 CPU s during the bench: "
            f"{len(m['other_processes_cpu']) or 'none'}"
        )
        for o in m["other_processes_cpu"]:
            p(f"    pid {o['pid']}: {o['cpu_s']} s  {o['cmd']}")
    anomalies = report.get("anomalies") or []
    for f in report.get("failure") or []:
        p()
        p("RUN ABORTED: " + f.splitlines()[0])
        for line in f.splitlines()[1:12]:
            p(f"    {line}")
    p()
    p(f"ANOMALIES: {len(anomalies) or 'none'}")
    for a in anomalies:
        p(f"  [{a['phase']}] {a['what']}")
        for line in a["lines"][:5]:
            p(f"      {line}")


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


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="per throughput run (default 5)")
    p.add_argument("--kills", type=int, default=20, help="leader kills (default 20)")
    p.add_argument("--skip-failover", action="store_true", help="no kill -9 measurement")
    p.add_argument(
        "--max-records", type=int, default=3_000_000, help="record cap per run (default 3M)"
    )
    p.add_argument("--tick-ms", type=int, default=20, help="[cluster] tick_ms (default 20)")
    p.add_argument("--node-log-level", default="INFO", help="the nodes' --log-level (INFO)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (data, logs)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = p.parse_args()
    if a.seconds <= 0 or a.kills < 0 or a.max_records < 1000 or a.tick_ms < 1:
        p.error("--seconds > 0, --kills >= 0, --max-records >= 1000, --tick-ms >= 1")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    git = git_state()
    factory = RecordFactory()
    factory.check()
    root = Path(tempfile.mkdtemp(prefix=".bench-", dir=REPO)).resolve()
    rc = 0
    t0 = time.monotonic()
    cluster: Cluster | None = None
    bench: Bench | None = None
    shutdown: dict[str, dict[str, Any]] = {}
    failure: list[str] = []
    try:
        cluster = Cluster(root, a.tick_ms, a.node_log_level)
        bench = Bench(cluster, factory, a.seconds, a.max_records)
        progress(f"work directory {root}; ports {[n.port for n in cluster.nodes.values()]}")
        trio.run(bench_main, bench, a)
    except BaseException as e:
        leaves = list(_leaves(e))
        if any(isinstance(x, KeyboardInterrupt) for x in leaves):
            progress("interrupted; stopping the nodes")
            rc = 130
        else:
            rc = 1
            for x in leaves:
                if isinstance(x, BenchFailed):
                    failure.append(str(x))
                else:
                    failure.append("".join(traceback.format_exception(x)).rstrip())
                progress(f"BENCH FAILED: {failure[-1]}")
            if cluster is not None:
                progress(cluster.tails(60))
    finally:
        if cluster is not None and bench is not None:
            bench.results["resources_end"] = resources(cluster)
            bench.results["machine"] = bench.machine()
        if cluster is not None:
            shutdown = cluster.stop_all()
            bad = {k: v for k, v in shutdown.items() if v.get("exit_code") != 0}
            if bad:
                progress(f"!!! nodes did not stop cleanly on SIGTERM: {bad}")
                progress(cluster.tails(60))
                if bench is not None:
                    bench.anomalies.append(
                        {"phase": "shutdown", "what": f"unclean stop: {bad}", "lines": []}
                    )
        if a.keep:
            progress(f"work directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if cluster is None or bench is None or rc == 130:
        return rc or 1
    if bench.results.get("failover"):
        summarize_failover(bench.results["failover"])
    d = cluster.defaults
    report = {
        "info": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "seconds": a.seconds,
            "max_records": a.max_records,
            "tick_ms": a.tick_ms,
            "election_ticks": d.election_ticks,
            "heartbeat_ticks": d.heartbeat_ticks,
            "record_bytes": factory.record_bytes,
            "total_s": round(time.monotonic() - t0, 1),
            "loadgen_cpu_s": round(time.process_time(), 2),
            "git": git,
        },
        **bench.results,
        "shutdown": shutdown,
        "anomalies": bench.anomalies,
        "failure": failure,
    }
    print_table(report, sys.stderr if a.json else sys.stdout)
    if a.json:
        print(json.dumps(report, indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
