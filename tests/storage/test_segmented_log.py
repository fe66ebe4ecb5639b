"""SegmentedLog on real files: reads across segments, byte caps, terms, group commit, suffix
truncation, reopen, tail cache vs disk, disk budget, StorageFailed poisoning and retention."""

from __future__ import annotations

import contextlib
import errno
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from p2plog.errors import DiskFull, StorageFailed
from p2plog.raft.types import Entry, HardState, Index, NodeId, Term
from p2plog.storage import segment as segment_mod
from p2plog.storage import segmented_log as seglog_mod
from p2plog.storage.segment import HEADER_SIZE as SEG_HEADER
from p2plog.storage.segmented_log import SegmentedLog

from .logdata import PAYLOAD, SEG, ent, keep_snapshot, read_all, run, seg_files

FRAME = 24  # frame header bytes
# PAYLOAD = 100 (logdata): 124-byte frames: 32 per 4096-byte segment (32 + 32 * 124 = 4000)
PER_SEG = (SEG - SEG_HEADER) // (FRAME + PAYLOAD)


def disk_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in seg_files(d))


def reopen(log: SegmentedLog, opener: Callable[..., SegmentedLog], **kw: object) -> SegmentedLog:
    log.close()
    return opener(**kw)


def random_log(rng: random.Random, n: int) -> list[Entry]:
    """``n`` entries with payloads of 0..300 bytes and non-decreasing terms."""
    out = []
    term = 1
    for i in range(1, n + 1):
        if rng.random() < 0.05:
            term += rng.randint(1, 3)
        out.append(ent(term, i, rng.randbytes(rng.choice([0, 1, 7, 50, 100, 299, 300]))))
    return out


def append_in_batches(log: SegmentedLog, entries: list[Entry], rng: random.Random) -> None:
    i = 0
    while i < len(entries):
        k = rng.randint(1, 20)
        log.append_batch(entries[i : i + k], None)
        i += k


def check_entries(log: SegmentedLog, model: list[Entry], lo: int, hi: int, cap: int) -> None:
    """Byte-capped read: contiguous from lo, >= 1 entry, within cap (unless one entry is larger)
    and greedy (the next entry would not have fit)."""
    out = log.entries(Index(lo), Index(hi), cap)
    if lo == hi:
        assert out == []
        return
    assert out, (lo, hi, cap)
    assert out == model[lo - 1 : lo - 1 + len(out)], (lo, hi, cap)
    assert [e.index for e in out] == list(range(lo, lo + len(out)))
    size = sum(len(e.data) for e in out)
    assert size <= cap or len(out) == 1, (lo, hi, cap, size)
    if lo + len(out) < hi:
        nxt = model[lo - 1 + len(out)]
        assert size + len(nxt.data) > cap, (lo, hi, cap, "stopped early")


# ------------------------------------------------------------------ reads, terms, reopen


def test_fresh_log(opened: Callable[..., SegmentedLog], tmp_path: Path) -> None:
    log = opened()
    assert (log.first_index(), log.last_index()) == (1, 0)
    assert log.term(Index(0)) == 0
    assert log.entries(Index(1), Index(1), 100) == []
    assert log.hard_state() == HardState()
    assert [p.name for p in seg_files(tmp_path)] == ["00000000000000000001.seg"]
    assert log.total_bytes == disk_bytes(tmp_path) == SEG_HEADER
    log = reopen(log, opened)
    assert (log.first_index(), log.last_index()) == (1, 0)


def test_append_and_read_back_across_many_segments(
    opened: Callable[..., SegmentedLog], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment_mod, "SPARSE_BYTES", 512)  # exercise the sparse index
    rng = random.Random(1)
    model = random_log(rng, 1500)
    log = opened()
    append_in_batches(log, model, rng)
    assert len(log.segments) > 20
    assert read_all(log) == model
    assert log.total_bytes == disk_bytes(tmp_path)
    # Files are named by first index; sealed ones have a sidecar, the open one does not.
    for seg in log.segments:
        assert seg.path.name == f"{seg.first_index:020d}.seg"
        assert seg.idx_path.exists() == (seg is not log.segments[-1])
    firsts = [s.first_index for s in log.segments]
    log = reopen(log, opened)
    assert [s.first_index for s in log.segments] == firsts
    assert read_all(log) == model
    assert log.total_bytes == disk_bytes(tmp_path)


def test_byte_capped_entries(
    opened: Callable[..., SegmentedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment_mod, "SPARSE_BYTES", 300)
    monkeypatch.setattr(seglog_mod, "TAIL_CACHE_BYTES", 3000)  # part tail, mostly disk
    rng = random.Random(2)
    model = random_log(rng, 600)
    log = opened()
    append_in_batches(log, model, rng)
    last = len(model)
    queries = [(1, last + 1, 1 << 30), (1, last + 1, 0), (last, last + 1, 0), (1, 1, 10)]
    for _ in range(400):
        lo = rng.randint(1, last + 1)
        hi = rng.randint(lo, last + 1)
        queries.append((lo, hi, rng.choice([0, 1, 99, 300, 301, 1000, 5000, 50_000])))
    for q in queries:
        check_entries(log, model, *q)
    log = reopen(log, opened)
    for q in queries:
        check_entries(log, model, *q)


def test_term_across_segments_and_after_reopen(opened: Callable[..., SegmentedLog]) -> None:
    log = opened()
    model: list[Entry] = []
    # Term changes inside segments, exactly at a segment boundary and one entry past it.
    changes = {1: 1, 10: 2, PER_SEG + 1: 3, 2 * PER_SEG + 2: 4, 2 * PER_SEG + 3: 7, 150: 9}
    term = 0
    for i in range(1, 200):
        term = changes.get(i, term)
        model.append(ent(term, i))
    for i in range(0, len(model), 8):  # batches never straddle segments; 8 divides 32
        log.append_batch(model[i : i + 8], None)
    assert log.segments[1].first_index == PER_SEG + 1
    want = [0] + [e.term for e in model]
    assert [log.term(Index(i)) for i in range(len(want))] == want
    log = reopen(log, opened)
    assert [log.term(Index(i)) for i in range(len(want))] == want


def test_reopen_keeps_everything_and_hard_state(
    opened: Callable[..., SegmentedLog], tmp_path: Path
) -> None:
    log = opened()
    hs = HardState(Term(3), NodeId("node-b"))
    log.append_batch(run(1, 100, term=3), hs)
    assert log.hard_state() == hs
    sizes = {p.name: p.stat().st_size for p in seg_files(tmp_path)}
    log = reopen(log, opened)
    assert log.hard_state() == hs
    assert read_all(log) == run(1, 100, term=3)
    assert {p.name: p.stat().st_size for p in seg_files(tmp_path)} == sizes
    # Appending after a reopen continues the same files and indexes.
    log.append_batch(run(101, 50, term=4), HardState(Term(4), None))
    log = reopen(log, opened)
    assert read_all(log) == run(1, 100, term=3) + run(101, 50, term=4)
    assert log.hard_state() == HardState(Term(4), None)


def test_unsynced_append_then_sync(opened: Callable[..., SegmentedLog]) -> None:
    log = opened(segment_bytes=1 << 20)
    before = log.fsyncs
    log.append_batch(run(1, 10), None, sync=False)
    assert log.fsyncs == before
    assert read_all(log) == run(1, 10)
    log.sync()
    assert log.fsyncs == before + 1
    log = reopen(log, opened)
    assert read_all(log) == run(1, 10)


def test_tail_cache_and_disk_give_identical_entries(
    opened: Callable[..., SegmentedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seglog_mod, "TAIL_CACHE_BYTES", 2500)
    rng = random.Random(3)
    model = random_log(rng, 400)
    writer = opened()
    append_in_batches(writer, model, rng)
    assert writer.tail
    assert writer.tail[0].index > 1  # the cache holds only the newest entries
    reader = opened()  # a second instance reads the same files from disk
    assert not reader.tail
    last = len(model) + 1
    for _ in range(300):
        lo = rng.randint(1, last)
        hi = rng.randint(lo, last)
        cap = rng.choice([0, 100, 1000, 1 << 30])
        assert writer.entries(Index(lo), Index(hi), cap) == reader.entries(
            Index(lo), Index(hi), cap
        )
    assert [writer.term(Index(i)) for i in range(last)] == [
        reader.term(Index(i)) for i in range(last)
    ]


def test_reads_with_tiny_read_chunks(
    opened: Callable[..., SegmentedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames that straddle the scanner's read chunks (recovery scan and reads)."""
    rng = random.Random(4)
    model = random_log(rng, 300)
    log = opened(segment_bytes=1 << 20)
    append_in_batches(log, model, rng)
    log.close()
    monkeypatch.setattr(segment_mod, "READ_CHUNK", 37)
    log = opened(segment_bytes=1 << 20)
    assert read_all(log) == model
    for lo in range(1, 301, 13):
        check_entries(log, model, lo, 301, 777)


# ------------------------------------------------------------------ group commit


class SyncCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fdatasync = 0
        self.fsync = 0
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def fdatasync(fd: int) -> None:
            self.fdatasync += 1
            real_fdatasync(fd)

        def fsync(fd: int) -> None:
            self.fsync += 1
            real_fsync(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("n", [1, 64, 1024])
def test_one_fdatasync_per_batch(
    opened: Callable[..., SegmentedLog], monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    log = opened(segment_bytes=64 << 20)
    hs = HardState(Term(1), NodeId("a"))
    log.append_batch(run(1, 5), hs)
    counter = SyncCounter(monkeypatch)
    nxt = 6
    for batch in range(3):
        before = log.fsyncs
        # Unchanged hard state: passed again, or None.
        log.append_batch(run(nxt, n), hs if batch % 2 else None)
        nxt += n
        assert log.fsyncs == before + 1
    assert (counter.fdatasync, counter.fsync) == (3, 0)
    assert log.last_index() == 5 + 3 * n


def test_hard_state_change_costs_one_more_fsync(
    opened: Callable[..., SegmentedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = opened(segment_bytes=64 << 20)
    log.append_batch(run(1, 1), HardState(Term(1), None))  # both meta files exist afterwards
    log.append_batch(run(2, 1), HardState(Term(1), NodeId("x")))
    counter = SyncCounter(monkeypatch)
    before = log.fsyncs
    log.append_batch(run(3, 10, term=2), HardState(Term(2), None))
    assert log.fsyncs == before + 2
    assert (counter.fdatasync, counter.fsync) == (1, 1)
    # A hard state alone: one fsync of a meta file, no data sync.
    log.append_batch([], HardState(Term(3), NodeId("y")))
    assert log.fsyncs == before + 3
    assert (counter.fdatasync, counter.fsync) == (1, 2)


# ------------------------------------------------------------------ suffix truncation


def _truncation_point(log: SegmentedLog, where: str) -> int:
    segs = log.segments
    return {
        "open": segs[-1].first_index + 5,
        "open_last_entry": segs[-1].last_index,
        "open_boundary": segs[-1].first_index,
        "sealed_boundary": segs[2].first_index,
        "sealed": segs[1].first_index + 7,
        "sealed_last_entry": segs[1].last_index,
        "everything": 1,
    }[where]


@pytest.mark.parametrize(
    "where",
    [
        "open",
        "open_last_entry",
        "open_boundary",
        "sealed_boundary",
        "sealed",
        "sealed_last_entry",
        "everything",
    ],
)
@pytest.mark.parametrize("via", ["truncate_suffix", "append_batch"])
@pytest.mark.parametrize("reopened", [False, True])
def test_truncate_suffix_then_append_and_reopen(
    opened: Callable[..., SegmentedLog], tmp_path: Path, where: str, via: str, reopened: bool
) -> None:
    log = opened()
    model = run(1, 5 * PER_SEG + 10)
    for i in range(0, len(model), PER_SEG):  # one batch per segment: they roll between
        log.append_batch(model[i : i + PER_SEG], None)
    assert len(log.segments) == 6
    if reopened:  # sealed segments come from their .idx, opened read-only
        log = reopen(log, opened)
    t = _truncation_point(log, where)
    new = run(t, 70, term=2)
    if via == "truncate_suffix":
        log.truncate_suffix(Index(t))
        assert log.last_index() == t - 1
        assert read_all(log) == model[: t - 1]
        assert log.total_bytes == disk_bytes(tmp_path)
        # Segments after the cut are gone, and the now-open segment has no sidecar.
        assert all(p.name <= f"{t:020d}.seg" for p in seg_files(tmp_path))
        assert not log.segments[-1].idx_path.exists()
        assert log.term(Index(t - 1)) == (1 if t > 1 else 0)
        log.append_batch(new, None)
    else:
        log.append_batch(new, HardState(Term(2), None))
    want = model[: t - 1] + new
    assert read_all(log) == want
    assert log.total_bytes == disk_bytes(tmp_path)
    assert [log.term(Index(i)) for i in range(len(want) + 1)] == [0] + [e.term for e in want]
    log = reopen(log, opened)
    assert read_all(log) == want
    assert [log.term(Index(i)) for i in range(len(want) + 1)] == [0] + [e.term for e in want]
    assert log.total_bytes == disk_bytes(tmp_path)
    log.append_batch(run(len(want) + 1, 40, term=3), None)
    log = reopen(log, opened)
    assert read_all(log) == want + run(len(want) + 1, 40, term=3)


def test_truncate_keeps_the_tail_cache_consistent(
    opened: Callable[..., SegmentedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seglog_mod, "TAIL_CACHE_BYTES", 1000)
    log = opened()
    log.append_batch(run(1, 100), None)
    for t, term in [(95, 2), (60, 3), (65, 4), (2, 5)]:
        log.append_batch(run(t, 10, term=term), None)
        want = read_all(log)
        assert [e.index for e in want] == list(range(1, t + 10))
        assert want[-10:] == run(t, 10, term=term)
        assert log.term(Index(t + 9)) == term
        assert log.term(Index(t - 1)) != term
    other = opened()
    assert read_all(other) == read_all(log)


# ------------------------------------------------------------------ disk budget


def test_disk_budget_refuses_a_batch_and_leaves_nothing(
    opened: Callable[..., SegmentedLog], tmp_path: Path
) -> None:
    budget = SEG_HEADER + 10 * (FRAME + PAYLOAD) + 50
    log = opened(segment_bytes=1 << 20, budget_bytes=budget)
    for i in range(1, 11):
        log.append_batch([ent(1, i)], None)
    size = disk_bytes(tmp_path)
    with pytest.raises(DiskFull) as exc:
        log.append_batch(run(11, 2), None)
    msg = str(exc.value)
    assert str(budget) in msg
    assert "raise the budget or lower retention" in msg
    # Reads keep working, nothing of the batch is visible, the store is not poisoned.
    assert log.failed is None
    assert log.last_index() == 10
    assert read_all(log) == run(1, 10)
    assert disk_bytes(tmp_path) == size == log.total_bytes
    # Retrying without space still fails the same way.
    with pytest.raises(DiskFull):
        log.append_batch(run(11, 1), None)
    log = reopen(log, opened, segment_bytes=1 << 20, budget_bytes=budget)
    assert log.last_index() == 10
    assert read_all(log) == run(1, 10)
    assert disk_bytes(tmp_path) == size
    # More budget on reopen: the same batch now goes through.
    log = reopen(log, opened, segment_bytes=1 << 20, budget_bytes=budget * 2)
    log.append_batch(run(11, 2), None)
    assert read_all(log) == run(1, 12)


def fill_until_full(log: SegmentedLog) -> int:
    """Append single entries until DiskFull; returns the index that did not fit."""
    while True:
        nxt = log.last_index() + 1
        try:
            log.append_batch([ent(1, nxt)], None)
        except DiskFull:
            return nxt


def test_retention_frees_budget_and_appends_resume(opened: Callable[..., SegmentedLog]) -> None:
    budget = 4 * SEG
    log = opened(budget_bytes=budget)
    stuck = fill_until_full(log)
    assert log.last_index() == stuck - 1
    assert log.total_bytes <= budget
    keep_snapshot(log, 2 * PER_SEG + 1)
    assert log.apply_retention(below=Index(2 * PER_SEG + 1), max_bytes=2 * SEG) >= 1
    log.append_batch([ent(1, stuck)], None)
    # And remove_before works as well.
    fill_until_full(log)
    keep_snapshot(log, log.segments[-1].first_index)
    assert log.remove_before(Index(log.segments[-1].first_index)) >= 1
    n = log.last_index()
    log.append_batch(run(n + 1, 5), None)
    log = reopen(log, opened, budget_bytes=budget)
    assert log.last_index() == n + 5
    assert read_all(log) == run(log.first_index(), n + 5 - log.first_index() + 1)


def test_budget_is_never_exceeded_by_a_segment_roll(opened: Callable[..., SegmentedLog]) -> None:
    # The first segment is full at 4000 bytes; the 33rd frame (124 bytes) rolls. A budget of
    # exactly 4000 + 124 admits the frame, then the roll adds the new segment's header.
    budget = SEG_HEADER + (PER_SEG + 1) * (FRAME + PAYLOAD)
    log = opened(budget_bytes=budget)
    for i in range(1, PER_SEG + 1):
        log.append_batch([ent(1, i)], None)
    with contextlib.suppress(DiskFull):
        log.append_batch([ent(1, PER_SEG + 1)], None)
    assert log.total_bytes <= budget


# ------------------------------------------------------------------ StorageFailed


def test_fsync_error_poisons_the_store(
    opened: Callable[..., SegmentedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = opened()
    log.append_batch(run(1, 5), HardState(Term(1), None))
    real = os.fdatasync
    calls = {"n": 0}

    def failing_once(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", failing_once)
    with pytest.raises(StorageFailed) as exc:
        log.append_batch(run(6, 3), None)
    assert "restart" in str(exc.value)
    assert log.failed is not None
    assert "restart" in log.failed
    # fdatasync works again, but the store refuses every later write without trying.
    for attempt in (
        lambda: log.append_batch(run(9, 1), None),
        lambda: log.append_batch([], HardState(Term(2), None)),
        lambda: log.append_batch(run(6, 1, term=2), None),
        log.sync,
    ):
        with pytest.raises(StorageFailed) as exc:
            attempt()
        assert "restart" in str(exc.value)
    assert calls["n"] == 1
    assert log.hard_state() == HardState(Term(1), None)
    assert read_all(log)[:5] == run(1, 5)  # reads keep working
    # A restart re-reads what is on disk and accepts writes again.
    log = reopen(log, opened)
    assert log.failed is None
    assert read_all(log)[:5] == run(1, 5)
    n = log.last_index()
    log.append_batch(run(n + 1, 2), None)
    assert log.last_index() == n + 2


def test_fsync_error_on_segment_roll_poisons(
    opened: Callable[..., SegmentedLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = opened()
    log.append_batch(run(1, PER_SEG), None)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(StorageFailed):
        log.append_batch(run(PER_SEG + 1, 1), None)  # rolls: fdatasync of the full segment
    monkeypatch.undo()
    with pytest.raises(StorageFailed):
        log.append_batch(run(PER_SEG + 1, 1), None)
    assert read_all(log) == run(1, PER_SEG)


# ------------------------------------------------------------------ retention


def _build(log: SegmentedLog, n_segments: int, extra: int = 5) -> list[Entry]:
    """Entries with a new term in each segment, so prev_term differs per segment."""
    model = [ent(1 + (i - 1) // PER_SEG, i) for i in range(1, n_segments * PER_SEG + extra + 1)]
    for i in range(0, len(model), PER_SEG):
        log.append_batch(model[i : i + PER_SEG], None)
    assert len(log.segments) == n_segments + (1 if extra else 0)
    return model


@pytest.mark.parametrize(
    "cut", [1, 2, PER_SEG, PER_SEG + 1, PER_SEG + 2, 3 * PER_SEG + 1, 5 * PER_SEG, 10**6]
)
def test_remove_before(opened: Callable[..., SegmentedLog], tmp_path: Path, cut: int) -> None:
    log = opened()
    model = _build(log, 5)
    before = [(s.first_index, s.last_index) for s in log.segments]
    keep_snapshot(log, cut)
    removed = log.remove_before(Index(cut))
    # Exactly the sealed segments whose entries are all strictly below the cut.
    gone = [b for b in before[:-1] if b[1] < cut]
    assert removed == len(gone)
    assert [(s.first_index, s.last_index) for s in log.segments] == before[len(gone) :]
    assert log.segments[-1].first_index == before[-1][0]  # never the open segment
    first = log.first_index()
    for f, _ in gone:
        assert not (tmp_path / "log" / f"{f:020d}.seg").exists()
        assert not (tmp_path / "log" / f"{f:020d}.idx").exists()
    assert log.total_bytes == disk_bytes(tmp_path)
    assert read_all(log) == model[first - 1 :]
    # term(first_index - 1) still answers, from the header's prev_term.
    want_prev = model[first - 2].term if first > 1 else 0
    assert log.term(Index(first - 1)) == want_prev
    log = reopen(log, opened)
    assert log.first_index() == first
    assert log.term(Index(first - 1)) == want_prev
    assert read_all(log) == model[first - 1 :]
    # Appends and truncation still work after removal.
    log.append_batch(run(log.last_index() + 1, 3, term=20), None)
    log.truncate_suffix(Index(log.last_index()))
    assert log.last_index() == len(model) + 2


def test_remove_before_with_an_empty_open_segment(opened: Callable[..., SegmentedLog]) -> None:
    log = opened()
    model = _build(log, 3)
    log.truncate_suffix(log.segments[-1].first_index)  # the open segment is now empty
    last = log.last_index()
    keep_snapshot(log, last + 1)
    assert log.remove_before(Index(last + 1)) == 3
    assert (log.first_index(), log.last_index()) == (last + 1, last)
    assert log.term(Index(last)) == model[last - 1].term
    assert log.entries(Index(last + 1), Index(last + 1), 10) == []
    log = reopen(log, opened)
    assert (log.first_index(), log.last_index()) == (last + 1, last)
    assert log.term(Index(last)) == model[last - 1].term
    log.append_batch(run(last + 1, 3, term=9), None)
    assert read_all(log) == run(last + 1, 3, term=9)


def test_apply_retention_by_bytes(opened: Callable[..., SegmentedLog], tmp_path: Path) -> None:
    log = opened()
    model = _build(log, 6)
    keep_snapshot(log, log.last_index() + 1)  # retention cuts only behind a snapshot
    sizes = [s.size for s in log.segments]
    total = log.total_bytes
    # Nothing over the limit: nothing removed.
    assert log.apply_retention(below=Index(10**6), max_bytes=total) == 0
    # Over by one byte: exactly the oldest segment goes.
    assert log.apply_retention(below=Index(10**6), max_bytes=total - 1) == 1
    assert log.first_index() == PER_SEG + 1
    # 'below' (the applied index) stops it, however much is over.
    assert log.apply_retention(below=Index(3 * PER_SEG), max_bytes=0) == 1
    assert log.first_index() == 2 * PER_SEG + 1
    # Down to a limit: removes oldest-first until the log fits, never the open segment.
    assert log.apply_retention(below=Index(10**6), max_bytes=sizes[-1] + sizes[-2]) == 3
    assert len(log.segments) == 2
    assert log.apply_retention(below=Index(10**6), max_bytes=0) == 1
    assert len(log.segments) == 1
    assert log.apply_retention(below=Index(10**6), max_bytes=0) == 0
    assert log.total_bytes == disk_bytes(tmp_path)
    assert read_all(log) == model[log.first_index() - 1 :]


def test_apply_retention_by_age(opened: Callable[..., SegmentedLog]) -> None:
    log = opened()
    model = _build(log, 5)
    keep_snapshot(log, log.last_index() + 1)
    now = 1_000_000.0
    ages = [5000, 4000, 100, 3000, 2000, 0]  # the 3rd segment is young
    for seg, age in zip(log.segments, ages, strict=True):
        os.utime(seg.path, (now - age, now - age))
    assert log.apply_retention(below=Index(10**6), max_age_s=6000, now=now) == 0
    # Oldest-first, and it stops at the first segment that is young enough.
    assert log.apply_retention(below=Index(10**6), max_age_s=1000, now=now) == 2
    assert log.first_index() == 2 * PER_SEG + 1
    assert log.apply_retention(below=Index(10**6), max_age_s=50, now=now) == 3
    assert len(log.segments) == 1  # the open segment is never removed, however old
    assert log.term(Index(log.first_index() - 1)) == model[log.first_index() - 2].term


def test_apply_retention_by_age_respects_below(opened: Callable[..., SegmentedLog]) -> None:
    log = opened()
    _build(log, 4)
    keep_snapshot(log, log.last_index() + 1)
    for seg in log.segments:
        os.utime(seg.path, (0, 0))
    assert log.apply_retention(below=Index(1), max_age_s=1, now=10**9) == 0
    assert log.apply_retention(below=Index(PER_SEG), max_age_s=1, now=10**9) == 0
    assert log.apply_retention(below=Index(PER_SEG + 1), max_age_s=1, now=10**9) == 1
    assert log.apply_retention(below=Index(3 * PER_SEG + 1), max_age_s=1, now=10**9) == 2
    assert log.first_index() == 3 * PER_SEG + 1
