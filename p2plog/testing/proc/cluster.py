"""N ``python -m p2plog run`` processes of one ``peers.toml`` on 127.0.0.1: the process harness of
the multi-process tests and of every script that starts nodes.

Invariants (FAULTS.md section 9):

- a node is signalled only by the pid of a process started here and not yet reaped (a zombie
  keeps its pid, so the pid cannot have been reused meanwhile); never by name;
- the processes are reaped here, with ``wait4`` (``NodeProc.poll``), so the CPU time of an
  incarnation that crashed or was killed is kept (``cpu_s``); nobody else waits on them;
- every wait is bounded: ``wait_exit`` under ``fail_after``; ``stop_all`` is SIGTERM, a bounded
  wait, SIGKILL, and SIGKILL again in a ``finally`` so an interrupt leaves no orphan;
- each node appends stdout and stderr to its own log file in ``root``, with a marker line per
  start, so a failure can show what every node said;
- the nodes run the p2plog this module was imported from (its checkout first on PYTHONPATH),
  so a test or a benchmark measures the working tree, whatever else is installed.

Reaching the nodes (status, waiting for a leader) is the caller's: the tests use a raw client
written apart from ``p2plog.client``, the benchmarks their load generators.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import trio

from p2plog.testing.ports import HOST, free_ports
from p2plog.testing.proc.peers import (
    Credentials,
    NodeEntry,
    Secured,
    Security,
    TomlValue,
    make_security,
    write_peers_toml,
)
from p2plog.testing.proc.usage import MEM_KEYS, proc_cpu_s, proc_mem_kib

STOP_TIMEOUT_S = 5.0
KILL_TIMEOUT_S = 5.0
REAP_POLL_S = 0.01
LOG_TAIL_LINES = 60
LOST_EXIT_CODE = -999  # the process was reaped by someone else: its exit code is unknown
DOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGINT})
CHECKOUT = Path(__file__).resolve().parents[3]  # the directory holding this p2plog package


@dataclass(slots=True, eq=False)
class NodeProc:
    """One node across its incarnations (restarts keep the port, data dir and log file)."""

    id: str
    port: int
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    cpu_earlier_s: float = 0.0  # CPU seconds of the incarnations that exited
    expect_down: bool = False  # told to stop: its exit is no crash
    log_pos: int = 0  # how far ``new_log_lines`` has read
    _reap_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.poll() is None

    def poll(self) -> int | None:
        """The exit code of the current incarnation if it exited (reaped now), else None.

        ``wait4`` keeps its rusage; Popen's own ``poll``/``wait`` would reap without it. The
        lock makes this safe from a worker thread (a benchmark may wait in one)."""
        p = self.popen
        if p is None:
            return None
        with self._reap_lock:
            if p.returncode is not None:
                return p.returncode
            try:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            except ChildProcessError:
                p.returncode = LOST_EXIT_CODE
            else:
                if pid == 0:
                    return None
                p.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_earlier_s += ru.ru_utime + ru.ru_stime
            self.exit_codes.append(p.returncode)
            return p.returncode

    def send_signal(self, sig: int) -> bool:
        """Signal the current incarnation by pid unless it was reaped; whether it was sent.
        Under the reap lock, so the pid cannot be reaped (and reused) in between."""
        p = self.popen
        if p is None or self.poll() is not None:
            return False
        with self._reap_lock:
            if p.returncode is not None:
                return False
            if sig in DOWN_SIGNALS:
                self.expect_down = True
            os.kill(p.pid, sig)
            return True

    def cpu_s(self) -> float:
        """CPU seconds of every incarnation so far."""
        pid = self.pid
        now = proc_cpu_s(pid) if pid is not None and self.alive else None
        return self.cpu_earlier_s + (now or 0.0)

    def mem_kib(self, keys: Iterable[str] = MEM_KEYS) -> dict[str, int]:
        pid = self.pid
        return proc_mem_kib(pid, keys) if pid is not None and self.alive else {}


class ProcCluster:
    """Nodes ``n1`` .. ``nN`` of one ``peers.toml`` in ``root``, each a process of its own;
    see the module docstring. Subclasses change a node's command or environment with
    ``node_command`` and ``node_env``."""

    def __init__(
        self,
        root: Path,
        *,
        n: int = 3,
        name: str = "local",
        tick_ms: int = 20,
        cluster_keys: Mapping[str, TomlValue] | None = None,
        sections: Sequence[str] = (),
        secured: Secured | None = None,
        log_level: str = "INFO",
        joining: int = 0,
        http: bool = False,
    ) -> None:
        """``joining``: how many of the ``n`` nodes (the last ones) are marked ``join``: not
        in the bootstrap configuration, to be added with ``member add``."""
        self.root = root
        self.joining = {f"n{i}" for i in range(n - joining + 1, n + 1)}
        # Each node's HTTP port (``http``: every node serves /metrics, /healthz, /readyz).
        self.http_ports: dict[str, int] = {}
        self.name = name
        self.tick_ms = tick_ms
        self.log_level = log_level
        self.nodes: dict[str, NodeProc] = {}
        ports = free_ports(2 * n if http else n)  # at once, so no two are the same
        for i, port in enumerate(ports[:n], start=1):
            nid = f"n{i}"
            self.nodes[nid] = NodeProc(nid, port, root / "data" / nid, root / f"{nid}.log")
        if http:
            self.http_ports = dict(zip(self.nodes, ports[n:], strict=True))
        self.security = make_security(root, self.nodes, secured) if secured else Security()
        self.cluster_keys: dict[str, TomlValue] = {
            "name": name,
            "tick_ms": tick_ms,
            **(cluster_keys or {}),
        }
        self.config_path = self.write_config(root / "peers.toml", sections)

    def write_config(self, path: Path, sections: Sequence[str] = ()) -> Path:
        """A ``peers.toml`` of this cluster at ``path``: its ``[cluster]`` keys, its security
        sections, then ``sections`` (``[ntp]`` ...); a node may be given its own."""
        nodes = [
            NodeEntry(
                nd.id,
                f"{HOST}:{nd.port}",
                nd.data_dir,
                nd.id in self.joining,
                f"{HOST}:{self.http_ports[nd.id]}" if nd.id in self.http_ports else None,
            )
            for nd in self.nodes.values()
        ]
        return write_peers_toml(
            path, self.cluster_keys, nodes, [*self.security.sections, *sections]
        )

    @property
    def ids(self) -> list[str]:
        return list(self.nodes)

    @property
    def tokens(self) -> dict[str, str]:
        """Client tokens by name (``admin`` included) on a cluster with tokens."""
        return self.security.tokens

    @property
    def credentials(self) -> Credentials:
        """How the harness reaches the nodes: TLS context and admin token, if secured."""
        return self.security.admin

    def port(self, nid: str) -> int:
        return self.nodes[nid].port

    def pid(self, nid: str) -> int | None:
        return self.nodes[nid].pid

    def live(self) -> list[str]:
        return [k for k, nd in self.nodes.items() if nd.alive]

    def addresses(self, nids: Iterable[str] | None = None) -> list[str]:
        return [f"{HOST}:{self.nodes[n].port}" for n in (self.nodes if nids is None else nids)]

    # ------------------------------------------------------------- processes

    def node_command(self, nid: str) -> list[str]:
        """The command line of node ``nid``."""
        cmd = [sys.executable, "-m", "p2plog", "run", "--config", str(self.config_path)]
        return [*cmd, "--node", nid, "--log-level", self.log_level]

    def node_env(self, nid: str) -> dict[str, str]:
        """The environment of node ``nid``: ours, unbuffered, this checkout first."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH")) if p)
        return env

    async def start(self, nid: str) -> None:
        """Start an incarnation of ``nid`` (it must not be running); returns once it runs."""
        nd = self.nodes[nid]
        assert not nd.alive, f"{nid} is already running (pid {nd.pid})"
        nd.starts += 1
        with nd.log_path.open("ab") as log:
            log.write(f"===== harness: start #{nd.starts} of {nid} at {time.ctime()}\n".encode())
            log.flush()  # before the child writes to its copy of the descriptor
            popen = await trio.to_thread.run_sync(self._spawn, nid, log)
        nd.popen = popen
        nd.pids.append(popen.pid)
        nd.expect_down = False

    def _spawn(self, nid: str, log: BinaryIO) -> subprocess.Popen[bytes]:
        """Fork and exec one node (in a worker thread: exec may block on a loaded machine)."""
        return subprocess.Popen(
            self.node_command(nid),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=self.node_env(nid),
            start_new_session=True,  # a Ctrl-C reaches the harness only; it stops the nodes
        )

    async def start_all(self) -> None:
        """Start every node not marked ``join`` (those wait to be started by the test)."""
        for nid in self.nodes:
            if nid not in self.joining:
                await self.start(nid)

    def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to that node's pid (no wait; see ``wait_exit``)."""
        nd = self.nodes[nid]
        assert nd.popen is not None, f"{nid} was never started"
        nd.send_signal(sig)

    async def wait_exit(self, nid: str, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """The exit code of ``nid`` once it exited; ``trio.TooSlowError`` after ``timeout_s``."""
        nd = self.nodes[nid]
        assert nd.popen is not None, f"{nid} was never started"
        with trio.fail_after(timeout_s):
            for _ in range(int(timeout_s / REAP_POLL_S) + 2):  # bounded by count and time
                code = nd.poll()
                if code is not None:
                    return code
                await trio.sleep(REAP_POLL_S)
        raise trio.TooSlowError

    async def restart(self, nid: str) -> None:
        """Start ``nid`` again with the same data dir (SIGKILL first if it still runs)."""
        if self.nodes[nid].alive:
            self.kill(nid, signal.SIGKILL)
            await self.wait_exit(nid, KILL_TIMEOUT_S)
        await self.start(nid)

    async def stop_all(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, dict[str, Any]]:
        """Teardown: SIGTERM (and SIGCONT, a node may be stopped) every running node by pid,
        wait up to ``timeout_s``, SIGKILL the rest; per node its exit code and stop time.

        Shielded: it runs in ``finally`` blocks, often while the caller's scope is being
        cancelled; unshielded, the first wait would raise ``Cancelled`` and leave orphans."""
        out: dict[str, dict[str, Any]] = {}
        with trio.CancelScope(shield=True):
            running = [nd for nd in self.nodes.values() if nd.alive]
            t0 = time.monotonic()
            try:
                for nd in running:
                    nd.send_signal(signal.SIGTERM)
                    nd.send_signal(signal.SIGCONT)
                with trio.move_on_after(timeout_s):
                    for nd in running:
                        code = await self._reaped(nd, timeout_s)
                        out[nd.id] = {"exit_code": code, "stop_s": round(time.monotonic() - t0, 2)}
                for nd in running:
                    if nd.id in out:
                        continue
                    code = nd.poll()
                    if code is not None:  # exited after the wait ran out for it
                        out[nd.id] = {"exit_code": code, "stop_s": round(time.monotonic() - t0, 2)}
                    else:
                        nd.send_signal(signal.SIGKILL)
                        out[nd.id] = {"exit_code": None, "killed": True}
                with trio.move_on_after(KILL_TIMEOUT_S):
                    for nd in running:
                        await self._reaped(nd, KILL_TIMEOUT_S)
            finally:
                self.kill_all_nowait()  # an interrupt on the way must leave no node running
        return out

    async def _reaped(self, nd: NodeProc, timeout_s: float) -> int | None:
        """Poll ``nd`` until it exited; bounded by count (callers add a time bound)."""
        for _ in range(int(timeout_s / REAP_POLL_S) + 2):
            code = nd.poll()
            if code is not None:
                return code
            await trio.sleep(REAP_POLL_S)
        return None

    def kill_all_nowait(self) -> None:
        """SIGKILL every node still running, now, without waiting."""
        for nd in self.nodes.values():
            nd.send_signal(signal.SIGKILL)

    def dead(self) -> list[str]:
        """Nodes that exited without being told to, with their exit codes."""
        return [
            f"{nd.id} (pid {nd.pid}) exited with code {code}"
            for nd in self.nodes.values()
            if nd.popen is not None and not nd.expect_down and (code := nd.poll()) is not None
        ]

    # ----------------------------------------------------------- resources

    def cpu_s(self, nid: str) -> float:
        return self.nodes[nid].cpu_s()

    def live_cpu_s(self) -> dict[str, float | None]:
        """CPU seconds of the current incarnations (for deltas over a window)."""
        return {
            nid: None if nd.pid is None else proc_cpu_s(nd.pid) for nid, nd in self.nodes.items()
        }

    def mem(self, nid: str, keys: Iterable[str] = MEM_KEYS) -> dict[str, int]:
        return self.nodes[nid].mem_kib(keys)

    def all_pids(self) -> set[int]:
        return {pid for nd in self.nodes.values() for pid in nd.pids}

    # ----------------------------------------------------------------- logs

    def logs(self, nid: str) -> str:
        p = self.nodes[nid].log_path
        return p.read_text(errors="replace") if p.exists() else ""

    def log_tail(self, nid: str, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.logs(nid).splitlines()[-lines:])

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(
            f"----- {nid} log ({nd.log_path}), last {lines} lines -----\n"
            + self.log_tail(nid, lines)
            for nid, nd in self.nodes.items()
        )

    def new_log_lines(self, nid: str) -> list[str]:
        """The lines ``nid`` logged since the last call."""
        nd = self.nodes[nid]
        try:
            with open(nd.log_path, "rb") as f:
                f.seek(nd.log_pos)
                data = f.read()
        except OSError:
            return []
        nd.log_pos += len(data)
        return data.decode(errors="replace").splitlines()
