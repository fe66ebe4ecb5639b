"""SegmentedLog under real storage faults (FAULTS.md section 7; cleanup rules of section 9).

- Power loss: ``EXT4_IOC_SHUTDOWN`` (NOLOGFLUSH) on a loop-mounted ext4 image drops everything
  that was not fsync'd; after a remount every synced entry must be back, identical, and
  whatever else survived must be a contiguous prefix of what was written. The hard state must
  be the newest one whose save returned (or the one in flight when the power went).
- ENOSPC: a small ext4 image really fills up. ``DiskFull`` leaves nothing of the batch on disk,
  reads keep working, and appends resume by themselves once space returns.
- fsync EIO / write ENOSPC: ``strace -e inject=...`` on a writer subprocess. A failed fsync
  poisons the store for good (fsyncgate); an injected ENOSPC on the write is retryable. The
  same injection probes the less travelled paths (segment roll, conflict truncation); the
  bugs found there are fixed and these tests keep them fixed.

Root (loop mounts, the shutdown ioctl) and strace are needed; without them the tests skip with
the reason. CI runs as root with the tools installed, so there they really run. Every loop is
bounded by count and time, every subprocess has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2plog.errors import DiskFull, StorageFailed
from p2plog.raft.types import Entry, HardState, Index, NodeId, Term
from p2plog.storage.segment import segment_name
from p2plog.storage.segmented_log import DEFAULT_SEGMENT_BYTES, SegmentedLog

try:  # tests/storage may or may not become a package
    from .fault_rig import (
        ext4_image,
        image_of,
        need_root_tools,
        need_strace,
        remount,
        shutdown_fs,
        unmount_leftovers,
    )
except ImportError:
    from fault_rig import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        ext4_image,
        image_of,
        need_root_tools,
        need_strace,
        remount,
        shutdown_fs,
        unmount_leftovers,
    )

__all__ = ["unmount_leftovers"]  # the session safety net is an autouse fixture of this module

REPO = Path(__file__).resolve().parents[2]
STRACE_TIMEOUT_S = 60.0
WRITER_DEADLINE_S = 10.0  # a healthy writer needs well under a second
THREAD_TIMEOUT_S = 20.0
FRAME_HEADER = 24  # frame.HEADER_SIZE


@pytest.fixture
def root_rig() -> None:
    reason = need_root_tools()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def strace_rig() -> None:
    reason = need_strace()
    if reason is not None:
        pytest.skip(reason)


# ---------------------------------------------------------------------- helpers


def make_batch(first: int, count: int, term: int, rng: random.Random, max_size: int) -> list[Entry]:
    return [
        Entry(Term(term), Index(first + k), rng.randbytes(rng.randint(0, max_size)))
        for k in range(count)
    ]


def read_all(log: SegmentedLog) -> list[Entry]:
    return log.entries(Index(1), Index(log.last_index() + 1), 1 << 40)


def drop_log(log: SegmentedLog) -> None:
    """Close a log whose file system may be shut down: EIO on close is expected and ignored,
    and every descriptor is released so the mount can go."""
    fds = [seg.fd for seg in log.segments]
    try:
        log.close()
    except OSError:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def opened(data_dir: Path, **kwargs: Any) -> Iterator[SegmentedLog]:
    log = SegmentedLog(data_dir, node="n1", **kwargs)
    try:
        yield log
    finally:
        drop_log(log)


def assert_prefix_of(got: list[Entry], written: list[Entry], synced: int) -> None:
    """Every synced entry is back and identical; the rest is a contiguous prefix."""
    assert len(got) >= synced, f"lost synced entries: {len(got)} on disk, {synced} were synced"
    assert len(got) <= len(written), f"{len(got)} entries on disk, only {len(written)} written"
    for have, want in zip(got, written, strict=False):
        assert have == want, f"entry {want.index} differs after power loss"


def run_in_thread(target: Any, *args: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target(*args)
        except BaseException as e:  # reported by the test, not lost in the thread
            errors.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, errors


def wait_for(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for the writer thread"
        time.sleep(0.001)


def append_until_failure(
    log: SegmentedLog,
    written: list[Entry],
    acked: list[int],
    power_off: threading.Event,
    seed: float,
) -> Exception:
    """Append synced batches until the store fails; returns the error that stopped it.
    ``written`` gets every attempted entry before its append; ``acked[0]`` counts the entries
    acknowledged before ``power_off``."""
    rng = random.Random(seed)
    deadline = time.monotonic() + THREAD_TIMEOUT_S
    while time.monotonic() < deadline:
        entries = make_batch(len(written) + 1, 4, 1, rng, 2000)
        written.extend(entries)
        try:
            log.append_batch(entries, None, sync=True)
        except StorageFailed as e:
            return e
        except OSError as e:
            # A bare EIO can escape while a roll creates the next segment (the bug that
            # test_segment_create_error_during_roll pins down); the power is gone either way.
            return e
        if not power_off.is_set():  # returned during the shutdown: indeterminate
            acked[0] = len(written)
    raise AssertionError("the writer never saw the power go")


def save_until_failure(
    log: SegmentedLog,
    acked: list[HardState],
    attempted: list[HardState],
    power_off: threading.Event,
) -> None:
    """Save ever newer hard states until the store fails (same bookkeeping as above)."""
    deadline = time.monotonic() + THREAD_TIMEOUT_S
    t = 0
    while time.monotonic() < deadline:
        t += 1
        hs = HardState(Term(t), NodeId(f"n{t % 3}") if t % 4 else None)
        attempted.append(hs)
        try:
            log.append_batch([], hs)
        except StorageFailed:
            return
        if not power_off.is_set():
            acked.append(hs)
    raise AssertionError("the saver never saw the power go")


# ------------------------------------------------------------------ the rig itself


def test_rig_power_loss_drops_unsynced_write(tmp_path: Path, root_rig: None) -> None:
    """FAULTS.md 7.3: the shutdown really loses un-fsync'd data (else the tests below prove
    nothing)."""
    with ext4_image(tmp_path, 16) as mnt:
        path = mnt / "f"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"A" * 4096)
            os.fsync(fd)
            dfd = os.open(mnt, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
            os.write(fd, b"B" * 4096)
            shutdown_fs(mnt)
            with pytest.raises(OSError, match="Input/output error"):
                os.fsync(fd)
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        remount(image_of(mnt), mnt)
        assert path.read_bytes() == b"A" * 4096


# ------------------------------------------------------------------- power loss


@pytest.mark.parametrize(
    "segment_bytes",
    [DEFAULT_SEGMENT_BYTES, 16 << 10],
    ids=["one-segment", "roll-in-unsynced-part"],
)
def test_power_loss_keeps_every_synced_entry(
    tmp_path: Path, root_rig: None, segment_bytes: int
) -> None:
    rng = random.Random(f"power-loss-{segment_bytes}")
    with ext4_image(tmp_path, 64) as mnt:
        data = mnt / "node"
        written: list[Entry] = []
        hs = HardState()
        with opened(data, segment_bytes=segment_bytes) as log:
            for b in range(6):
                hs = HardState(Term(b // 2 + 1), NodeId(f"n{b % 3}"))
                entries = make_batch(len(written) + 1, 8, hs.term, rng, 1000)
                log.append_batch(entries, hs, sync=True)
                written += entries
            synced = len(written)
            segments_before = len(log.segments)
            for b in range(16):
                new_hs = HardState(Term(hs.term + 1), None) if b % 5 == 0 else None
                hs = new_hs or hs
                entries = make_batch(len(written) + 1, 8, hs.term, rng, 1000)
                log.append_batch(entries, new_hs, sync=False)
                written += entries
            if segment_bytes < DEFAULT_SEGMENT_BYTES:
                assert len(log.segments) > segments_before, "no roll in the unsynced part"
            shutdown_fs(mnt)
            # The disk is gone for this process: the next write fails and poisons the store.
            with pytest.raises(StorageFailed, match="restart"):
                log.append_batch(make_batch(len(written) + 1, 2, hs.term, rng, 10), None)
            assert log.failed is not None
        remount(image_of(mnt), mnt)
        with opened(data, segment_bytes=segment_bytes) as log:
            got = read_all(log)
            assert_prefix_of(got, written, synced)
            assert log.first_index() == 1
            assert log.last_index() == len(got)
            assert all(log.term(e.index) == e.term for e in got)
            assert log.hard_state() == hs
            # The recovered log takes appends where it ends.
            more = make_batch(len(got) + 1, 3, hs.term, rng, 100)
            log.append_batch(more, None, sync=True)
            assert read_all(log) == got + more


def test_power_loss_mid_append_keeps_acked_batches(tmp_path: Path, root_rig: None) -> None:
    """Power goes while a writer thread is appending synced batches (rolling segments): every
    batch whose append returned before the power went is back after the remount; the rest is a
    contiguous prefix.

    An append that returns *while* the shutdown ioctl runs is not an ack: a real power loss
    leaves no process to see it, and ext4 can report such an fsync as done although it is lost
    (observed on 6.18 with O_TRUNC rewrites). So the power switch is an Event set first."""
    rng = random.Random("mid-append")
    with ext4_image(tmp_path, 64) as mnt:
        for round_ in range(3):
            data = mnt / f"node{round_}"
            written: list[Entry] = []
            acked = [0]
            power_off = threading.Event()

            with opened(data, segment_bytes=32 << 10) as log:
                log.append_batch([], HardState(Term(1), NodeId("n1")))
                thread, errors = run_in_thread(
                    append_until_failure, log, written, acked, power_off, rng.random()
                )
                target = rng.randint(5, 60)
                wait_for(lambda t=target, acked=acked: acked[0] >= 4 * t, THREAD_TIMEOUT_S)
                power_off.set()
                shutdown_fs(mnt)
                thread.join(THREAD_TIMEOUT_S)
                assert not thread.is_alive()
                assert not errors, errors
            remount(image_of(mnt), mnt)
            with opened(data, segment_bytes=32 << 10) as log:
                assert_prefix_of(read_all(log), written, acked[0])
                assert log.hard_state() == HardState(Term(1), NodeId("n1"))


def test_power_loss_after_hard_state_saves(tmp_path: Path, root_rig: None) -> None:
    """Hard states saved alternately into both meta slots: the newest one comes back."""
    with ext4_image(tmp_path, 16) as mnt:
        data = mnt / "node"
        last = HardState()
        with opened(data) as log:
            for i in range(1, 8):
                last = HardState(Term(i), NodeId("a") if i % 2 else None)
                log.append_batch([], last)
                if i == 3:  # entries in between must not matter
                    log.append_batch([Entry(Term(3), Index(1), b"x")], None, sync=True)
            shutdown_fs(mnt)
        remount(image_of(mnt), mnt)
        with opened(data) as log:
            assert log.hard_state() == last
            assert read_all(log) == [Entry(Term(3), Index(1), b"x")]


def test_power_loss_during_hard_state_write(tmp_path: Path, root_rig: None) -> None:
    """Power goes while a thread saves hard states in a loop: after the remount the hard state
    is the newest one acknowledged before the power went, or one whose save was in flight
    (its fsync may have completed); never an older one, never garbage, never Corruption. As in
    the test above, a save that returns while the shutdown ioctl runs is not an ack."""
    rng = random.Random("hard-state")
    with ext4_image(tmp_path, 16) as mnt:
        for round_ in range(4):
            data = mnt / f"node{round_}"
            acked: list[HardState] = []
            attempted: list[HardState] = []
            power_off = threading.Event()

            with opened(data) as log:
                thread, errors = run_in_thread(save_until_failure, log, acked, attempted, power_off)
                target = rng.randint(3, 40)
                wait_for(lambda t=target, acked=acked: len(acked) >= t, THREAD_TIMEOUT_S)
                power_off.set()
                shutdown_fs(mnt)
                thread.join(THREAD_TIMEOUT_S)
                assert not thread.is_alive()
                assert not errors, errors
            remount(image_of(mnt), mnt)
            with opened(data) as log:
                got = log.hard_state()
            possible = attempted[attempted.index(acked[-1]) :]
            assert got in possible, f"recovered {got}, last ack {acked[-1]}, tried {possible}"


# ------------------------------------------------------------------------ ENOSPC


@pytest.mark.parametrize(
    "segment_bytes", [DEFAULT_SEGMENT_BYTES, 256 << 10], ids=["one-segment", "rolling"]
)
def test_disk_full_then_space_returns(tmp_path: Path, root_rig: None, segment_bytes: int) -> None:
    rng = random.Random(f"enospc-{segment_bytes}")
    per_entry = (4 << 10) - FRAME_HEADER  # 16 frames = one 64 KiB batch

    def batch(first: int) -> list[Entry]:
        return [Entry(Term(1), Index(first + k), rng.randbytes(per_entry)) for k in range(16)]

    with ext4_image(tmp_path, 8) as mnt:
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"\xff" * (1 << 20))
            os.fsync(fd)
        finally:
            os.close(fd)
        data = mnt / "node"
        hs = HardState(Term(1), NodeId("n1"))
        written: list[Entry] = []
        with opened(data, segment_bytes=segment_bytes) as log:
            log.append_batch([], hs)
            failed: list[Entry] = []
            error: DiskFull | None = None
            for _ in range(256):  # 8 MB / 64 KiB = 128 at most
                entries = batch(len(written) + 1)
                try:
                    log.append_batch(entries, None, sync=True)
                except DiskFull as e:
                    failed, error = entries, e
                    break
                written += entries
            assert error is not None, "the 8 MB volume never filled up"
            assert len(written) > 16 * 32, "DiskFull long before the volume was full"
            msg = str(error)
            assert "no space left" in msg
            assert "free disk" in msg, f"no advice in {msg!r}"
            assert log.failed is None, "ENOSPC must not poison the store"

            # Reads keep working and show nothing of the failed batch.
            assert log.last_index() == len(written)
            assert read_all(log) == written
            assert all(os.stat(s.path).st_size == s.size for s in log.segments)
            snapshot = tmp_path / "snapshot"
            shutil.copytree(data, snapshot)
            with opened(snapshot, segment_bytes=segment_bytes) as copy:
                assert read_all(copy) == written, "the failed batch left frames on disk"

            # Space returns: the same batch, then more, go through without reopening.
            filler.unlink()
            log.append_batch(failed, None, sync=True)
            written += failed
            for _ in range(3):
                entries = batch(len(written) + 1)
                log.append_batch(entries, None, sync=True)
                written += entries
            assert read_all(log) == written
        remount(image_of(mnt), mnt)
        with opened(data, segment_bytes=segment_bytes) as log:
            assert read_all(log) == written
            assert log.hard_state() == hs


# ------------------------------------------------------------- strace injection

# A writer run under strace. Each step of the plan appends one synced batch of ``per_batch``
# entries at ``first`` (default: after the last entry) in ``term``, and reports the outcome and
# whether the log still reads back exactly what was acknowledged. JSON lines on stdout.
WRITER = r"""
import faulthandler, json, os, sys
from p2plog.raft.types import Entry, HardState, Index, NodeId, Term
from p2plog.storage.segmented_log import SegmentedLog

cfg = json.loads(sys.argv[1])
faulthandler.dump_traceback_later(cfg["deadline_s"], exit=True)  # a hang fails, with its stack

def emit(**kw):
    print(json.dumps(kw), flush=True)

def payload(term, i):
    return (f"t{term}-e{i}:".encode() * 200)[: cfg["size"]]

log = SegmentedLog(cfg["dir"], segment_bytes=cfg["segment_bytes"], node="w")
emit(event="open", last=log.last_index())
model = [(t, i) for t, i in cfg.get("existing", [])]
for b, step in enumerate(cfg["plan"]):
    first = step.get("first") or log.last_index() + 1
    term = step.get("term", 1)
    n = cfg["per_batch"]
    entries = [Entry(Term(term), Index(first + k), payload(term, first + k)) for k in range(n)]
    try:
        log.append_batch(entries, None, sync=True)
    except Exception as e:  # DiskFull, StorageFailed, or whatever else leaks out
        rec = {"result": type(e).__name__, "msg": str(e)}
    else:
        model = model[: first - 1] + [(term, first + k) for k in range(n)]
        rec = {"result": "ok"}
    try:
        got = log.entries(Index(1), Index(log.last_index() + 1), 1 << 40)
        same = [(e.term, e.index) for e in got] == model
        same = same and all(e.data == payload(e.term, e.index) for e in got)
        rec["reads"] = "ok" if same else "differ"
    except Exception as e:
        rec["reads"] = f"{type(e).__name__}: {e}"
    emit(event="append", batch=b, first=first, last=log.last_index(), **rec)
probes = (
    ("sync", log.sync),
    ("hard_state", lambda: log.append_batch([], HardState(Term(7), NodeId("x")))),
)
if log.failed is not None:
    for what, call in probes:
        try:
            call()
        except Exception as e:
            emit(event="probe", what=what, result=type(e).__name__, msg=str(e))
        else:
            emit(event="probe", what=what, result="ok")
log.close()
leaked = []
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target.startswith(cfg["dir"]):
        leaked.append(target)
emit(event="done", model=model, leaked=leaked)
"""
SIZE = 1000
PER_BATCH = 4
BATCH_BYTES = PER_BATCH * (FRAME_HEADER + SIZE)
SEGMENT_HEADER = 32
ROLL_AT_13 = SEGMENT_HEADER + 3 * BATCH_BYTES  # three batches fit; the fourth (index 13) rolls


def payload(term: int, i: int) -> bytes:
    return (f"t{term}-e{i}:".encode() * 200)[:SIZE]


def run_writer(
    tmp_path: Path,
    strace_args: list[str],
    data: Path,
    *,
    plan: list[dict[str, int]] | None = None,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
) -> list[dict[str, Any]]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    config = {
        "dir": str(data),
        "plan": plan if plan is not None else [{}] * 6,
        "per_batch": PER_BATCH,
        "size": SIZE,
        "segment_bytes": segment_bytes,
        "deadline_s": WRITER_DEADLINE_S,
    }
    cmd = ["strace", "-f", "-qq", "-o", "/dev/null", *strace_args]
    # Own process group: if strace is killed, its tracee would run on detached, so on a
    # timeout the whole group (strace and the writer, both started here) is killed.
    proc = subprocess.Popen(
        [*cmd, sys.executable, str(script), json.dumps(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=STRACE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"writer under strace timed out after {STRACE_TIMEOUT_S}s: {out}{err}")
    assert proc.returncode == 0, f"writer exited {proc.returncode}: {err}"
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert events, out + err
    assert events[-1]["event"] == "done", out + err
    assert events[-1]["leaked"] == [], "descriptors still open after close()"
    return events


def appends(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "append"]


def results(events: list[dict[str, Any]]) -> list[str]:
    return [e["result"] for e in appends(events)]


def probes(events: list[dict[str, Any]]) -> dict[str, str]:
    return {e["what"]: e["result"] for e in events if e["event"] == "probe"}


def on_disk(data: Path) -> list[list[int]]:
    """Reopen without strace: [term, index] of every entry, each checked to be the writer's."""
    with opened(data) as log:
        got = read_all(log)
    assert [e.index for e in got] == list(range(1, len(got) + 1))
    assert all(e.data == payload(e.term, e.index) for e in got)
    return [[e.term, e.index] for e in got]


def check_on_disk(data: Path, model: list[list[int]] | None = None, at_least: int = 0) -> None:
    """The entries are the writer's, contiguous, none twice; exactly ``model`` if given."""
    got = on_disk(data)
    assert len(got) >= at_least
    if model is not None:
        assert got == model


def describe(pairs: list[list[int]]) -> str:
    """[[1, 1], [1, 2], [2, 3]] -> 't1:1..2 t2:3'."""
    runs: list[list[int]] = []
    for term, index in pairs:
        if runs and runs[-1][0] == term and runs[-1][2] == index - 1:
            runs[-1][2] = index
        else:
            runs.append([term, index, index])
    return " ".join(f"t{t}:{a}..{b}" if a != b else f"t{t}:{a}" for t, a, b in runs) or "empty"


@pytest.mark.parametrize("err", ["EIO", "ENOSPC"])
def test_fsync_error_poisons_the_store(tmp_path: Path, strace_rig: None, err: str) -> None:
    """The third fdatasync fails: that append and every later one raise StorageFailed, even
    though the syscalls would succeed again (no retry-as-if-safe, fsyncgate). ENOSPC from
    fdatasync is just as fatal: the kernel may have dropped the pages."""
    data = tmp_path / "node"
    events = run_writer(
        tmp_path, ["-e", "trace=fdatasync", "-e", f"inject=fdatasync:error={err}:when=3"], data
    )
    assert results(events) == ["ok", "ok"] + ["StorageFailed"] * 4, events
    failures = [e for e in appends(events) if e["result"] == "StorageFailed"]
    first = failures[0]["msg"]
    assert "fdatasync" in first
    assert ("Input/output error" if err == "EIO" else "No space left") in first
    assert "restart" in first
    assert all(f["msg"] == first for f in failures), "later failures must repeat the cause"
    assert probes(events) == {"sync": "StorageFailed", "hard_state": "StorageFailed"}
    check_on_disk(data, at_least=8)  # batches 0 and 1 were synced


def test_write_enospc_is_retryable(tmp_path: Path, strace_rig: None) -> None:
    """The third pwrite to the segment gets ENOSPC: DiskFull, nothing of the batch is kept,
    reads still work, and the next append (same indexes) succeeds without reopening.

    The log writes entries with pwrite(2), so the injection targets pwrite64: a ``write``
    injection on the segment file would never fire (only segment headers use write(2); see
    the roll test below)."""
    data = tmp_path / "node"
    SegmentedLog(data, node="n1").close()  # the segment must exist for -P
    seg = data / "log" / segment_name(1)
    events = run_writer(
        tmp_path,
        ["-P", str(seg), "-e", "trace=pwrite64", "-e", "inject=pwrite64:error=ENOSPC:when=3"],
        data,
    )
    assert results(events) == ["ok", "ok", "DiskFull", "ok", "ok", "ok"], events
    steps = appends(events)
    assert steps[2]["first"] == steps[3]["first"] == 9, "the retry must reuse the indexes"
    assert all(e["reads"] == "ok" for e in steps), steps
    msg = steps[2]["msg"]
    assert "no space left" in msg
    assert "free disk" in msg
    assert not probes(events), "ENOSPC must not poison the store"
    check_on_disk(data, [[1, i] for i in range(1, 21)])


def enospc_creating_segment_13(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    data = tmp_path / "node"
    next_seg = data / "log" / segment_name(13)
    events = run_writer(
        tmp_path,
        ["-P", str(next_seg), "-e", "trace=write", "-e", "inject=write:error=ENOSPC:when=1"],
        data,
        segment_bytes=ROLL_AT_13,
    )
    return data, events


def test_enospc_creating_a_segment_is_retryable(tmp_path: Path, strace_rig: None) -> None:
    """ENOSPC on write(2) of the next segment's header during a roll: DiskFull, the open
    segment stays the open one, and the next append rolls for real."""
    data, events = enospc_creating_segment_13(tmp_path)
    assert results(events) == ["ok", "ok", "ok", "DiskFull", "ok", "ok"], events
    steps = appends(events)
    assert steps[3]["first"] == steps[4]["first"] == 13
    assert all(e["reads"] == "ok" for e in steps), steps
    assert "space returns" in steps[3]["msg"]
    check_on_disk(data, [[1, i] for i in range(1, 21)])
    assert sorted(p.name for p in (data / "log").glob("*.seg")) == [
        segment_name(1),
        segment_name(13),
    ]


def test_disk_full_from_a_roll_says_what_to_do(tmp_path: Path, strace_rig: None) -> None:
    _, events = enospc_creating_segment_13(tmp_path)
    msg = appends(events)[3]["msg"]
    assert "no space left" in msg
    assert "free disk" in msg, msg


# ------------------------------------------- I/O errors on the less travelled paths


def test_dir_fsync_error_during_roll_poisons_the_store(tmp_path: Path, strace_rig: None) -> None:
    """fsync of the log directory after creating segment 13 fails with EIO (the first dir
    fsync is the one at open): like any failed fsync it must poison the store."""
    data = tmp_path / "node"
    events = run_writer(
        tmp_path,
        ["-P", str(data / "log"), "-e", "trace=fsync", "-e", "inject=fsync:error=EIO:when=2"],
        data,
        segment_bytes=ROLL_AT_13,
    )
    assert results(events) == ["ok", "ok", "ok", "StorageFailed", "StorageFailed", "StorageFailed"]
    assert "restart" in appends(events)[3]["msg"]
    assert probes(events) == {"sync": "StorageFailed", "hard_state": "StorageFailed"}
    check_on_disk(data, at_least=12)


@pytest.mark.parametrize("err", ["ENOSPC", "EIO"])
def test_segment_create_error_during_roll(tmp_path: Path, strace_rig: None, err: str) -> None:
    data = tmp_path / "node"
    next_seg = data / "log" / segment_name(13)
    events = run_writer(
        tmp_path,
        ["-P", str(next_seg), "-e", "trace=openat", "-e", f"inject=openat:error={err}:when=1"],
        data,
        segment_bytes=ROLL_AT_13,
    )
    if err == "ENOSPC":
        assert results(events) == ["ok", "ok", "ok", "DiskFull", "ok", "ok"], events
        assert all(e["reads"] == "ok" for e in appends(events))
        check_on_disk(data, [[1, i] for i in range(1, 21)])
    else:
        assert results(events)[3:] == ["StorageFailed"] * 3, events
        assert probes(events) == {"sync": "StorageFailed", "hard_state": "StorageFailed"}


CONFLICT = {"first": 9, "term": 2}  # replaces entries 9..16 (term 1) from index 9


@pytest.mark.parametrize(
    ("syscall", "err", "plan"),
    [
        pytest.param("fsync", "EIO", [{}] * 4 + [CONFLICT, CONFLICT, {}], id="fsync-EIO"),
        pytest.param(
            "fsync",
            "ENOSPC",
            [{}] * 4 + [CONFLICT, CONFLICT, {}],
            id="fsync-ENOSPC-retry",
        ),
        pytest.param(
            "fsync",
            "ENOSPC",
            [{}] * 4 + [CONFLICT, {}, {}],
            id="fsync-ENOSPC-then-append",
        ),
        pytest.param(
            "ftruncate",
            "ENOSPC",
            [{}] * 4 + [CONFLICT, CONFLICT, {}],
            id="ftruncate-ENOSPC-retry",
        ),
    ],
)
def test_error_while_truncating_a_conflict(
    tmp_path: Path, strace_rig: None, syscall: str, err: str, plan: list[dict[str, int]]
) -> None:
    """A conflicting append (Raft 5.3) truncates entries 9..16 first; the truncation's
    ftruncate/fsync fails. Either the store is poisoned (StorageFailed from then on), or the
    failure is a DiskFull that changed nothing: reads stay exactly what was acknowledged,
    later appends work, and after a reopen every acknowledged entry is there."""
    data = tmp_path / "node"
    seg = data / "log" / segment_name(1)
    when = 2 if syscall == "fsync" else 1  # the first fsync of the segment is its header's
    events = run_writer(
        tmp_path,
        [
            "-P",
            str(seg),
            "-e",
            f"trace={syscall}",
            "-e",
            f"inject={syscall}:error={err}:when={when}",
        ],
        data,
        plan=plan,
    )
    steps = appends(events)
    assert [s["result"] for s in steps[:4]] == ["ok"] * 4
    failed = steps[4]
    assert failed["result"] in ("StorageFailed", "DiskFull"), failed
    if failed["result"] == "StorageFailed":
        assert all(s["result"] == "StorageFailed" for s in steps[5:]), steps
        check_on_disk(data, at_least=8)
        return
    problems = [
        f"batch {s['batch']} at {s['first']}: {s['result']}, reads {s['reads']}"
        for s in steps[4:]
        if s["reads"] != "ok" or (s is not failed and s["result"] != "ok")
    ]
    acked, got = events[-1]["model"], on_disk(data)
    if got != acked:
        problems.append(f"after reopen: {describe(got)}; acknowledged: {describe(acked)}")
    assert not problems, "\n".join(problems)
