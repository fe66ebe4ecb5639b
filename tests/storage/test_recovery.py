"""Recovery of a log directory after crashes and damage (recovery.py, meta.py), on real files.

- a torn or garbage tail of the open segment is cut back to the last complete frame, with a
  warning naming the bytes dropped and the index the log now ends at;
- damage that is not a torn tail (a bad frame followed by valid ones, a short sealed segment, a
  gap) is refused with ``Corruption`` naming the file, the offset and the repair command, and
  the files are left as they were;
- the hard state falls back to the older meta file when the newer one is damaged;
- a random run of appends, truncations, reopens and simulated crashes never loses a synced
  entry and always recovers a prefix of what was written.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from p2plog.errors import Corruption
from p2plog.raft.types import Entry, HardState, Index, NodeId, Term
from p2plog.storage import frame, meta
from p2plog.storage.frame import Status
from p2plog.storage.segment import HEADER_SIZE as SEG_HEADER
from p2plog.storage.segmented_log import SegmentedLog

from .logdata import PAYLOAD, ent, keep_snapshot, read_all, run, seg_files

PER_SEG = 32
SEG = SEG_HEADER + PER_SEG * (frame.HEADER_SIZE + PAYLOAD)  # exactly full: any frame rolls
REPAIR = "python -m p2plog verify --repair"


def frame_bounds(raw: bytes) -> list[tuple[int, int, int]]:
    """(index, start, end) of every frame of a segment image."""
    out = []
    pos = SEG_HEADER
    while pos < len(raw):
        status, e, end = frame.decode(raw, pos)
        assert status is Status.OK
        assert e is not None
        out.append((e.index, pos, end))
        pos = end
    return out


def reopened(d: Path, **kw: object) -> list[Entry]:
    """Open ``d``, read everything, close; returns the entries."""
    kw.setdefault("segment_bytes", SEG)
    log = SegmentedLog(d, **kw)  # type: ignore[arg-type]
    try:
        return read_all(log)
    finally:
        log.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "p2plog.storage" and r.levelno == logging.WARNING
    ]


def build(d: Path, sealed: int, tail_sizes: list[int]) -> list[Entry]:
    """``sealed`` full segments of 100-byte entries, then one single-entry batch per size in
    ``tail_sizes`` (they all land in the open segment); returns the entries."""
    log = SegmentedLog(d, segment_bytes=SEG)
    model = run(1, sealed * PER_SEG)
    for i in range(0, len(model), PER_SEG):  # one batch per segment (they roll between)
        log.append_batch(model[i : i + PER_SEG], None)
    rng = random.Random(len(tail_sizes))
    for size in tail_sizes:
        e = ent(2, len(model) + 1, rng.randbytes(size))
        log.append_batch([e], None)
        model.append(e)
    assert len(log.segments) == max(1, sealed + (1 if tail_sizes else 0))
    log.close()
    return model


# ------------------------------------------------------------------ torn tail


TAIL = [0, 5, 40, 1, 60, 33]  # the last two frames: 84 and 57 bytes


@pytest.mark.parametrize("sealed", [0, 2])
def test_torn_tail_at_every_offset_of_the_last_two_frames(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sealed: int
) -> None:
    d = tmp_path / "node"
    model = build(d, sealed, TAIL)
    path = seg_files(d)[-1]
    raw = path.read_bytes()
    bounds = frame_bounds(raw)
    start = bounds[-2][1]
    caplog.set_level(logging.INFO, logger="p2plog.storage")
    for cut in range(start, len(raw) + 1):
        path.write_bytes(raw[:cut])
        caplog.clear()
        got = reopened(d)
        complete = [b for b in bounds if b[2] <= cut]
        good_end = complete[-1][2]
        last = complete[-1][0]
        assert got == model[:last], cut
        assert path.stat().st_size == good_end, cut
        warns = warnings_of(caplog)
        if cut == good_end:  # a clean frame boundary is not a torn tail
            assert warns == [], cut
        else:
            assert len(warns) == 1, (cut, warns)
            assert f"torn tail of {cut - good_end} bytes" in warns[0]
            assert f"offset {good_end}" in warns[0]
            assert f"ends at index {last}" in warns[0]
            assert path.name in warns[0]
    # After the last recovery (nothing cut), appends continue normally.
    log = SegmentedLog(d, segment_bytes=SEG)
    log.append_batch(run(len(model) + 1, 3, term=3), None)
    log.close()
    assert reopened(d) == model + run(len(model) + 1, 3, term=3)


def test_torn_tail_then_append_and_reopen(tmp_path: Path) -> None:
    d = tmp_path / "node"
    model = build(d, 1, TAIL)
    path = seg_files(d)[-1]
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    log = SegmentedLog(d, segment_bytes=SEG)
    assert log.last_index() == len(model) - 1
    new = run(len(model), 5, term=4)  # re-uses the index of the torn frame
    log.append_batch(new, None)
    log.close()
    assert reopened(d) == model[:-1] + new


GARBAGE_SIZES = [*range(1, 65), 100, 1000, 5000, 70_000]


@pytest.mark.parametrize("sealed", [0, 1])
def test_garbage_after_valid_frames_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sealed: int
) -> None:
    d = tmp_path / "node"
    model = build(d, sealed, TAIL)
    path = seg_files(d)[-1]
    raw = path.read_bytes()
    rng = random.Random(99)
    caplog.set_level(logging.WARNING, logger="p2plog.storage")
    for k in GARBAGE_SIZES:
        garbage = rng.randbytes(k)
        assert garbage.strip(b"\0")
        path.write_bytes(raw + garbage)
        caplog.clear()
        assert reopened(d) == model, k
        assert path.read_bytes() == raw, k
        warns = warnings_of(caplog)
        assert len(warns) == 1, (k, warns)
        assert f"torn tail of {k} bytes" in warns[0]
        assert f"ends at index {len(model)}" in warns[0]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(min_size=1, max_size=300))
def test_any_garbage_tail_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    d = tmp_path / "node"
    if not d.exists():
        build(d, 0, TAIL)
    path = seg_files(d)[-1]
    raw = path.read_bytes()
    caplog.set_level(logging.WARNING, logger="p2plog.storage")
    caplog.clear()
    path.write_bytes(raw + garbage)
    got = reopened(d)
    assert len(got) == len(TAIL)
    assert path.read_bytes() == raw
    if garbage.strip(b"\0"):
        assert any(f"torn tail of {len(garbage)} bytes" in w for w in warnings_of(caplog))


@pytest.mark.parametrize("zeros", [1, 23, 24, 25, 124, 4096, 65_536 + 3])
def test_zero_filled_tail_is_dropped(tmp_path: Path, zeros: int) -> None:
    d = tmp_path / "node"
    model = build(d, 1, TAIL)
    path = seg_files(d)[-1]
    raw = path.read_bytes()
    path.write_bytes(raw + b"\0" * zeros)
    assert reopened(d) == model
    assert path.read_bytes() == raw


def test_open_segment_of_only_zeros_after_the_header(tmp_path: Path) -> None:
    d = tmp_path / "node"
    model = build(d, 2, [10])[:-1]
    # An open segment holding just its header, then a zero-filled extension.
    path = seg_files(d)[-1]
    os.truncate(path, SEG_HEADER)
    with path.open("ab") as f:
        f.write(b"\0" * 8192)
    assert reopened(d) == model
    assert path.stat().st_size == SEG_HEADER


# ------------------------------------------------------------------ mid-log corruption


def _assert_refused(
    d: Path, path: Path, offset: int | None, *words: str, offset_in_msg: bool = False
) -> pytest.ExceptionInfo[Corruption]:
    before = {p.name: p.read_bytes() for p in seg_files(d)}
    with pytest.raises(Corruption) as exc:
        SegmentedLog(d, segment_bytes=SEG)
    msg = str(exc.value)
    assert str(path) in msg
    assert f"{REPAIR} {d}" in msg
    assert exc.value.path == str(path)
    if offset is not None:
        assert exc.value.offset == offset
        if offset_in_msg:
            assert f"offset {offset}" in msg
    for w in words:
        assert w in msg
    # No segment was cut or rewritten: the damage is left for the operator. (A sidecar .idx
    # may have been rebuilt for a segment that scanned clean: it is derived data.)
    assert {p.name: p.read_bytes() for p in seg_files(d)} == before
    return exc


def test_bit_flip_followed_by_valid_frames_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "node"
    build(d, 1, [16] * 10)
    path = seg_files(d)[-1]
    raw = path.read_bytes()
    bounds = frame_bounds(raw)
    rng = random.Random(5)
    flips = []
    _, s, e = bounds[4]
    flips += [(s, bit) for bit in range((e - s) * 8)]  # every bit of one frame
    for _, s, e in bounds[:-1]:  # a sample in every frame that has a valid one after it
        flips += [(s, rng.randrange((e - s) * 8)) for _ in range(12)]
    for start, bit in flips:
        damaged = bytearray(raw)
        damaged[start + bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(damaged)
        _assert_refused(
            d, path, start, "bad frame", "followed by a valid frame", offset_in_msg=True
        )


def test_bit_flip_in_the_last_frame_is_a_torn_tail(tmp_path: Path) -> None:
    """The last frame has nothing valid after it: indistinguishable from a torn write."""
    d = tmp_path / "node"
    model = build(d, 0, [16] * 5)
    path = seg_files(d)[-1]
    raw = bytearray(path.read_bytes())
    start = frame_bounds(bytes(raw))[-1][1]
    raw[start + 30] ^= 0x10
    path.write_bytes(raw)
    assert reopened(d) == model[:-1]
    assert path.stat().st_size == start


def _sealed(d: Path) -> tuple[list[Entry], Path]:
    model = build(d, 4, [10, 20])
    return model, seg_files(d)[1]


@pytest.mark.parametrize("lose", [1, 50, 124, 2000, 4000 - SEG_HEADER])
def test_short_sealed_segment_is_refused(tmp_path: Path, lose: int) -> None:
    d = tmp_path / "node"
    _, path = _sealed(d)
    size = path.stat().st_size
    keep = max(SEG_HEADER, size - lose)
    os.truncate(path, keep)
    _assert_refused(d, path, keep, "short", f"{keep} bytes on disk")


def test_sealed_segment_without_index_is_rebuilt_by_scanning(tmp_path: Path) -> None:
    d = tmp_path / "node"
    model, path = _sealed(d)
    idx = path.with_suffix(".idx")
    original = idx.read_bytes()
    idx.unlink()
    assert reopened(d) == model
    assert idx.read_bytes() == original  # the same sidecar, written again
    # A damaged sidecar is ignored and rebuilt too.
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    idx.write_bytes(damaged)
    assert reopened(d) == model
    assert idx.read_bytes() == original


def test_bit_flip_in_a_sealed_segment_without_index_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "node"
    _, path = _sealed(d)
    idx = path.with_suffix(".idx")
    raw = path.read_bytes()
    bounds = frame_bounds(raw)
    # Sealed segments have no torn tail: the last frame is checked like every other.
    for i in [0, 1, 15, len(bounds) - 2, len(bounds) - 1]:
        _, s, e = bounds[i]
        for bit in [0, 40, 70, 130, 200, (e - s) * 8 - 1]:
            damaged = bytearray(raw)
            damaged[s + bit // 8] ^= 1 << (bit % 8)
            path.write_bytes(damaged)
            idx.unlink(missing_ok=True)
            _assert_refused(d, path, s, "sealed segment", offset_in_msg=True)
    # Cut inside a frame, sidecar lost: refused as well.
    path.write_bytes(raw[: bounds[10][1] + 7])
    _assert_refused(d, path, bounds[10][1])


def test_sealed_segment_cut_at_a_frame_boundary_without_index_is_a_gap(tmp_path: Path) -> None:
    d = tmp_path / "node"
    _, path = _sealed(d)
    raw = path.read_bytes()
    path.with_suffix(".idx").unlink()
    path.write_bytes(raw[: frame_bounds(raw)[20][1]])
    _assert_refused(d, seg_files(d)[2], 0, "gap")


def test_missing_middle_segment_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "node"
    _, path = _sealed(d)
    path.unlink()
    path.with_suffix(".idx").unlink()
    _assert_refused(d, seg_files(d)[1], 0, "gap")


def test_missing_first_segment_without_a_snapshot_is_refused(tmp_path: Path) -> None:
    """Retention cuts only behind a snapshot (``DATA_DIR/snapshot``); a log that starts past
    index 1 with no snapshot standing in for what is missing has lost entries."""
    d = tmp_path / "node"
    _sealed(d)
    first = seg_files(d)[0]
    first.unlink()
    first.with_suffix(".idx").unlink()
    with pytest.raises(Corruption, match="entries in between are missing"):
        SegmentedLog(d, segment_bytes=SEG)


@pytest.mark.parametrize("which", [0, 1, -1])
def test_damaged_segment_header_is_refused(tmp_path: Path, which: int) -> None:
    d = tmp_path / "node"
    _sealed(d)
    path = seg_files(d)[which]
    raw = bytearray(path.read_bytes())
    raw[12] ^= 0x01  # inside first_index
    path.write_bytes(raw)
    _assert_refused(d, path, 0, "header")


# ------------------------------------------------------------------ crash while rolling


def _crash_while_creating_next_segment(d: Path) -> tuple[list[Entry], Path]:
    """The state a crash leaves when it hits _create_segment after the full segment was sealed:
    the new segment file exists but its header never reached the disk."""
    model = build(d, 2, [10])[:-1]
    newest = seg_files(d)[-1]
    os.truncate(newest, 0)  # (the append of entry 65 never happened)
    return model, newest


def test_crash_while_creating_a_segment_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "node"
    model, newest = _crash_while_creating_next_segment(d)
    caplog.set_level(logging.WARNING, logger="p2plog.storage")
    assert reopened(d) == model
    assert not newest.exists()
    assert any("creation did not finish" in w for w in warnings_of(caplog))


def test_append_after_a_crash_while_creating_a_segment(tmp_path: Path) -> None:
    d = tmp_path / "node"
    # The segments roll when full, so make room: the next (small) batch fits in the last one.
    log = SegmentedLog(d, segment_bytes=SEG)
    log.append_batch(run(1, 20), None)
    log.append_batch(run(21, 20), None)  # does not fit: rolls
    log.close()
    last = seg_files(d)[-1]
    os.truncate(last, 0)  # the crash hit while creating the segment for 21..40
    log = SegmentedLog(d, segment_bytes=SEG)
    try:
        assert log.last_index() == 20
        log.append_batch(run(21, 1), None)  # fits into the segment of 1..20
        assert read_all(log) == run(1, 21)
    finally:
        log.close()


def test_crash_after_sealing_before_creating_the_next_file(tmp_path: Path) -> None:
    """The sealed segment (with its .idx) is the last file again: it is reopened for writing."""
    d = tmp_path / "node"
    model = build(d, 2, [10])[:-1]
    seg_files(d)[-1].unlink()
    assert seg_files(d)[-1].with_suffix(".idx").exists()
    log = SegmentedLog(d, segment_bytes=SEG)
    assert read_all(log) == model
    assert not log.segments[-1].sealed
    assert not log.segments[-1].idx_path.exists()
    log.append_batch(run(len(model) + 1, 3), None)
    log.close()
    assert reopened(d) == model + run(len(model) + 1, 3)


# ------------------------------------------------------------------ meta files


def _meta_records(d: Path) -> dict[str, tuple[int, HardState] | None]:
    return {
        name: meta.decode((d / name).read_bytes()) if (d / name).exists() else None
        for name in meta.NAMES
    }


def _states(n: int) -> list[HardState]:
    return [HardState(Term(t), NodeId(f"n{t % 3}") if t % 2 else None) for t in range(1, n + 1)]


def test_fresh_directory_has_the_empty_hard_state(tmp_path: Path) -> None:
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    assert log.hard_state() == HardState()
    log.close()
    assert not any((tmp_path / n).exists() for n in meta.NAMES)


def test_meta_files_alternate(tmp_path: Path) -> None:
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    seen_slots = []
    for n, hs in enumerate(_states(6), start=1):
        log.append_batch([], hs)
        recs = _meta_records(tmp_path)
        newest = max((r for r in recs.values() if r is not None), key=lambda r: r[0])
        assert newest == (n, hs)
        seen_slots.append(next(k for k, r in recs.items() if r == newest))
        if n >= 2:  # the other file holds the previous state
            older = [r for r in recs.values() if r is not None and r != newest]
            assert older == [(n - 1, _states(n)[n - 2])]
    assert all(a != b for a, b in itertools.pairwise(seen_slots))
    log.close()
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    assert log.hard_state() == _states(6)[-1]
    log.close()


@pytest.mark.parametrize("damage", ["bitflip", "torn", "empty", "garbage"])
def test_damaged_newer_meta_falls_back_to_the_older(tmp_path: Path, damage: str) -> None:
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    states = _states(5)
    for hs in states:
        log.append_batch([], hs)
    log.close()
    recs = _meta_records(tmp_path)
    newer = next(k for k, r in recs.items() if r is not None and r[0] == 5)
    older = next(k for k in recs if k != newer)
    path = tmp_path / newer
    raw = bytearray(path.read_bytes())
    if damage == "bitflip":
        raw[10] ^= 0x04
    elif damage == "torn":
        raw = raw[: len(raw) // 2]
    elif damage == "empty":
        raw = bytearray()
    else:
        raw = bytearray(random.Random(1).randbytes(len(raw)))
    path.write_bytes(raw)
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    assert log.hard_state() == states[-2]
    # The next write replaces the damaged file, never the good older one.
    new = HardState(Term(9), NodeId("z"))
    log.append_batch([], new)
    log.close()
    recs = _meta_records(tmp_path)
    assert recs[newer] is not None
    assert recs[newer][1] == new
    assert recs[older] == (4, states[-2])
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    assert log.hard_state() == new
    log.close()


def test_both_meta_files_damaged_is_refused(tmp_path: Path) -> None:
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    log.append_batch(run(1, 3), HardState(Term(1), None))
    log.append_batch([], HardState(Term(2), NodeId("a")))
    log.close()
    for name in meta.NAMES:
        raw = bytearray((tmp_path / name).read_bytes())
        raw[-1] ^= 0x80
        (tmp_path / name).write_bytes(raw)
    with pytest.raises(Corruption) as exc:
        SegmentedLog(tmp_path, segment_bytes=SEG)
    assert "meta.1" in str(exc.value)
    assert "meta.2" in str(exc.value)
    assert exc.value.path in {str(tmp_path / n) for n in meta.NAMES}


@pytest.mark.parametrize("content", [b"", b"P2HS\x01"])
def test_torn_first_meta_write_is_the_empty_hard_state(tmp_path: Path, content: bytes) -> None:
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    log.append_batch([], HardState(Term(1), NodeId("me")))
    log.close()
    present = [n for n in meta.NAMES if (tmp_path / n).exists()]
    assert len(present) == 1  # the first save created exactly one file ...
    (tmp_path / present[0]).write_bytes(content)  # ... and the crash tore it
    log = SegmentedLog(tmp_path, segment_bytes=SEG)
    assert log.hard_state() == HardState()
    log.close()


# ------------------------------------------------------------------ random crash property


OPS = st.one_of(
    st.tuples(
        st.just("append"),
        st.integers(0, 60),  # how far back the batch starts (0: at last + 1)
        st.integers(1, 40),  # batch size
        st.booleans(),  # new term
        st.booleans(),  # sync
        st.booleans(),  # with a new hard state
    ),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("crash"), st.floats(0, 1)),
    st.tuples(st.just("retain"), st.floats(0, 1)),
)


class Model:
    """What was written and what is known to be durable."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.log = SegmentedLog(d, segment_bytes=1024)
        self.written: list[Entry] = []  # the current log, from index 1
        self.synced = 0  # entries 1..synced are durable
        self.term = 1
        self.hs = HardState()
        self.durable = self.log.segments[-1].path, SEG_HEADER  # open segment, durable size
        self.rng = random.Random(0)

    def mark_durable(self) -> None:
        self.synced = len(self.written)
        path = self.log.segments[-1].path
        self.durable = path, path.stat().st_size

    def append(self, back: int, n: int, bump: bool, sync: bool, with_hs: bool) -> None:
        log = self.log
        # Never at or below the snapshot: what it stands for is committed (Raft never cuts it).
        floor = max(log.first_index(), log.snapshot().index + 1)
        start = max(floor, log.last_index() + 1 - back)
        if bump:
            self.term += 1
        batch = [
            ent(self.term, i, self.rng.randbytes(self.rng.choice([0, 3, 60, 200])))
            for i in range(start, start + n)
        ]
        hs = None
        if with_hs:
            self.hs = HardState(Term(self.term), NodeId(f"v{self.term}"))
            hs = self.hs
        if start <= log.last_index():
            sealed = start < log.segments[-1].first_index
            event(f"conflict in the {'sealed' if sealed else 'open'} segment")
            self.synced = min(self.synced, start - 1)
            if not sync:  # truncation is durable on its own; record it before the append
                log.truncate_suffix(Index(start))
                del self.written[start - 1 :]
                self.mark_durable()
        log.append_batch(batch, hs, sync=sync)
        del self.written[start - 1 :]
        self.written.extend(batch)
        if sync:
            self.mark_durable()

    def reopen(self) -> None:
        self.log.close()
        self.log = SegmentedLog(self.d, segment_bytes=1024)
        self.check(exact=True)

    def crash(self, frac: float) -> None:
        path = self.log.segments[-1].path
        size = path.stat().st_size
        lo = self.durable[1] if self.durable[0] == path else SEG_HEADER
        lo = min(lo, size)
        cut = lo + int(frac * (size - lo))
        self.log.close()
        os.truncate(path, cut)
        self.log = SegmentedLog(self.d, segment_bytes=1024)
        self.check(exact=False)
        event("crash: torn tail" if path.stat().st_size < cut else "crash: clean cut")
        if self.log.last_index() < len(self.written):
            event("crash: lost unsynced entries")
        self.written = self.written[: self.log.last_index()]
        self.mark_durable()

    def retain(self, frac: float) -> None:
        log = self.log
        cut = log.first_index() + int(frac * (log.last_index() + 1 - log.first_index()))
        keep_snapshot(log, min(cut, self.synced + 1))  # as the node: at most what is synced
        log.remove_before(Index(cut))
        assert log.first_index() <= max(cut, log.segments[-1].first_index)

    def check(self, *, exact: bool) -> None:
        log = self.log
        first, last = log.first_index(), log.last_index()
        if exact:
            assert last == len(self.written)
        else:  # a prefix of what was written, holding at least every synced entry
            assert self.synced <= last <= len(self.written)
        got = read_all(log)
        assert got == self.written[first - 1 : last]
        for i in range(first - 1, last + 1):
            assert log.term(Index(i)) == (self.written[i - 1].term if i else 0)
        assert log.hard_state() == self.hs


@settings(max_examples=70, deadline=None)
@given(ops=st.lists(OPS, min_size=1, max_size=30))
def test_random_appends_truncations_reopens_and_crashes(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        m = Model(Path(tmp))
        try:
            for op in ops:
                name, *args = op
                getattr(m, str(name))(*args)
            m.reopen()
            m.crash(0.5)
        finally:
            m.log.close()
