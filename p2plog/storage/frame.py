"""On-disk frame codec: ``[len u32][crc32c u32][term u64][index u64][payload]``, little-endian.

The CRC32C covers term, index and payload, so a frame that is torn, overwritten or bit-flipped
anywhere fails its check. ``len`` is the payload length; a zero header marks preallocated,
never-written space.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable

from crc32c import crc32c

from p2plog.raft.types import Entry, Index, Term

HEADER = struct.Struct("<IIQQ")
HEADER_SIZE = HEADER.size  # 24
_TERM_INDEX = struct.Struct("<QQ")
MAX_PAYLOAD = 64 << 20  # larger lengths can only be garbage (records are <= 64 KiB)


def frame_crc(term: int, index: int, payload: bytes | memoryview) -> int:
    return crc32c(payload, crc32c(_TERM_INDEX.pack(term, index)))


def encode(entry: Entry) -> bytes:
    data = entry.data
    crc = frame_crc(entry.term, entry.index, data)
    return HEADER.pack(len(data), crc, entry.term, entry.index) + data


def encode_batch(entries: Iterable[Entry]) -> bytes:
    """All frames of a batch as one buffer, so the batch is one ``write``."""
    return b"".join(encode(e) for e in entries)


class Status(enum.Enum):
    OK = "ok"
    ZERO = "zero"  # an all-zero header: preallocated space that was never written
    SHORT = "short"  # the frame runs past the end of the buffer
    BAD = "bad"  # impossible length or checksum mismatch


def decode(buf: bytes | memoryview, offset: int) -> tuple[Status, Entry | None, int]:
    """Decode the frame at ``offset``: (status, entry if OK, end of the frame).

    For SHORT the third value is where the frame would end (``offset + HEADER_SIZE`` if not even
    the header fits), so a reader knows how much more to read.
    """
    end = offset + HEADER_SIZE
    if end > len(buf):
        return Status.SHORT, None, end
    length, crc, term, index = HEADER.unpack_from(buf, offset)
    if length == 0 and crc == 0 and term == 0 and index == 0:
        return Status.ZERO, None, end
    if length > MAX_PAYLOAD:
        return Status.BAD, None, end
    stop = end + length
    if stop > len(buf):
        return Status.SHORT, None, stop
    payload = bytes(buf[end:stop])
    if frame_crc(term, index, payload) != crc:
        return Status.BAD, None, stop
    return Status.OK, Entry(Term(term), Index(index), payload), stop
