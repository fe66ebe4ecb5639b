"""What processes and the machine used, read from Linux's /proc: CPU seconds, memory, disk
reads, busy time, and other processes' CPU (on a shared machine other work skews every figure).

Readers never raise for a process that is gone: they return None or an empty result, because
a node may exit between listing it and reading it. Only reading: nothing here signals anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
MEM_KEYS = ("VmRSS", "VmHWM")
MAX_PROCS = 100_000  # bound on the /proc scan


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live (or not yet reaped) process in seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_kib(pid: int, keys: Iterable[str] = MEM_KEYS) -> dict[str, int]:
    """Lines of /proc/PID/status in KiB (default VmRSS and VmHWM; RssAnon, RssFile ... on
    request); empty once the process is gone."""
    want = set(keys)
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in want:
                    out[key] = int(rest.split()[0])
    except OSError:
        return {}
    return out


def proc_read_bytes(pid: int | None) -> int | None:
    """Bytes the process caused to be read from the block device (/proc/PID/io): page-cache
    hits do not count, which is what a cold-versus-warm scan compares."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def system_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle+iowait)."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    return (sum(vals[:8]) - vals[3] - vals[4]) / CLK_TCK


def all_procs_cpu_s(*, userland_only: bool = False) -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds) of every process we can read. ``userland_only``
    leaves out kernel threads (no command line): kworkers also do a server's fsync and network
    work, so a comparison that charges the machine's rest to "other" may want them out."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc")[:MAX_PROCS]:
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read(400).replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if userland_only and not cmd:
            continue
        cpu = proc_cpu_s(pid)
        if cpu is not None:
            out[pid] = (cmd[:120] or f"[pid {pid}]", cpu)
    return out


def other_cpu(
    before: Mapping[int, tuple[str, float]],
    after: Mapping[int, tuple[str, float]],
    ours: set[int],
    *,
    min_cpu_s: float = 1.0,
    top: int = 8,
) -> list[dict[str, Any]]:
    """Processes not in ``ours`` that used >= ``min_cpu_s`` CPU seconds between two
    ``all_procs_cpu_s`` snapshots, busiest first (a process born meanwhile counts whole)."""
    rows: list[dict[str, Any]] = []
    for pid, (cmd, cpu) in after.items():
        if pid in ours:
            continue
        used = cpu - before[pid][1] if pid in before else cpu
        if used >= min_cpu_s:
            rows.append({"pid": pid, "cpu_s": round(used, 1), "cmd": cmd})
    return sorted(rows, key=lambda r: float(r["cpu_s"]), reverse=True)[:top]


def evict_page_cache(path: Path, *, sync: bool = False) -> int:
    """Drop the cached pages of every file under ``path`` (those files only, nothing else of
    the machine's cache); bytes covered. DONTNEED drops clean pages only: ``sync`` fdatasyncs
    each file first, for files written without a sync."""
    total = 0
    for p in path.rglob("*"):
        if not p.is_file():
            continue
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            if sync:
                os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total
