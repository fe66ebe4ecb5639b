"""Offline check (and optional repair) of a node's data directory.

``verify`` reads every frame of every segment (checksums, index continuity, headers, sidecar
indexes) and both hard-state files, and reports the first point from which the log can't be
trusted. ``repair`` cuts the log there, after saying exactly what it drops: the frames from that
point on, and every later segment. A repaired node has a shorter log; Raft refills it from the
leader, so repairing a *minority* of nodes loses nothing that was committed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2plog.errors import Corruption
from p2plog.raft.types import Index
from p2plog.storage import meta, snapfile
from p2plog.storage.frame import Status
from p2plog.storage.meta import fsync_dir
from p2plog.storage.segment import HEADER_SIZE, ScanEnd, decode_header, iter_frames, segment_name

Progress = Callable[[int, int], None]  # (bytes checked so far, bytes in all)


@dataclass
class CutPoint:
    """Where the trustworthy log ends: drop ``path`` from ``offset`` and every later file."""

    path: Path
    offset: int
    index: int  # the first index dropped
    reason: str
    torn_tail_only: bool = False


@dataclass
class Report:
    data_dir: Path
    segments: int = 0
    first_index: int = 1
    last_index: int = 0
    bytes: int = 0
    hard_state: str = "none"
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cut: CutPoint | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(data_dir: Path, *, progress: Progress | None = None) -> Report:
    """Check every segment and both hard-state files of a stopped node's directory.
    ``progress(done, total)`` is called as bytes are checked (the CLI draws a bar with it;
    storage itself never writes to a terminal)."""
    rep = Report(data_dir)
    _check_meta(data_dir, rep)
    _check_snapshot(data_dir, rep)
    log_dir = data_dir / "log"
    if not log_dir.is_dir():
        rep.problems.append(f"{log_dir}: missing; this is not a p2plog data directory")
        return rep
    paths = sorted(p for p in log_dir.iterdir() if p.suffix == ".seg")
    total = sum(p.stat().st_size for p in paths)
    rep.bytes = total
    expect: int | None = None
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    for n, path in enumerate(paths):
        if rep.cut is not None:
            break
        expect = _check_segment(path, n == len(paths) - 1, expect, rep, advance)
    rep.segments = len(paths)
    if rep.cut is not None and not rep.cut.torn_tail_only:
        rep.problems.append(rep.cut.reason)
    elif rep.cut is not None:
        rep.warnings.append(rep.cut.reason)
    return rep


def report_lines(rep: Report) -> list[str]:
    """What ``p2plog verify`` prints of a report: the summary, then warnings and problems."""
    return [
        f"{rep.data_dir}: {rep.segments} segment(s), entries {rep.first_index}..{rep.last_index}, "
        f"{rep.bytes} bytes; hard state: {rep.hard_state}",
        *(f"warning: {w}" for w in rep.warnings),
        *(f"problem: {p}" for p in rep.problems),
    ]


def _check_snapshot(data_dir: Path, rep: Report) -> None:
    try:
        snap = snapfile.load(data_dir, tidy=False)
    except Corruption as e:
        rep.problems.append(str(e))
        return
    if snap.index:
        rep.warnings.append(f"the log starts after a snapshot at index {snap.index}")


def _check_meta(data_dir: Path, rep: Report) -> None:
    found = []
    for name in meta.NAMES:
        path = data_dir / name
        if not path.exists():
            continue
        rec = meta.decode(path.read_bytes())
        if rec is None:
            rep.warnings.append(f"{path}: damaged hard-state record (the other copy is used)")
        else:
            found.append(rec)
    if found:
        seq, hs = max(found)
        rep.hard_state = f"term {hs.term}, vote {hs.vote or '-'} (seq {seq})"
    elif any((data_dir / n).exists() for n in meta.NAMES):
        rep.problems.append(
            f"{data_dir}: both hard-state files are damaged: term and vote are lost; repair "
            f"cannot recreate them (restore from backup or replace the node)"
        )


def _check_segment(
    path: Path, last: bool, expect: int | None, rep: Report, advance: Callable[[int], object]
) -> int | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        head = decode_header(os.pread(fd, HEADER_SIZE, 0))
        if head is None:
            rep.cut = CutPoint(path, 0, expect or 1, f"{path}: damaged segment header")
            return expect
        first, _ = head
        if path.name != segment_name(first):
            rep.cut = CutPoint(path, 0, first, f"{path}: header says it starts at {first}")
            return expect
        if expect is not None and first != expect:
            rep.cut = CutPoint(path, 0, first, f"{path}: starts at {first}, expected {expect}")
            return expect
        if expect is None:
            rep.first_index = first
        idx = path.with_suffix(".idx")
        if not last and not idx.exists():
            rep.warnings.append(f"{path}: sealed segment has no .idx (rebuilt on open)")
        index: int = first
        done = 0
        for item in iter_frames(fd, HEADER_SIZE, size, first):
            if isinstance(item, ScanEnd):
                _end_of_segment(path, last, item, index, size, rep)
                break
            _, _, end = item
            index += 1
            if end - done >= 1 << 20:
                advance(end - done)
                done = end
        advance(size - done)
        rep.last_index = index - 1
        return index
    finally:
        os.close(fd)


def _end_of_segment(
    path: Path, last: bool, end: ScanEnd, index: int, size: int, rep: Report
) -> None:
    if end.status is Status.OK:
        return
    tail = size - end.offset
    if last and end.status in (Status.SHORT, Status.ZERO):
        rep.cut = CutPoint(
            path,
            end.offset,
            index,
            f"{path}: torn tail of {tail} bytes at offset {end.offset} (index {index}); "
            f"recovery truncates it on open",
            torn_tail_only=True,
        )
        return
    rep.cut = CutPoint(
        path,
        end.offset,
        index,
        f"{path}: bad frame at offset {end.offset}, index {index}: "
        f"{end.detail or end.status.value}",
    )


def describe_cut(rep: Report) -> list[str]:
    """What ``repair`` would drop, in words."""
    cut = rep.cut
    if cut is None:
        return []
    later = sorted(
        p for p in (rep.data_dir / "log").iterdir() if p.suffix == ".seg" and p > cut.path
    )
    size = cut.path.stat().st_size
    lines = [
        f"will truncate {cut.path} at offset {cut.offset}: drops {size - cut.offset} bytes, "
        f"entries from index {cut.index} on"
    ]
    if later:
        dropped = sum(p.stat().st_size for p in later)
        lines.append(
            f"will remove {len(later)} later segment(s) ({dropped} bytes): "
            + ", ".join(p.name for p in later)
        )
    lines.append(
        "the node will hold entries up to index "
        f"{cut.index - 1}; Raft re-replicates the rest from the leader"
    )
    return lines


def repair(rep: Report) -> Index:
    """Cut the log at ``rep.cut``; returns the new last index."""
    cut = rep.cut
    assert cut is not None, "nothing to repair"
    log_dir = rep.data_dir / "log"
    for p in sorted(log_dir.iterdir(), reverse=True):
        if p.suffix in (".seg", ".idx") and p.with_suffix(".seg") > cut.path:
            p.unlink()
    cut.path.with_suffix(".idx").unlink(missing_ok=True)
    if cut.offset < HEADER_SIZE:
        cut.path.unlink()  # its header is damaged: the segment holds nothing we can trust
    else:
        fd = os.open(cut.path, os.O_RDWR)
        try:
            os.ftruncate(fd, cut.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(log_dir)
    return Index(cut.index - 1)
