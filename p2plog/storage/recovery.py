"""Open a log directory after any crash: trust sealed segments by their sidecar index, scan
only the open (last) segment, truncate a torn tail, refuse damage in the middle.

Rules (ARCHITECTURE section 5):
- a torn or garbage tail of the last segment (nothing valid after the first bad frame) is
  truncated with a warning naming the bytes dropped and the index the log now ends at;
- a bad frame followed by a valid one, a sealed segment shorter than its index says, or a gap
  between segments is refused with ``Corruption`` naming the file, the offset and the repair
  command. Nothing that was fsync'd is ever dropped silently.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from p2plog.errors import Corruption
from p2plog.storage.frame import Status
from p2plog.storage.segment import (
    HEADER_SIZE,
    SUFFIX,
    ScanEnd,
    Segment,
    decode_header,
    iter_frames,
    valid_frame_after,
)

log = logging.getLogger("p2plog.storage")


def repair_hint(data_dir: Path) -> str:
    return f"run `python -m p2plog verify --repair {data_dir}` to see and cut the damage"


def list_segment_files(log_dir: Path) -> list[Path]:
    return sorted(p for p in log_dir.iterdir() if p.suffix == SUFFIX)


def open_segment(path: Path, *, writable: bool) -> tuple[Segment | None, int]:
    """Open a segment file and read its header; (None, fd) if the header is unreadable."""
    fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
    head = decode_header(os.pread(fd, HEADER_SIZE, 0))
    if head is None:
        return None, fd
    return Segment(path, fd, head[0], head[1]), fd


def _unfinished(path: Path) -> bool:
    """A segment file too short to hold even a header, or whose header never got written."""
    with path.open("rb") as f:
        raw = f.read(HEADER_SIZE + 1)
    return len(raw) <= HEADER_SIZE and decode_header(raw) is None


def scan_segment(seg: Segment, file_end: int) -> ScanEnd:
    """Rebuild the segment's index from its frames; returns how the scan ended."""
    for item in iter_frames(seg.fd, HEADER_SIZE, file_end, seg.first_index):
        if isinstance(item, ScanEnd):
            return item
        entry, offset, end = item
        seg.note(entry.index, entry.term, offset, end)
    raise AssertionError("iter_frames ends with a ScanEnd")


def recover(data_dir: Path, log_dir: Path, node: str) -> list[Segment]:
    """Open every segment of ``log_dir``; see the module docstring for what is refused."""
    paths = list_segment_files(log_dir)
    if paths and _unfinished(paths[-1]):
        # A crash while creating the segment: it never held an entry. Remove it first, so the
        # segment before it is the one opened for writing.
        log.warning("%s: removing %s, a segment whose creation did not finish", node, paths[-1])
        paths.pop().unlink()
    segments: list[Segment] = []
    for i, path in enumerate(paths):
        last = i == len(paths) - 1
        seg, fd = open_segment(path, writable=last)
        if seg is None:
            os.close(fd)
            raise Corruption(
                f"{path}: damaged segment header; {repair_hint(data_dir)}", path=str(path), offset=0
            )
        expected_name = f"{seg.first_index:020d}{SUFFIX}"
        if path.name != expected_name:
            raise Corruption(
                f"{path}: header says the segment starts at index {seg.first_index}, but the "
                f"name says otherwise; {repair_hint(data_dir)}",
                path=str(path),
                offset=0,
            )
        if last:
            _recover_open(seg, data_dir, node)
        else:
            _recover_sealed(seg, data_dir)
        if segments:
            prev = segments[-1]
            if seg.first_index != prev.last_index + 1 or seg.prev_term != prev.last_term():
                raise Corruption(
                    f"{path}: starts at index {seg.first_index} (previous term "
                    f"{seg.prev_term}) but {prev.path.name} ends at {prev.last_index} (term "
                    f"{prev.last_term()}): the log has a gap; {repair_hint(data_dir)}",
                    path=str(path),
                    offset=0,
                )
        segments.append(seg)
    return segments


def _recover_sealed(seg: Segment, data_dir: Path) -> None:
    size = os.fstat(seg.fd).st_size
    idx = seg.idx_path
    if idx.exists() and seg.load_idx(idx.read_bytes()):
        if size < seg.size:
            raise Corruption(
                f"{seg.path}: sealed segment is short: {size} bytes on disk, {seg.size} when "
                f"sealed (entries {seg.first_index}..{seg.last_index}); {repair_hint(data_dir)}",
                path=str(seg.path),
                offset=size,
            )
        return
    # No usable sidecar (a crash while sealing): verify the whole segment instead.
    end = scan_segment(seg, size)
    if end.status is not Status.OK:
        raise Corruption(
            f"{seg.path}: bad frame at offset {end.offset} after index {seg.last_index} in a "
            f"sealed segment ({end.detail}); {repair_hint(data_dir)}",
            path=str(seg.path),
            offset=end.offset,
        )
    seg.sealed = True
    idx.write_bytes(seg.encode_idx())


def _recover_open(seg: Segment, data_dir: Path, node: str) -> None:
    seg.idx_path.unlink(missing_ok=True)  # the last segment is open again, even if once sealed
    size = os.fstat(seg.fd).st_size
    end = scan_segment(seg, size)
    if end.status is Status.OK or (
        end.status is Status.ZERO and not _nonzero(seg.fd, end.offset, size)
    ):
        if end.offset < size:
            os.ftruncate(seg.fd, end.offset)
        return
    following = valid_frame_after(seg.fd, end.offset, size, seg.last_index + 1)
    if following is None:
        following = valid_frame_after(seg.fd, end.offset, size, seg.last_index + 2)
    if following is not None:
        raise Corruption(
            f"{seg.path}: bad frame at offset {end.offset} ({end.detail}) is followed by a valid "
            f"frame at offset {following}: this is damage in the middle of the log, not a torn "
            f"write; {repair_hint(data_dir)}",
            path=str(seg.path),
            offset=end.offset,
        )
    log.warning(
        "%s: %s: torn tail of %d bytes at offset %d truncated (%s); the log now ends at index %d",
        node,
        seg.path,
        size - end.offset,
        end.offset,
        end.detail or end.status.value,
        seg.last_index,
    )
    os.ftruncate(seg.fd, end.offset)
    os.fsync(seg.fd)


def _nonzero(fd: int, start: int, end: int) -> bool:
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        if chunk.strip(b"\0"):
            return True
        pos += len(chunk)
    return False
