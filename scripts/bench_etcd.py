"""Benchmark of etcd 3.4 (Debian ``etcd-server``) for a side-by-side comparison with p2plog.

    python scripts/bench_etcd.py                       # 3 runs x 3 shapes, 5 s each: ~1.5 min
    python scripts/bench_etcd.py --seconds 2 --runs 1  # quicker
    python scripts/bench_etcd.py --json                # one JSON object on stdout
    python scripts/bench_etcd.py --keep                # keep the work dir (etcd logs)

``scripts/bench.py --compare`` imports this module and calls :func:`etcd_compare`.

Set-up: ``etcd`` and ``wrk`` are installed with ``apt-get install etcd-server wrk`` when missing
(:func:`ensure_installed`; a ``/usr/sbin/policy-rc.d`` that denies service starts is in place
during the install, so the package's own etcd service is not started). Every run starts a FRESH
3-member cluster on 127.0.0.1 (:func:`start_cluster`: free client and peer ports from binding
port 0, data directories under the work directory, etcd's default durability -- the WAL is
fsynced before an entry counts as committed --, ``--logger zap --log-level warn`` into
``<work>/etcdN.log``), waits until ``GET /health`` says true on every member and finds the leader
with ``POST /v3/maintenance/status`` (``leader == header.member_id``). Members are stopped by
pid (SIGTERM, bounded wait, SIGKILL) and their data directories removed.

Workloads, all against the leader's JSON gateway ``POST /v3/kv/put`` with
``{"key": b64, "value": b64}``: keys ``k/<x><9 digits>`` (12 bytes), 200-byte values.

* ``one_in_flight``: sequential puts on one keep-alive HTTP/1.1 connection, from a Python
  subprocess (a raw-socket client: pre-encoded value, no http.client), for ``--seconds``.
  records/s and ack latency p50/p99. The generator reports the CPU it spent per request
  (``loadgen_cpu_us_per_req``): an upper bound of what it adds to each latency.
* ``conns_256`` / ``conns_1024``: ``wrk -t2 -c256`` / ``-c1024`` with a Lua script (a new key
  per request; p50/p99 and error counts printed as JSON by a ``done`` hook), for ``--seconds``
  (whole seconds). records/s counts 2xx/3xx responses only; every non-2xx response, socket
  error and timeout is counted in ``errors``.

CPU seconds of each member (utime+stime deltas of /proc/PID/stat over the measurement) and of
the load generator (``wait4`` rusage of the whole process, start-up included). WARN/ERROR lines
in the etcd logs (e.g. slow fdatasync, "apply request took too long") are counted per run
(``etcd_warnings``) and a few are shown. Nothing talks to anything but 127.0.0.1; every loop is
bounded in count and time and every wait has a deadline.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # this checkout's p2plog (its /proc readers), whatever is installed
    sys.path.insert(0, str(REPO))

from p2plog.testing.ports import HOST, free_ports  # noqa: E402
from p2plog.testing.proc import all_procs_cpu_s, proc_cpu_s, system_busy_s  # noqa: E402

PUT_PATH = "/v3/kv/put"
VALUE = (b"etcd-bench-value-" * 13)[:200]  # 200 bytes
VALUE_B64 = base64.b64encode(VALUE)
SHAPES = ("one_in_flight", "conns_256", "conns_1024")
WRK_CONNS = {"conns_256": 256, "conns_1024": 1024}
WRK_THREADS = 2
HEALTH_DEADLINE_S = 20.0
STOP_DEADLINE_S = 10.0
APT_TIMEOUT_S = 600.0
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


class EtcdError(RuntimeError):
    """A cluster that did not start, lost its leader or a load generator that failed."""


# ---------------------------------------------------------------------------- install


def _missing_tools() -> list[str]:
    return [t for t in ("etcd", "wrk") if shutil.which(t) is None]


def ensure_installed() -> str | None:
    """Install ``etcd-server`` and ``wrk`` with apt-get if missing.

    None when both are available, else the reason (``"apt-get failed: ..."``). No service is
    started by the install: a ``policy-rc.d`` denying it is created for the install (and removed
    afterwards) unless one is already there."""
    if not _missing_tools():
        return None
    if os.geteuid() != 0:
        return f"{', '.join(_missing_tools())} missing and not root (apt-get install needs root)"
    if shutil.which("apt-get") is None:
        return f"{', '.join(_missing_tools())} missing and no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    created = False
    try:
        if not POLICY_RC_D.exists():
            POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
            POLICY_RC_D.chmod(0o755)
            created = True
        cmd = ["apt-get", "install", "-y", "-q", "etcd-server", "wrk"]
        last = ""
        for attempt in range(2):  # second attempt after an ``apt-get update``
            if attempt == 1:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run(
                        ["apt-get", "update", "-q"],
                        env=env,
                        capture_output=True,
                        timeout=APT_TIMEOUT_S,
                        check=False,
                    )
            try:
                res = subprocess.run(
                    cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                last = f"timed out after {APT_TIMEOUT_S:.0f} s"
                continue
            if res.returncode == 0 and not _missing_tools():
                return None
            tail = (res.stderr.strip() or res.stdout.strip()).splitlines()[-3:]
            last = f"exit {res.returncode}: {' | '.join(tail)}"
    except OSError as e:
        last = str(e)
    finally:
        if created:
            with contextlib.suppress(OSError):
                POLICY_RC_D.unlink()
    if not _missing_tools():
        return None
    return f"apt-get failed: {last}"


def etcd_version() -> str:
    try:
        out = subprocess.run(
            ["etcd", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "?"


# ---------------------------------------------------------------------------- processes


def user_procs_cpu_s() -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds) of every userland process (kernel threads, which have
    no command line, are left out: kworkers also do etcd's own fsync and network work)."""
    return all_procs_cpu_s(userland_only=True)


@dataclass
class Usage:
    """CPU of the machine, of the members and of other processes over a measurement."""

    busy0: float
    members0: dict[str, float]
    procs0: dict[int, tuple[str, float]]

    @classmethod
    def start(cls, cluster: EtcdCluster) -> Usage:
        return cls(system_busy_s(), cluster.cpu_s(), user_procs_cpu_s())

    def finish(self, cluster: EtcdCluster, gen_cpu: float) -> dict[str, Any]:
        """``cpu_s`` (members, load generator), ``other_cpu_s`` (the rest of the machine:
        /proc/stat busy time minus ours, kernel threads and softirq included, +-0.5 s of tick
        sampling noise), ``other_procs_cpu_s`` and ``other_procs`` (userland processes not
        ours that used CPU meanwhile: other work skewing the figures)."""
        members = cluster.cpu_s()
        busy = system_busy_s() - self.busy0
        procs = user_procs_cpu_s()
        ours = {m.pid for m in cluster.members}
        cpu = {k: members[k] - self.members0[k] for k in members}
        others: list[tuple[float, str]] = []
        for pid, (cmd, c) in procs.items():
            if pid in ours or pid == os.getpid():
                continue
            used = c - self.procs0[pid][1] if pid in self.procs0 else c
            if used >= 0.05:
                others.append((used, cmd))
        others.sort(reverse=True)
        return {
            "cpu_s": {**cpu, "loadgen": gen_cpu},
            "other_cpu_s": max(0.0, busy - gen_cpu - sum(cpu.values())),
            "other_procs_cpu_s": sum(u for u, _ in others),
            "other_procs": [{"cpu_s": round(u, 2), "cmd": c} for u, c in others[:5]],
        }


def run_child(cmd: list[str], timeout_s: float) -> tuple[int, str, str, float]:
    """Run ``cmd`` to completion (killed after ``timeout_s``): exit code, stdout, stderr and the
    CPU seconds of the child (``wait4`` rusage, all its threads)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO)
        deadline = time.monotonic() + timeout_s
        killed = False
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid != 0:
                    break
                if time.monotonic() >= deadline and not killed:
                    os.kill(p.pid, signal.SIGKILL)
                    killed = True
                    deadline = time.monotonic() + 10.0
                elif killed and time.monotonic() >= deadline:
                    raise EtcdError(f"{cmd[0]} (pid {p.pid}) did not exit after SIGKILL")
                time.sleep(0.02)
        except BaseException:  # Ctrl-C or the above: the child must not outlive the bench
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=10.0)
            raise
        p.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if killed:
        raise EtcdError(f"{cmd[0]} killed after {timeout_s:.0f} s; stderr: {stderr[-500:]}")
    return p.returncode, stdout, stderr, ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------- cluster


def _http(
    port: int, method: str, path: str, body: bytes | None = None, timeout_s: float = 2.0
) -> tuple[int, Any]:
    """One request to a member on 127.0.0.1 (http.client: no proxy from the environment)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read(1 << 20)
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, data.decode(errors="replace")
    finally:
        conn.close()


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    out_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 15) -> str:
        lines: list[str] = []
        for p in (self.log_path, self.out_path):
            with contextlib.suppress(OSError):
                lines += p.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(f"    {self.name}: {line[:300]}" for line in lines[-n:])


@dataclass
class EtcdCluster:
    work: Path
    members: list[Member] = field(default_factory=list)
    leader: int = -1  # index into members

    def url(self, i: int) -> str:
        return f"http://{HOST}:{self.members[i].client_port}"

    @property
    def leader_port(self) -> int:
        return self.members[self.leader].client_port

    def check_alive(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is not None:
                raise EtcdError(
                    f"{m.name} exited with {m.proc.returncode}; log tail:\n{m.log_tail()}"
                )

    def cpu_s(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in self.members:
            cpu = proc_cpu_s(m.pid) if m.proc is not None else None
            out[m.name] = cpu or 0.0
        return out

    def wait_healthy(self, deadline_s: float = HEALTH_DEADLINE_S) -> None:
        """Until every member says ``{"health": "true"}`` and they agree on a leader."""
        deadline = time.monotonic() + deadline_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                healthy = 0
                for m in self.members:
                    status, body = _http(m.client_port, "GET", "/health", timeout_s=1.0)
                    if status == 200 and isinstance(body, dict) and body.get("health") == "true":
                        healthy += 1
                    else:
                        last = f"{m.name} /health: {status} {body}"
                if healthy == len(self.members):
                    self.leader = self.find_leader()
                    return
            except (OSError, http.client.HTTPException, EtcdError) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.1)
        tails = "\n".join(m.log_tail() for m in self.members)
        raise EtcdError(f"cluster not healthy after {deadline_s:.0f} s ({last}); logs:\n{tails}")

    def find_leader(self) -> int:
        """Index of the member whose ``header.member_id`` is the ``leader`` all of them report."""
        ids: list[str] = []
        leaders: set[str] = set()
        for m in self.members:
            status, body = _http(m.client_port, "POST", "/v3/maintenance/status", b"{}")
            if status != 200 or not isinstance(body, dict):
                raise EtcdError(f"{m.name} status: {status} {body}")
            ids.append(str(body["header"]["member_id"]))
            leaders.add(str(body.get("leader", "0")))
        if len(leaders) != 1 or next(iter(leaders)) not in ids:
            raise EtcdError(f"no agreed leader: member ids {ids}, leaders {sorted(leaders)}")
        return ids.index(next(iter(leaders)))

    def log_marks(self) -> dict[str, int]:
        """Current sizes of the member logs (see :meth:`warnings`)."""
        marks: dict[str, int] = {}
        for m in self.members:
            for p in (m.log_path, m.out_path):
                with contextlib.suppress(OSError):
                    marks[str(p)] = p.stat().st_size
        return marks

    def warnings(self, since: dict[str, int]) -> list[str]:
        """Lines the members logged (WARN and above, zap JSON, or anything on stderr) after the
        marks ``since``: start-up and shutdown chatter (also at WARN in 3.4) is left out."""
        out: list[str] = []
        for m in self.members:
            for p in (m.log_path, m.out_path):
                with contextlib.suppress(OSError), open(p, "rb") as f:
                    f.seek(since.get(str(p), 0))
                    text = f.read(4 << 20).decode(errors="replace")
                    out += [f"{m.name}: {ln[:300]}" for ln in text.splitlines() if ln.strip()]
        return out

    def stop(self) -> None:
        """SIGTERM every member (by pid), bounded wait, SIGKILL; then remove the data dirs.

        Followers first: a leader stopped while its followers stop too tries to hand over its
        leadership and waits seconds for that; alone it exits at once."""
        order = [m for i, m in enumerate(self.members) if i != self.leader]
        if 0 <= self.leader < len(self.members):
            order.append(self.members[self.leader])
        self._terminate(order[:-1])
        self._terminate(order[-1:])
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)

    @staticmethod
    def _terminate(members: list[Member]) -> None:
        running = [m for m in members if m.proc is not None and m.proc.poll() is None]
        for m in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_S
        for m in running:
            assert m.proc is not None
            try:
                m.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(m.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.proc.wait(timeout=5.0)


def _launch(work: Path) -> EtcdCluster:
    work.mkdir(parents=True, exist_ok=True)
    ports = free_ports(6)
    cluster = EtcdCluster(work=work)
    for i in range(3):
        name = f"etcd{i + 1}"
        cluster.members.append(
            Member(
                name=name,
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=work / f"{name}.data",
                log_path=work / f"{name}.log",
                out_path=work / f"{name}.out",
            )
        )
    initial = ",".join(f"{m.name}=http://{HOST}:{m.peer_port}" for m in cluster.members)
    token = f"bench-{os.getpid()}-{time.time_ns()}"
    # ETCD_* variables would be read as flags (and conflict with ours): drop them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    try:
        for m in cluster.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)
            cmd = [
                "etcd",
                "--name", m.name,
                "--data-dir", str(m.data_dir),
                "--listen-client-urls", f"http://{HOST}:{m.client_port}",
                "--advertise-client-urls", f"http://{HOST}:{m.client_port}",
                "--listen-peer-urls", f"http://{HOST}:{m.peer_port}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{m.peer_port}",
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--logger", "zap",
                "--log-outputs", str(m.log_path),
                "--log-level", "warn",
            ]  # fmt: skip
            with open(m.out_path, "wb") as out:
                m.proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=work,
                    env=env,
                    start_new_session=True,  # Ctrl-C reaches only the bench; it stops them
                )
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def start_cluster(work: Path) -> Iterator[EtcdCluster]:
    """A fresh healthy 3-member cluster on 127.0.0.1 with its leader found; stopped (by pid) and
    its data directories removed on exit. Raises :class:`EtcdError` (with log tails) if it is not
    healthy within 20 s; a second attempt with new ports if a member exited (port taken)."""
    cluster: EtcdCluster | None = None
    for attempt in range(2):
        try:
            cluster = _launch(work)
            break
        except EtcdError as e:
            if attempt == 1 or "exited with" not in str(e):
                raise
    assert cluster is not None
    try:
        yield cluster
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------- load: 1 in flight


def _read_response(sock: socket.socket, buf: bytearray, deadline: float) -> tuple[int, bytes]:
    """One HTTP/1.1 response from a keep-alive connection: status, body (Content-Length or
    chunked). Leftover bytes stay in ``buf``."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        if time.monotonic() > deadline or len(buf) > 65536:
            raise EtcdError("no response head")
        chunk = sock.recv(65536)
        if not chunk:
            raise EtcdError("connection closed")
        buf += chunk
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    status = int(head[0].split(" ", 2)[1])
    length = -1
    chunked = False
    for line in head[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v)
        elif k == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    if not chunked:
        length = max(length, 0)
        while len(buf) < length:
            if time.monotonic() > deadline:
                raise EtcdError("body timeout")
            chunk = sock.recv(65536)
            if not chunk:
                raise EtcdError("connection closed")
            buf += chunk
        body = bytes(buf[:length])
        del buf[:length]
        return status, body
    out = bytearray()
    for _ in range(10_000):  # chunks
        while (eol := buf.find(b"\r\n")) < 0:
            if time.monotonic() > deadline:
                raise EtcdError("chunk timeout")
            chunk = sock.recv(65536)
            if not chunk:
                raise EtcdError("connection closed")
            buf += chunk
        size = int(bytes(buf[:eol]).split(b";")[0], 16)
        while len(buf) < eol + 2 + size + 2:
            if time.monotonic() > deadline:
                raise EtcdError("chunk timeout")
            chunk = sock.recv(65536)
            if not chunk:
                raise EtcdError("connection closed")
            buf += chunk
        out += buf[eol + 2 : eol + 2 + size]
        del buf[: eol + 2 + size + 2]
        if size == 0:
            return status, bytes(out)
    raise EtcdError("too many chunks")


def _seq_loadgen(port: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """Sequential puts on one keep-alive connection (runs in the load generator process)."""
    sock = socket.create_connection((HOST, port), timeout=5.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = (
        f"POST {PUT_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    buf = bytearray()
    lat_ns: list[int] = []
    errors = 0
    first_error = ""
    cpu0 = os.times()
    t0 = time.monotonic()
    stop_at = t0 + seconds
    for i in range(max_requests):
        now = time.monotonic()
        if now >= stop_at:
            break
        key = base64.b64encode(b"k/s%09d" % i)
        body = b'{"key":"' + key + b'","value":"' + VALUE_B64 + b'"}'
        req = head + b"%d\r\n\r\n" % len(body) + body
        s = time.perf_counter_ns()
        sock.sendall(req)
        status, resp = _read_response(sock, buf, now + 10.0)
        lat_ns.append(time.perf_counter_ns() - s)
        if status != 200 or not resp.startswith(b'{"header"'):
            errors += 1
            first_error = first_error or f"{status} {resp[:200]!r}"
            if errors >= 100:
                break
    elapsed = time.monotonic() - t0
    cpu1 = os.times()
    sock.close()
    lat_ns.sort()
    n = len(lat_ns)

    def pct(q: float) -> float | None:
        return lat_ns[min(n - 1, max(0, int(q * n + 0.999999) - 1))] / 1e6 if n else None

    return {
        "requests": n,
        "ok": n - errors,
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": lat_ns[-1] / 1e6 if n else None,
        "mean_ms": sum(lat_ns) / n / 1e6 if n else None,
        "loop_user_s": cpu1.user - cpu0.user,
        "loop_sys_s": cpu1.system - cpu0.system,
    }


def run_one_in_flight(cluster: EtcdCluster, seconds: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--loadgen-seq",
        f"{cluster.leader_port}:{seconds}",
    ]
    usage = Usage.start(cluster)
    t0 = time.monotonic()
    code, out, err, gen_cpu = run_child(cmd, seconds + 30.0)
    wall = time.monotonic() - t0
    cpu = usage.finish(cluster, gen_cpu)
    if code != 0:
        raise EtcdError(f"load generator exited {code}: {err[-800:]}")
    res = json.loads(out.strip().splitlines()[-1])
    n = int(res["requests"])
    return {
        "records_per_s": res["ok"] / res["elapsed_s"] if res["elapsed_s"] > 0 else 0.0,
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "errors": int(res["errors"]),
        **cpu,
        "wall_s": res["elapsed_s"],
        "max_ms": res["max_ms"],
        "requests": n,
        "loadgen_cpu_us_per_req": (res["loop_user_s"] + res["loop_sys_s"]) / n * 1e6 if n else None,
        "loadgen_user_us_per_req": res["loop_user_s"] / n * 1e6 if n else None,
        "process_wall_s": wall,
        "first_error": res["first_error"] or None,
    }


_CANNED_BODY = (
    b'{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437",'
    b'"revision":"2","raft_term":"2"}}'
)
CANNED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Grpc-Metadata-Content-Type: application/grpc\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_CANNED_BODY), _CANNED_BODY)
)


def _canned_server(listener: socket.socket, stop_at: float) -> None:
    """Answer every request on one connection with :data:`CANNED_RESPONSE` (a blocking
    responder with no work: the floor of the 1-in-flight generator)."""
    listener.settimeout(5.0)
    with contextlib.suppress(OSError), listener.accept()[0] as conn:
        conn.settimeout(5.0)
        buf = bytearray()
        for _ in range(10_000_000):
            if time.monotonic() > stop_at:
                return
            while (end := buf.find(b"\r\n\r\n")) < 0:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head = bytes(buf[:end]).lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
            while len(buf) < end + 4 + length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            del buf[: end + 4 + length]
            conn.sendall(CANNED_RESPONSE)


def calibrate_loadgen(seconds: float = 1.0) -> dict[str, Any]:
    """The 1-in-flight generator (same subprocess) against a canned-response thread here:
    p50/p99 of a round trip that costs the server nothing -- what the generator and loopback
    TCP add to every etcd latency at most (the canned responder's own time is included)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    th = threading.Thread(
        target=_canned_server, args=(listener, time.monotonic() + seconds + 20.0), daemon=True
    )
    th.start()
    try:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--loadgen-seq", f"{port}:{seconds}"]
        code, out, err, _ = run_child(cmd, seconds + 30.0)
        if code != 0:
            raise EtcdError(f"load generator exited {code}: {err[-800:]}")
        res = json.loads(out.strip().splitlines()[-1])
    finally:
        listener.close()
        th.join(timeout=10.0)
    n = int(res["requests"])
    return {
        "p50_ms": res["p50_ms"],
        "p99_ms": res["p99_ms"],
        "requests_per_s": n / res["elapsed_s"] if res["elapsed_s"] > 0 else 0.0,
        "errors": int(res["errors"]),
        "loadgen_cpu_us_per_req": (res["loop_user_s"] + res["loop_sys_s"]) / n * 1e6 if n else None,
    }


# ---------------------------------------------------------------------------- load: wrk


def wrk_script() -> str:
    """wrk Lua script: POST /v3/kv/put, key ``k/<thread letter><9 digits>`` per request.

    base64 of the key is assembled from tables computed here: ``k/<letter>`` is 3 bytes and
    every 3-digit group is 3 bytes, so each encodes to 4 characters on its own."""
    groups = ",".join(f'"{base64.b64encode(b"%03d" % n).decode()}"' for n in range(1000))
    prefixes = ",".join(
        f'"{base64.b64encode(b"k/" + bytes([97 + t])).decode()}"' for t in range(26)
    )
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local G = {{{groups}}}
local P = {{{prefixes}}}
local VALUE = "{VALUE_B64.decode()}"
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads % 26)
  nthreads = nthreads + 1
end

local counter = 0
local prefix = nil

request = function()
  if prefix == nil then prefix = P[tid + 1] end
  counter = counter + 1
  local c = counter
  local a = math.floor(c / 1000000) % 1000
  local b = math.floor(c / 1000) % 1000
  local d = c % 1000
  local key = prefix .. G[a + 1] .. G[b + 1] .. G[d + 1]
  return wrk.format(nil, nil, nil, '{{"key":"' .. key .. '","value":"' .. VALUE .. '"}}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def run_wrk(cluster: EtcdCluster, seconds: float, conns: int, script: Path) -> dict[str, Any]:
    dur = max(1, round(seconds))
    cmd = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{conns}",
        f"-d{dur}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        f"http://{HOST}:{cluster.leader_port}{PUT_PATH}",
    ]
    usage = Usage.start(cluster)
    t0 = time.monotonic()
    code, out, err, gen_cpu = run_child(cmd, dur + 30.0)
    wall = time.monotonic() - t0
    cpu = usage.finish(cluster, gen_cpu)
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCHJSON ")), None)
    if code != 0 or line is None:
        raise EtcdError(f"wrk exited {code}; stdout: {out[-800:]} stderr: {err[-800:]}")
    res = json.loads(line.split(" ", 1)[1])
    duration_s = res["duration_us"] / 1e6
    socket_errors = res["connect"] + res["read"] + res["write"] + res["timeout"]
    ok = res["requests"] - res["status"]
    return {
        "records_per_s": ok / duration_s if duration_s > 0 else 0.0,
        "p50_ms": res["p50_us"] / 1000.0,
        "p99_ms": res["p99_us"] / 1000.0,
        "errors": int(res["status"] + socket_errors),
        **cpu,
        "wall_s": duration_s,
        "max_ms": res["max_us"] / 1000.0,
        "requests": int(res["requests"]),
        "error_detail": {k: res[k] for k in ("status", "connect", "read", "write", "timeout")},
        "process_wall_s": wall,
    }


# ---------------------------------------------------------------------------- compare


def _warm_up(cluster: EtcdCluster, n: int = 50) -> None:
    """A few puts through the leader's gateway (checks the path and the answer too)."""
    conn = http.client.HTTPConnection(HOST, cluster.leader_port, timeout=5.0)
    try:
        for i in range(n):
            body = json.dumps(
                {"key": base64.b64encode(b"warm/%d" % i).decode(), "value": VALUE_B64.decode()}
            ).encode()
            conn.request("POST", PUT_PATH, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read(1 << 16)
            if resp.status != 200 or not data.startswith(b'{"header"'):
                raise EtcdError(f"warm-up put: {resp.status} {data[:300]!r}")
    finally:
        conn.close()


def etcd_compare(
    *, seconds: float, runs: int, work_root: Path, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Measure etcd: ``runs`` runs of every shape, each on a FRESH 3-member cluster.

    Returns ``{"available", "reason", "version", "shapes": {shape: [run dict, ...]}}``; a run
    dict has ``records_per_s, p50_ms, p99_ms, errors, cpu_s {etcd1, etcd2, etcd3, loadgen},
    wall_s`` (and ``leader``, ``etcd_warnings``, ``max_ms``, ``requests``, ...). ``available`` is
    False if etcd/wrk could not be installed or no run succeeded; ``reason`` says why, or lists
    the runs that failed (the others are kept)."""
    result: dict[str, Any] = {
        "available": False,
        "reason": None,
        "version": "",
        "shapes": {s: [] for s in SHAPES},
    }
    reason = ensure_installed()
    if reason is not None:
        result["reason"] = reason
        return result
    result["version"] = etcd_version()
    work_root.mkdir(parents=True, exist_ok=True)
    script = work_root / "etcd_put.lua"
    script.write_text(wrk_script())
    failures: list[str] = []
    try:
        result["loadgen_floor"] = floor = calibrate_loadgen()
        progress(
            f"1-in-flight generator vs a canned responder: p50 {floor['p50_ms']:.3f} ms, "
            f"p99 {floor['p99_ms']:.3f} ms, {floor['requests_per_s']:,.0f} req/s"
        )
    except (EtcdError, OSError, ValueError, KeyError) as e:
        failures.append(f"load generator calibration: {type(e).__name__}: {e}")
    for r in range(runs):
        for shape in SHAPES:  # shapes interleaved: drift of the machine spreads over all
            tag = f"{shape} run {r + 1}/{runs}"
            progress(f"etcd {tag}: starting a fresh 3-member cluster")
            try:
                with start_cluster(work_root / f"{shape}-{r + 1}") as cluster:
                    leader = cluster.members[cluster.leader].name
                    _warm_up(cluster)
                    marks = cluster.log_marks()
                    if shape == "one_in_flight":
                        run = run_one_in_flight(cluster, seconds)
                    else:
                        run = run_wrk(cluster, seconds, WRK_CONNS[shape], script)
                    cluster.check_alive()
                    try:
                        run["leader_changed"] = cluster.find_leader() != cluster.leader
                    except EtcdError:  # members disagree (an election under way)
                        run["leader_changed"] = True
                    warnings = cluster.warnings(marks)
            except (EtcdError, OSError, ValueError, KeyError) as e:
                failures.append(f"{tag}: {type(e).__name__}: {e}")
                progress(f"etcd {tag} FAILED: {e}")
                continue
            run["leader"] = leader
            run["etcd_warnings"] = len(warnings)
            if warnings:
                run["etcd_warning_examples"] = warnings[:3]
            result["shapes"][shape].append(run)
            lat = (
                f", p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms" if run["p50_ms"] else ""
            )
            progress(
                f"etcd {tag}: {run['records_per_s']:,.0f} records/s{lat}, errors {run['errors']}"
                f", etcd warnings {len(warnings)}"
            )
            for w in warnings[:3]:
                progress(f"    {w}")
            if run["other_procs_cpu_s"] >= max(0.5, 0.05 * seconds):
                top = ", ".join(f"{o['cpu_s']} s {o['cmd'][:60]}" for o in run["other_procs"][:3])
                progress(
                    f"    other processes used {run['other_procs_cpu_s']:.1f} CPU s during this "
                    f"run: the machine is not idle, figures are skewed ({top})"
                )
    result["available"] = any(result["shapes"][s] for s in SHAPES)
    if failures:
        result["reason"] = "; ".join(failures)[:4000]
    return result


# ---------------------------------------------------------------------------- table


def _fmt_stat(vals: list[float], fmt: str) -> str:
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} [{format(min(vals), fmt)}-{format(max(vals), fmt)}]"


def format_table(result: dict[str, Any]) -> str:
    lines = [f"etcd {result['version']} (3 members on 127.0.0.1, JSON gateway POST {PUT_PATH})"]
    if not result["available"]:
        lines.append(f"etcd not available: {result['reason']}")
        return "\n".join(lines)
    lines.append(
        "median [min-max] over runs; CPU seconds over each measurement (loadgen: whole process;"
        " others: other userland processes, i.e. other work on this machine)"
    )
    rows: list[tuple[str, ...]] = [
        (
            "shape",
            "runs",
            "records/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "cpu leader",
            "cpu 2 foll.",
            "cpu loadgen",
            "cpu others",
            "warn",
        )
    ]
    for shape in SHAPES:
        runs: list[dict[str, Any]] = result["shapes"].get(shape, [])
        if not runs:
            rows.append((shape, "0", *(["-"] * 9)))
            continue
        lead = [r["cpu_s"][r["leader"]] for r in runs]
        foll = [
            sum(v for k, v in r["cpu_s"].items() if k not in (r["leader"], "loadgen")) for r in runs
        ]
        rows.append(
            (
                shape,
                str(len(runs)),
                _fmt_stat([r["records_per_s"] for r in runs], ",.0f"),
                _fmt_stat([r["p50_ms"] for r in runs if r["p50_ms"] is not None], ".2f"),
                _fmt_stat([r["p99_ms"] for r in runs if r["p99_ms"] is not None], ".2f"),
                str(sum(r["errors"] for r in runs)),
                _fmt_stat(lead, ".1f"),
                _fmt_stat(foll, ".1f"),
                _fmt_stat([r["cpu_s"]["loadgen"] for r in runs], ".1f"),
                _fmt_stat([r.get("other_procs_cpu_s", 0.0) for r in runs], ".1f"),
                str(sum(r.get("etcd_warnings", 0) for r in runs)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    one = result["shapes"].get("one_in_flight", [])
    per_req = [r["loadgen_cpu_us_per_req"] for r in one if r.get("loadgen_cpu_us_per_req")]
    if per_req:
        lines.append(
            f"one_in_flight generator CPU per request: {_fmt_stat(per_req, '.0f')} us "
            "(user+sys, incl. the kernel's loopback TCP work)"
        )
    floor = result.get("loadgen_floor")
    if floor:
        lines.append(
            f"same generator vs a canned-response server: p50 {floor['p50_ms']:.3f} ms, "
            f"p99 {floor['p99_ms']:.3f} ms (its overhead + loopback, at most)"
        )
    if result["reason"]:
        lines.append(f"failed runs: {result['reason']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    p.add_argument("--runs", type=int, default=3, help="runs (fresh clusters) per shape")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--keep", action="store_true", help="keep the work directory (etcd logs)")
    p.add_argument("--loadgen-seq", help=argparse.SUPPRESS)  # PORT:SECONDS, internal
    args = p.parse_args(argv)
    if args.loadgen_seq:
        port, secs = args.loadgen_seq.split(":")
        res = _seq_loadgen(int(port), float(secs), max_requests=10_000_000)
        print(json.dumps(res))
        return 0
    if not 0 < args.seconds <= 600 or not 1 <= args.runs <= 100:
        p.error("--seconds must be in (0, 600] and --runs in [1, 100]")
    root = Path(tempfile.mkdtemp(prefix=".bench-etcd-", dir=REPO)).resolve()
    t0 = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        result = etcd_compare(
            seconds=args.seconds, runs=args.runs, work_root=root, progress=progress
        )
    except KeyboardInterrupt:
        progress("interrupted (every etcd member and load generator was stopped)")
        return 130
    finally:
        if args.keep:
            progress(f"work directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["total_wall_s"] = time.monotonic() - t0
    table = format_table(result) + f"\ntotal wall time {result['total_wall_s']:.0f} s"
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result, indent=1))
    else:
        print(table)
    return 0 if result["available"] and not result["reason"] else 1


if __name__ == "__main__":
    sys.exit(main())
