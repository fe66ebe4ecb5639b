"""Benchmark p2plog's durable log (``SegmentedLog``) against the disk's raw fdatasync.

    python scripts/bench_storage.py                           # 3 s per config, 1 GiB open test
    python scripts/bench_storage.py --seconds 1 --open-gib 0  # quick: skip the open test
    python scripts/bench_storage.py --open-gib 0.25 --json    # one JSON object on stdout
    python scripts/bench_storage.py --dir /mnt/other          # measure another filesystem

With 200-byte entries (224 bytes on disk with the frame header) it reports:

- ``append_batch(entries, hard_state, sync=True)`` at batch sizes 1, 64 and 1024: entries/s,
  MB/s (payload and on-disk bytes), fsyncs per entry, batch latency p50/p99/max, CPU per entry.
  Rates are over the time spent inside ``append_batch`` (building the ``Entry`` objects is not
  counted); each config stops after ``--seconds`` or ``--max-entries``, whichever comes first.
- The baseline: a plain loop of ``os.write`` (200 B) + ``os.fdatasync`` on one growing file in
  the same directory, and the ratio p2plog batch-1 syncs/s / plain-loop syncs/s (near 1.0 means
  the disk, not Python, is the limit at batch 1).
- Open (recovery) time of a ~``--open-gib`` GiB log (64 MiB segments, built with batches of
  1024 without per-batch sync, one sync at the end), 3 runs each with a warm and a cold page
  cache (the log's files are evicted with ``posix_fadvise(DONTNEED)``, nothing system-wide),
  for two shapes: the open segment full (worst case: recovery scans all of it) and just rolled
  (sealed segments only, read through their sidecar indexes). RSS growth from /proc VmRSS.

All files live in a fresh directory (``mkdtemp`` under ``--dir``, default the current
directory) that is removed at the end, on Ctrl-C and on SIGTERM too. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from p2plog.raft.types import Entry, HardState, Index, Term
from p2plog.storage import frame
from p2plog.storage.segment import HEADER_SIZE as SEGMENT_HEADER_SIZE
from p2plog.storage.segmented_log import DEFAULT_SEGMENT_BYTES, SegmentedLog
from p2plog.testing.proc import evict_page_cache, proc_mem_kib

ENTRY_BYTES = 200
FRAME_BYTES = frame.HEADER_SIZE + ENTRY_BYTES
BATCH_SIZES = (1, 64, 1024)
BUILD_BATCH = 1024
OPEN_RUNS = 3
GIB = 1 << 30
MIB = 1 << 20
MB = 1e6
TERM = Term(1)
HARD_STATE = HardState(TERM, None)


def log_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- measurements


@dataclass
class Latency:
    """Per-call latency in microseconds."""

    count: int
    p50_us: float
    p99_us: float
    max_us: float

    @classmethod
    def of(cls, seconds: list[float]) -> Latency:
        xs = sorted(seconds)

        def pick(q: float) -> float:
            return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))] * 1e6

        return cls(len(xs), pick(0.50), pick(0.99), xs[-1] * 1e6)


@dataclass
class BaselineResult:
    syncs: int
    busy_s: float
    syncs_per_s: float
    cpu_us_per_sync: float
    latency: Latency


@dataclass
class AppendResult:
    batch: int
    batches: int
    entries: int
    busy_s: float
    entries_per_s: float
    payload_mb_per_s: float
    disk_mb_per_s: float
    fsyncs: int
    fsyncs_per_entry: float
    syncs_per_s: float
    segments_rolled: int
    cpu_us_per_entry: float
    cpu_fraction: float
    latency: Latency
    stopped_by: str


@dataclass
class OpenRun:
    seconds: float
    rss_increase_mib: float
    peak_rss_increase_mib: float | None


@dataclass
class OpenCase:
    shape: str
    segments: int
    open_segment_bytes: int
    warm: list[OpenRun] = field(default_factory=list)
    cold: list[OpenRun] = field(default_factory=list)


@dataclass
class OpenResult:
    target_gib: float
    entries: int
    log_bytes: int
    segment_bytes: int
    build_s: float
    build_entries_per_s: float
    cases: list[OpenCase] = field(default_factory=list)


# ---------------------------------------------------------------------------- helpers


def rss_bytes() -> int:
    """Current resident set size (VmRSS of /proc/self/status)."""
    return _status_kib("VmRSS") * 1024


def _status_kib(key: str) -> int:
    got = proc_mem_kib(os.getpid(), (key,))
    if key not in got:
        raise RuntimeError(f"no {key} in /proc/self/status")
    return got[key]


def reset_peak_rss() -> bool:
    """Reset VmHWM (Linux >= 4.0: write 5 to /proc/self/clear_refs); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def filesystem_of(path: Path) -> str:
    """'ext4 on /dev/vda' for the mount holding ``path``, from /proc/self/mountinfo."""
    real = str(path.resolve())
    best, desc = "", "unknown filesystem"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount_point = left.split()[4]
                prefix = mount_point.rstrip("/") + "/"
                if (real == mount_point or real.startswith(prefix)) and len(mount_point) > len(
                    best
                ):
                    fstype, source = right.split()[:2]
                    best, desc = mount_point, f"{fstype} on {source}"
    except OSError:
        pass
    return desc


def make_batch(first: int, count: int, payload: bytes) -> list[Entry]:
    return [Entry(TERM, Index(i), payload) for i in range(first, first + count)]


class Cleanup:
    """Logs to close and the work directory to remove, whatever happens."""

    def __init__(self) -> None:
        self.logs: list[SegmentedLog] = []
        self.root: Path | None = None

    def open_log(self, directory: Path, **kwargs: Any) -> SegmentedLog:
        lg = SegmentedLog(directory, node="bench", **kwargs)
        self.logs.append(lg)
        return lg

    def close_log(self, lg: SegmentedLog) -> None:
        lg.close()
        self.logs.remove(lg)

    def run(self) -> None:
        for lg in self.logs:
            with contextlib.suppress(OSError):
                lg.close()
        self.logs.clear()
        if self.root is not None and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
            log_progress(f"removed {self.root}")


# ---------------------------------------------------------------------------- benchmarks


def bench_baseline(directory: Path, seconds: float, max_syncs: int) -> BaselineResult:
    """A plain loop: os.write 200 bytes to one growing file + os.fdatasync, one call timed."""
    payload = os.urandom(ENTRY_BYTES)
    path = directory / "plain.dat"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lat: list[float] = []
    try:
        os.fsync(fd)
        cpu = 0.0
        deadline = time.perf_counter() + seconds
        while len(lat) < max_syncs:
            c0 = time.process_time()
            t0 = time.perf_counter()
            os.write(fd, payload)
            os.fdatasync(fd)
            t1 = time.perf_counter()
            cpu += time.process_time() - c0
            lat.append(t1 - t0)
            if t1 >= deadline:
                break
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    busy = sum(lat)
    return BaselineResult(len(lat), busy, len(lat) / busy, cpu / len(lat) * 1e6, Latency.of(lat))


def bench_append(
    cleanup: Cleanup, directory: Path, batch: int, seconds: float, max_entries: int
) -> AppendResult:
    """append_batch(batch entries, hard state unchanged, sync=True) in a loop."""
    payload = os.urandom(ENTRY_BYTES)
    lg = cleanup.open_log(directory)
    try:
        lg.append_batch([], HARD_STATE, sync=True)  # the runtime's hard state, saved once
        nxt = lg.last_index() + 1
        for _ in range(3):  # warm-up: first frames of the segment, not measured
            lg.append_batch(make_batch(nxt, batch, payload), HARD_STATE, sync=True)
            nxt += batch
        max_batches = max(1, max_entries // batch)
        fsyncs0, bytes0, segs0 = lg.fsyncs, lg.bytes_written, len(lg.segments)
        lat: list[float] = []
        cpu = 0.0
        stopped_by = "max-entries"
        deadline = time.perf_counter() + seconds
        while len(lat) < max_batches:
            entries = make_batch(nxt, batch, payload)
            c0 = time.process_time()
            t0 = time.perf_counter()
            lg.append_batch(entries, HARD_STATE, sync=True)
            t1 = time.perf_counter()
            cpu += time.process_time() - c0
            lat.append(t1 - t0)
            nxt += batch
            if t1 >= deadline:
                stopped_by = "time"
                break
        n = len(lat) * batch
        busy = sum(lat)
        fsyncs = lg.fsyncs - fsyncs0
        disk_bytes = lg.bytes_written - bytes0
        return AppendResult(
            batch=batch,
            batches=len(lat),
            entries=n,
            busy_s=busy,
            entries_per_s=n / busy,
            payload_mb_per_s=n * ENTRY_BYTES / MB / busy,
            disk_mb_per_s=disk_bytes / MB / busy,
            fsyncs=fsyncs,
            fsyncs_per_entry=fsyncs / n,
            syncs_per_s=fsyncs / busy,
            segments_rolled=len(lg.segments) - segs0,
            cpu_us_per_entry=cpu / n * 1e6,
            cpu_fraction=cpu / busy,
            latency=Latency.of(lat),
            stopped_by=stopped_by,
        )
    finally:
        cleanup.close_log(lg)
        shutil.rmtree(directory, ignore_errors=True)


def open_entry_count(target_bytes: int, segment_bytes: int) -> int:
    """Entries for ~target_bytes whose last (open) segment is full: the slowest to recover.

    A segment rolls when the next batch does not fit, so the builder's segments hold a whole
    number of its batches. Rounds to a whole number of such segments (within half a segment of
    the target); a target under half a segment is used as is.
    """
    per_segment = (segment_bytes - SEGMENT_HEADER_SIZE) // (FRAME_BYTES * BUILD_BATCH) * BUILD_BATCH
    want = max(1, target_bytes // FRAME_BYTES)
    if want < per_segment // 2:
        return want
    return max(1, round(want / per_segment)) * per_segment


def time_opens(cleanup: Cleanup, directory: Path, expect_last: int, case: OpenCase) -> None:
    for cache in ("warm", "cold"):
        runs = case.warm if cache == "warm" else case.cold
        for i in range(OPEN_RUNS):
            if cache == "cold":
                evict_page_cache(directory, sync=True)  # the .idx sidecars are unsynced
            gc.collect()
            have_peak = reset_peak_rss()
            rss0 = rss_bytes()
            t0 = time.perf_counter()
            lg = cleanup.open_log(directory)
            dt = time.perf_counter() - t0
            rss1 = rss_bytes()
            peak = (_status_kib("VmHWM") * 1024 - rss0) / MIB if have_peak else None
            try:
                if lg.last_index() != expect_last:
                    raise RuntimeError(
                        f"reopened log ends at {lg.last_index()}, expected {expect_last}"
                    )
            finally:
                cleanup.close_log(lg)
            del lg
            runs.append(OpenRun(dt, (rss1 - rss0) / MIB, peak))
            log_progress(f"  open, {case.shape}, {cache} cache, run {i + 1}: {dt:.3f} s")


def bench_open(cleanup: Cleanup, directory: Path, gib: float) -> OpenResult:
    """Build a ~gib GiB log, time SegmentedLog(dir) 3x warm and 3x cold, for two shapes."""
    segment_bytes = DEFAULT_SEGMENT_BYTES
    n = open_entry_count(int(gib * GIB), segment_bytes)
    payload = os.urandom(ENTRY_BYTES)
    log_progress(f"building a {n * FRAME_BYTES / GIB:.3f} GiB log ({n:,} entries) ...")
    lg = cleanup.open_log(directory)
    try:
        t0 = time.perf_counter()
        lg.append_batch([], HARD_STATE, sync=True)
        nxt = 1
        step = max(1, n // 10)
        next_report = step
        while nxt <= n:
            count = min(BUILD_BATCH, n - nxt + 1)
            lg.append_batch(make_batch(nxt, count, payload), None, sync=False)
            nxt += count
            if nxt > next_report:
                log_progress(f"  {nxt - 1:,} / {n:,} entries")
                next_report += step
        lg.sync()
        build_s = time.perf_counter() - t0
        log_bytes = lg.total_bytes
        full = OpenCase("open segment full", len(lg.segments), lg.segments[-1].size)
    finally:
        cleanup.close_log(lg)
    del lg
    result = OpenResult(gib, n, log_bytes, segment_bytes, build_s, n / build_s)
    time_opens(cleanup, directory, n, full)
    result.cases.append(full)

    # Roll the open segment with one batch that does not fit in it: now every segment but a
    # small open one is sealed (read through its sidecar index, not scanned).
    lg = cleanup.open_log(directory)
    try:
        extra = (segment_bytes - lg.segments[-1].size) // FRAME_BYTES + 1
        lg.append_batch(make_batch(n + 1, extra, payload), None, sync=True)
        rolled = OpenCase("just rolled", len(lg.segments), lg.segments[-1].size)
    finally:
        cleanup.close_log(lg)
    del lg
    if rolled.segments > full.segments:
        time_opens(cleanup, directory, n + extra, rolled)
        result.cases.append(rolled)
    return result


# ---------------------------------------------------------------------------- output


def print_table(
    info: dict[str, Any],
    baseline: BaselineResult,
    appends: list[AppendResult],
    ratio: float,
    opened: OpenResult | None,
) -> None:
    print(
        f"p2plog storage benchmark: {ENTRY_BYTES}-byte entries ({FRAME_BYTES} B on disk), "
        f"{info['seconds']:g} s per config (max {info['max_entries']:,} entries)"
    )
    print(f"dir {info['dir']} ({info['filesystem']}); Python {info['python']}, {info['cpus']} CPUs")
    print()
    head = (
        f"{'batch':>6} {'entries/s':>11} {'MB/s pay':>9} {'MB/s disk':>9} {'fsync/ent':>10} "
        f"{'syncs/s':>8} {'p50 us':>9} {'p99 us':>9} {'max us':>9} {'CPU us/ent':>10} "
        f"{'CPU %':>6} {'batches':>8}"
    )
    print("append_batch(..., sync=True), one call = one batch")
    print(head)
    print("-" * len(head))
    for r in appends:
        print(
            f"{r.batch:>6} {r.entries_per_s:>11,.0f} {r.payload_mb_per_s:>9.2f} "
            f"{r.disk_mb_per_s:>9.2f} {r.fsyncs_per_entry:>10.5f} {r.syncs_per_s:>8,.0f} "
            f"{r.latency.p50_us:>9,.0f} {r.latency.p99_us:>9,.0f} {r.latency.max_us:>9,.0f} "
            f"{r.cpu_us_per_entry:>10.2f} {r.cpu_fraction * 100:>6.0f} {r.batches:>8,}"
        )
    b = baseline
    print(
        f"{'plain':>6} {b.syncs_per_s:>11,.0f} {b.syncs_per_s * ENTRY_BYTES / MB:>9.2f} "
        f"{b.syncs_per_s * ENTRY_BYTES / MB:>9.2f} {1.0:>10.5f} {b.syncs_per_s:>8,.0f} "
        f"{b.latency.p50_us:>9,.0f} {b.latency.p99_us:>9,.0f} {b.latency.max_us:>9,.0f} "
        f"{b.cpu_us_per_sync:>10.2f} {b.cpu_us_per_sync * b.syncs_per_s / 1e4:>6.0f} "
        f"{b.syncs:>8,}"
    )
    print("  (plain = os.write 200 B + os.fdatasync on one growing file in the same directory)")
    rolled = ", ".join(f"batch {r.batch}: {r.segments_rolled}" for r in appends)
    print(f"  segments rolled during the runs: {rolled}; rates are over time in the call")
    print()
    one = appends[0]
    print(
        f"batch-1 syncs/s / plain syncs/s = {one.syncs_per_s:,.0f} / {b.syncs_per_s:,.0f} = "
        f"{ratio:.2f}   (p50 {one.latency.p50_us:,.0f} vs {b.latency.p50_us:,.0f} us)"
    )
    if opened is None:
        print("\nopen (recovery) test skipped (--open-gib 0)")
        return
    o = opened
    print()
    print(
        f"open (recovery): {o.log_bytes / GIB:.3f} GiB log, {o.entries:,} entries, "
        f"{o.segment_bytes // MIB} MiB segments; built in {o.build_s:.1f} s "
        f"({o.build_entries_per_s:,.0f} entries/s, batches of {BUILD_BATCH}, one sync at end)"
    )
    head2 = (
        f"{'shape':<18} {'segs':>4} {'open seg':>9} {'cache':<5} "
        f"{'run 1 s':>8} {'run 2 s':>8} {'run 3 s':>8}   {'RSS +MiB per run':<20} "
        f"{'peak +MiB per run':<20}"
    )
    print(head2)
    print("-" * len(head2))
    for c in o.cases:
        for cache, runs in (("warm", c.warm), ("cold", c.cold)):
            secs = " ".join(f"{r.seconds:>8.3f}" for r in runs)
            rss = ", ".join(f"{r.rss_increase_mib:.1f}" for r in runs)
            peak = ", ".join(
                "-" if r.peak_rss_increase_mib is None else f"{r.peak_rss_increase_mib:.1f}"
                for r in runs
            )
            print(
                f"{c.shape:<18} {c.segments:>4} {c.open_segment_bytes / MIB:>5.1f} MiB "
                f"{cache:<5} {secs}   {rss:<20} {peak:<20}"
            )
    print(
        "  (cold = the log's files evicted with posix_fadvise(DONTNEED) before each open; "
        "RSS from VmRSS, peak from VmHWM)"
    )


# ---------------------------------------------------------------------------- main


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--dir",
        type=Path,
        default=Path.cwd(),
        help="where to create the fresh work directory (removed at the end); default: .",
    )
    p.add_argument("--seconds", type=float, default=3.0, help="time per config (default 3)")
    p.add_argument(
        "--max-entries",
        type=int,
        default=2_000_000,
        help="entry cap per append config (plain loop: syncs); default 2,000,000",
    )
    p.add_argument(
        "--open-gib",
        type=float,
        default=1.0,
        help="size of the log for the open test in GiB; 0 skips it (default 1.0)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    a = p.parse_args()
    if a.seconds <= 0 or a.max_entries < 1 or a.open_gib < 0:
        p.error("--seconds and --max-entries must be positive, --open-gib >= 0")
    if not a.dir.is_dir():
        p.error(f"--dir {a.dir}: not a directory")

    open_bytes = int(a.open_gib * GIB)
    append_cap = min(a.max_entries, 1 << 40) * FRAME_BYTES
    need = max(3 * open_bytes, 2 * append_cap)
    free = shutil.disk_usage(a.dir).free
    if free < need:
        print(
            f"refusing to run: {free / GIB:.2f} GiB free on the filesystem of {a.dir}, but this "
            f"run needs {need / GIB:.2f} GiB (3x the {a.open_gib:g} GiB open test, and 2x the "
            f"{append_cap / GIB:.2f} GiB an append config may write). Use a smaller --open-gib "
            f"(0 skips the open test), a smaller --max-entries, or --dir on a larger disk.",
            file=sys.stderr,
        )
        return 2

    signal.signal(signal.SIGTERM, _raise_interrupt)
    cleanup = Cleanup()
    try:
        root = Path(tempfile.mkdtemp(prefix=".bench_storage-", dir=a.dir)).resolve()
        cleanup.root = root
        info: dict[str, Any] = {
            "dir": str(root),
            "filesystem": filesystem_of(root),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "seconds": a.seconds,
            "max_entries": a.max_entries,
            "entry_bytes": ENTRY_BYTES,
            "frame_bytes": FRAME_BYTES,
        }
        log_progress(f"work directory {root} ({info['filesystem']}), {free / GIB:.1f} GiB free")
        log_progress("plain os.write + os.fdatasync loop ...")
        baseline = bench_baseline(root, a.seconds, a.max_entries)
        appends: list[AppendResult] = []
        for batch in BATCH_SIZES:
            log_progress(f"append_batch, batch {batch} ...")
            appends.append(
                bench_append(cleanup, root / f"append-{batch}", batch, a.seconds, a.max_entries)
            )
        ratio = appends[0].syncs_per_s / baseline.syncs_per_s
        opened: OpenResult | None = None
        if a.open_gib > 0:
            open_dir = root / "open"
            try:
                opened = bench_open(cleanup, open_dir, a.open_gib)
            finally:
                shutil.rmtree(open_dir, ignore_errors=True)
    except KeyboardInterrupt:
        log_progress("interrupted; cleaning up")
        return 130
    finally:
        cleanup.run()

    if a.json:
        out = {
            "info": info,
            "baseline_plain_fdatasync": asdict(baseline),
            "append": [asdict(r) for r in appends],
            "batch1_syncs_per_s_over_plain": ratio,
            "open": asdict(opened) if opened is not None else None,
        }
        print(json.dumps(out, indent=2))
    else:
        print_table(info, baseline, appends, ratio, opened)
    return 0


if __name__ == "__main__":
    sys.exit(main())
