"""What the benchmark drivers (``bench.py``, ``bench_growth.py``) share around the process
harness: a bench cluster (``p2plog.testing.proc.ProcCluster`` named ``bench``, its credentials
registered for ``benchwire.Conn``), the run's anomalies and log scans, status polls and the
leader wait, percentiles, and the Ctrl-C/SIGTERM handling that still stops every node.

Importing it puts this checkout first on ``sys.path``, so the drivers measure the working tree.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
if str(REPO) not in sys.path:  # measure this checkout's p2plog, whatever is installed
    sys.path.insert(0, str(REPO))

from benchwire import SECURE, BenchFailed, RecordFactory, fetch_status  # noqa: E402

from p2plog.config import ClusterConfig  # noqa: E402
from p2plog.testing.proc import ProcCluster, Secured, all_procs_cpu_s, other_cpu  # noqa: E402

LEADER_WAIT_S = 20.0
STOP_WAIT_S = 15.0
POLL_S = 0.05
LOG_MARKERS = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def new_cluster(
    root: Path,
    tick_ms: int,
    log_level: str = "INFO",
    *,
    secure: bool = False,
    cluster_keys: dict[str, Any] | None = None,
    http: bool = False,
) -> ProcCluster:
    """A 3-node cluster named ``bench`` in ``root``, with election/heartbeat ticks at the
    node's defaults. ``secure``: TLS on every link, a cluster secret and an admin token, what
    ``benchwire.Conn`` then uses for its ports (``SECURE``). ``http``: every node serves its
    HTTP port (/metrics ...)."""
    d = ClusterConfig()
    keys = {"election_ticks": d.election_ticks, "heartbeat_ticks": d.heartbeat_ticks}
    cluster = ProcCluster(
        root,
        name="bench",
        tick_ms=tick_ms,
        cluster_keys={**keys, **(cluster_keys or {})},
        secured=Secured(tls=True, tokens={}) if secure else None,
        log_level=log_level,
        http=http,
    )
    creds = cluster.credentials
    if creds.ssl_context is not None:
        headers = [(b"authorization", f"Bearer {creds.token}".encode())] if creds.token else []
        for nid in cluster.nodes:
            SECURE[cluster.port(nid)] = (creds.ssl_context, headers)
    return cluster


def stop_cluster(cluster: ProcCluster) -> dict[str, dict[str, Any]]:
    """Stop every node by pid (outside ``trio.run``: after a run, also after an interrupt)."""
    try:
        return trio.run(cluster.stop_all, STOP_WAIT_S)
    finally:
        cluster.kill_all_nowait()


@dataclass
class Bench:
    """State of the whole bench; ``cluster`` is the current run's (a fresh one per run)."""

    factory: RecordFactory
    seconds: float
    max_records: int
    cluster: ProcCluster = field(init=False)
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
        progress(self.cluster.log_tails(25))

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


async def all_status(cluster: ProcCluster, nids: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def one(nid: str) -> None:
        out[nid] = await fetch_status(cluster.port(nid))

    async with trio.open_nursery() as nursery:
        for nid in nids or list(cluster.nodes):
            nursery.start_soon(one, nid)
    return out


async def wait_leader(
    cluster: ProcCluster, timeout_s: float = LEADER_WAIT_S, exclude: str | None = None
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


def fmt(v: Any, spec: str = "") -> str:
    """A figure for a table: ``-`` when it was not measured."""
    return "-" if v is None else format(v, spec)


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


def leaves(e: BaseException) -> Iterator[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        for x in e.exceptions:
            yield from leaves(x)
    else:
        yield e


def raise_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM acts as Ctrl-C: through the SIGINT handler in place (inside ``trio.run`` trio's,
    which raises KeyboardInterrupt only where trio's internals can take it)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not raise_interrupt:
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt(f"signal {signum}")
