"""One segment file: a header, then frames of consecutive indexes.

Layout: ``magic(8) first_index(u64) prev_term(u64) reserved(u32) crc32c(u32)`` = 32 bytes, then
frames (``frame.py``). ``prev_term`` is the term of the entry before ``first_index``, so the log
can answer ``term(first_index - 1)`` after older segments are removed by retention.

In memory a segment keeps only a sparse index (one (index, offset) sample per
``SPARSE_BYTES`` of data) and its term runs, so memory grows with the number of segments and
terms, not with the number of entries. A sealed segment has a sidecar ``.idx`` with those and
its length, so opening the log does not scan it.
"""

from __future__ import annotations

import bisect
import os
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crc32c import crc32c

from p2plog.errors import Corruption
from p2plog.raft.types import Entry, Index, Term
from p2plog.storage import frame
from p2plog.storage.frame import Status

MAGIC = b"P2PLSEG1"
SEG_HEADER = struct.Struct("<8sQQII")
HEADER_SIZE = SEG_HEADER.size  # 32
SPARSE_BYTES = 64 << 10
READ_CHUNK = 1 << 20
SUFFIX = ".seg"


def segment_name(first_index: int) -> str:
    return f"{first_index:020d}{SUFFIX}"


def encode_header(first_index: int, prev_term: int) -> bytes:
    body = SEG_HEADER.pack(MAGIC, first_index, prev_term, 0, 0)[:-4]
    return body + struct.pack("<I", crc32c(body))


def decode_header(raw: bytes) -> tuple[Index, Term] | None:
    if len(raw) < HEADER_SIZE:
        return None
    magic, first, prev_term, _, crc = SEG_HEADER.unpack_from(raw)
    if magic != MAGIC or crc != crc32c(raw[: HEADER_SIZE - 4]):
        return None
    return Index(first), Term(prev_term)


@dataclass
class ScanEnd:
    """How a scan stopped: ``status`` OK means clean end of data at ``offset``."""

    status: Status
    offset: int
    detail: str = ""


def iter_frames(
    fd: int, offset: int, file_end: int, expect_index: int
) -> Iterator[tuple[Entry, int, int] | ScanEnd]:
    """Yield ``(entry, offset, end)`` for each valid frame from ``offset``, then one ``ScanEnd``.

    A frame whose index is not the expected next one counts as BAD: frames are consecutive.
    """
    buf = b""
    base = offset  # file offset of buf[0]
    pos = 0
    while True:
        if base + pos >= file_end:
            yield ScanEnd(Status.OK, base + pos)
            return
        status, entry, end = frame.decode(buf, pos)
        if status is Status.SHORT:
            if base + len(buf) < file_end:
                base += pos
                need = min(max(READ_CHUNK, end - pos), file_end - base)
                buf = os.pread(fd, need, base)
                pos = 0
                if len(buf) < need:
                    file_end = base + len(buf)  # the file is shorter than we were told
                continue
            yield ScanEnd(Status.SHORT, base + pos, f"incomplete frame of {end - pos} bytes")
            return
        if status is Status.ZERO:
            yield ScanEnd(Status.ZERO, base + pos)
            return
        if status is Status.BAD or entry is None:
            yield ScanEnd(Status.BAD, base + pos, "checksum mismatch or impossible length")
            return
        if entry.index != expect_index:
            yield ScanEnd(
                Status.BAD, base + pos, f"frame has index {entry.index}, expected {expect_index}"
            )
            return
        yield entry, base + pos, base + end
        expect_index += 1
        pos = end


def valid_frame_after(fd: int, offset: int, file_end: int, index: int) -> int | None:
    """Offset of a valid frame with ``index`` somewhere after ``offset``, or None.

    Used to tell a torn tail (nothing valid follows) from mid-log damage (valid frames follow a
    bad one). Searching for the index bytes keeps it fast even if the bad frame's length lies.
    """
    needle = struct.pack("<Q", index)
    start = offset + 1
    while start < file_end:
        buf = os.pread(fd, min(READ_CHUNK * 4, file_end - start), start)
        hit = buf.find(needle)
        while hit != -1:
            at = start + hit - 16  # the index field sits 16 bytes into the header
            if at > offset:
                head = os.pread(fd, frame.HEADER_SIZE, at)
                if len(head) == frame.HEADER_SIZE:
                    length = frame.HEADER.unpack(head)[0]
                    if length <= frame.MAX_PAYLOAD:
                        raw = os.pread(fd, frame.HEADER_SIZE + length, at)
                        status, entry, _ = frame.decode(raw, 0)
                        if status is Status.OK and entry is not None and entry.index == index:
                            return at
            hit = buf.find(needle, hit + 1)
        if len(buf) < READ_CHUNK * 4:
            return None
        start += len(buf) - 32  # overlap so a needle across the boundary is still found
    return None


class Segment:
    """In-memory view of one segment file (see the module docstring)."""

    def __init__(self, path: Path, fd: int, first_index: Index, prev_term: Term) -> None:
        self.path = path
        self.fd = fd
        self.first_index = first_index
        self.prev_term = prev_term
        self.last_index = Index(first_index - 1)
        self.size = HEADER_SIZE
        self.sealed = False
        self.sparse_index = array("Q")
        self.sparse_offset = array("Q")
        self.term_starts: list[int] = []
        self.term_values: list[int] = []
        self._next_sample = 0

    @property
    def idx_path(self) -> Path:
        return self.path.with_suffix(".idx")

    def note(self, index: int, term: int, offset: int, end: int) -> None:
        """Record an entry appended (or found by a scan) at ``offset``."""
        if offset >= self._next_sample:
            self.sparse_index.append(index)
            self.sparse_offset.append(offset)
            self._next_sample = offset + SPARSE_BYTES
        if not self.term_values or self.term_values[-1] != term:
            self.term_starts.append(index)
            self.term_values.append(term)
        self.last_index = Index(index)
        self.size = end

    def term(self, index: int) -> Term:
        if index == self.first_index - 1:
            return self.prev_term
        assert self.first_index <= index <= self.last_index, f"{index} not in {self.path.name}"
        return Term(self.term_values[bisect.bisect_right(self.term_starts, index) - 1])

    def last_term(self) -> Term:
        return Term(self.term_values[-1]) if self.term_values else self.prev_term

    def start_offset(self, index: int) -> tuple[int, int]:
        """(offset, index) of the nearest sampled frame at or before ``index``."""
        i = bisect.bisect_right(self.sparse_index, index) - 1
        if i < 0:
            return HEADER_SIZE, self.first_index
        return self.sparse_offset[i], self.sparse_index[i]

    def read(self, lo: int, hi: int, max_bytes: int, out: list[Entry], size: int) -> int:
        """Append entries ``[lo, min(hi, last+1))`` to ``out`` within ``max_bytes`` (``size``
        already used); returns the new size."""
        hi = min(hi, self.last_index + 1)
        offset, index = self.start_offset(lo)
        for item in iter_frames(self.fd, offset, self.size, index):
            if isinstance(item, ScanEnd):
                raise self.damage(item)
            entry = item[0]
            if entry.index < lo:
                continue
            if out and size + len(entry.data) > max_bytes:
                break
            out.append(entry)
            size += len(entry.data)
            if entry.index + 1 >= hi:
                break
        return size

    def damage(self, end: ScanEnd) -> Corruption:
        """A frame below ``last_index`` failed its check: damage found by a read."""
        data_dir = self.path.parent.parent
        return Corruption(
            f"{self.path}: bad frame at offset {end.offset} inside entries {self.first_index}.."
            f"{self.last_index} ({end.detail}); run `python -m p2plog verify --repair "
            f"{data_dir}` on the stopped node to see and cut the damage",
            path=str(self.path),
            offset=end.offset,
        )

    def offset_of(self, index: int) -> int:
        """File offset of the frame holding ``index`` (or the end, for ``last_index + 1``)."""
        if index == self.last_index + 1:
            return self.size
        offset, start = self.start_offset(index)
        for item in iter_frames(self.fd, offset, self.size, start):
            if isinstance(item, ScanEnd):
                raise self.damage(item)
            if item[0].index == index:
                return item[1]
        raise AssertionError(f"index {index} not found in {self.path}")

    def forget_after(self, index: int, offset: int) -> None:
        """Drop the in-memory knowledge of entries after ``index`` (truncated at ``offset``)."""
        keep = bisect.bisect_right(self.sparse_index, index)
        del self.sparse_index[keep:]
        del self.sparse_offset[keep:]
        self._next_sample = (self.sparse_offset[-1] + SPARSE_BYTES) if self.sparse_offset else 0
        t = bisect.bisect_right(self.term_starts, index)
        del self.term_starts[t:]
        del self.term_values[t:]
        self.last_index = Index(index)
        self.size = offset

    # -- the .idx sidecar of a sealed segment --

    def encode_idx(self) -> bytes:
        n = len(self.sparse_index)
        t = len(self.term_starts)
        body = (
            struct.pack("<4sQQQII", b"P2IX", self.first_index, self.last_index, self.size, n, t)
            + self.sparse_index.tobytes()
            + self.sparse_offset.tobytes()
            + array("Q", self.term_starts).tobytes()
            + array("Q", self.term_values).tobytes()
        )
        return body + struct.pack("<I", crc32c(body))

    def load_idx(self, raw: bytes) -> bool:
        """Adopt a sidecar index if it is intact and matches this segment; False otherwise."""
        head = struct.Struct("<4sQQQII")
        if len(raw) < head.size + 4 or crc32c(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
            return False
        magic, first, last, size, n, t = head.unpack_from(raw)
        if (
            magic != b"P2IX"
            or first != self.first_index
            or len(raw) != head.size + 16 * (n + t) + 4
        ):
            return False
        arrays = []
        pos = head.size
        for count in (n, n, t, t):
            a = array("Q")
            a.frombytes(raw[pos : pos + 8 * count])
            arrays.append(a)
            pos += 8 * count
        self.sparse_index, self.sparse_offset = arrays[0], arrays[1]
        self.term_starts, self.term_values = list(arrays[2]), list(arrays[3])
        self.last_index = Index(last)
        self.size = size
        self.sealed = True
        return True
