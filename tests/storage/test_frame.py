"""The frame codec: ``[len u32][crc32c u32][term u64][index u64][payload]`` (frame.py).

Round trip for any term/index/payload, every single-bit flip is caught (BAD or SHORT, never an
OK frame with other content) and every truncation is SHORT with the right "would end at".
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from p2plog.raft.types import Entry, Index, Term
from p2plog.storage import frame
from p2plog.storage.frame import HEADER_SIZE, MAX_PAYLOAD, Status

U64 = st.integers(min_value=0, max_value=2**64 - 1)
PAYLOADS = st.binary(min_size=0, max_size=4096)


def _entry(term: int, index: int, data: bytes) -> Entry:
    return Entry(Term(term), Index(index), data)


@given(term=U64, index=U64, data=PAYLOADS, prefix=st.binary(max_size=64))
def test_round_trip(term: int, index: int, data: bytes, prefix: bytes) -> None:
    e = _entry(term, index, data)
    raw = frame.encode(e)
    assert len(raw) == HEADER_SIZE + len(data)
    assert struct.unpack_from("<I", raw)[0] == len(data)
    # At offset 0, and at an offset inside a larger buffer with bytes after it.
    assert frame.decode(raw, 0) == (Status.OK, e, len(raw))
    buf = prefix + raw + b"\xff" * 7
    status, got, end = frame.decode(memoryview(buf), len(prefix))
    assert (status, got, end) == (Status.OK, e, len(prefix) + len(raw))


@given(entries=st.lists(st.tuples(U64, U64, st.binary(max_size=300)), max_size=20))
def test_batch_is_concatenated_frames(entries: list[tuple[int, int, bytes]]) -> None:
    batch = [_entry(*t) for t in entries]
    buf = frame.encode_batch(batch)
    assert buf == b"".join(frame.encode(e) for e in batch)
    pos = 0
    out = []
    while pos < len(buf):
        status, e, pos = frame.decode(buf, pos)
        assert status is Status.OK
        out.append(e)
    assert out == batch
    assert frame.decode(buf, len(buf))[0] is Status.SHORT


@settings(max_examples=300)
@given(term=U64, index=U64, data=PAYLOADS, bit=st.data())
def test_any_single_bit_flip_is_detected(
    term: int, index: int, data: bytes, bit: st.DataObject
) -> None:
    e = _entry(term, index, data)
    raw = bytearray(frame.encode(e))
    pos = bit.draw(st.integers(min_value=0, max_value=len(raw) * 8 - 1), label="bit")
    raw[pos // 8] ^= 1 << (pos % 8)
    status, got, _ = frame.decode(bytes(raw), 0)
    assert status in (Status.BAD, Status.SHORT), (pos, status, got)
    assert got is None


def test_every_bit_flip_of_small_frames_is_detected() -> None:
    """Exhaustive over every bit of a few frames (empty payload, odd sizes, extreme fields)."""
    cases = [
        _entry(0, 0, b""),
        _entry(1, 1, b"x"),
        _entry(7, 123456789, bytes(range(37))),
        _entry(2**64 - 1, 2**64 - 1, b"\x00" * 64),
        _entry(3, 2**32, b"\xff" * 300),
    ]
    for e in cases:
        raw = frame.encode(e)
        for pos in range(len(raw) * 8):
            flipped = bytearray(raw)
            flipped[pos // 8] ^= 1 << (pos % 8)
            # Also with more bytes after it: a longer length must still not decode as OK.
            for buf in (bytes(flipped), bytes(flipped) + frame.encode(e) * 3):
                status, got, _ = frame.decode(buf, 0)
                assert status in (Status.BAD, Status.SHORT), (e, pos, status)
                assert got is None


@given(term=U64, index=U64, data=PAYLOADS)
def test_every_truncation_is_short(term: int, index: int, data: bytes) -> None:
    raw = frame.encode(_entry(term, index, data))
    for n in range(len(raw)):
        status, got, end = frame.decode(raw[:n], 0)
        assert status is Status.SHORT, n
        assert got is None
        # Where the frame would end: the header end if not even the header fits.
        assert end == (HEADER_SIZE if n < HEADER_SIZE else len(raw)), n


def test_truncation_at_an_offset_reports_absolute_end() -> None:
    raw = frame.encode(_entry(5, 9, b"abcdef"))
    buf = b"P" * 10 + raw
    assert frame.decode(buf[:20], 10) == (Status.SHORT, None, 10 + HEADER_SIZE)
    assert frame.decode(buf[:-1], 10) == (Status.SHORT, None, 10 + len(raw))


def test_zero_header_and_impossible_length() -> None:
    assert frame.decode(b"\0" * HEADER_SIZE, 0) == (Status.ZERO, None, HEADER_SIZE)
    assert frame.decode(b"\0" * 100, 40)[0] is Status.ZERO
    huge = struct.pack("<IIQQ", MAX_PAYLOAD + 1, 0, 1, 1)
    assert frame.decode(huge, 0) == (Status.BAD, None, HEADER_SIZE)
    # A frame at exactly MAX_PAYLOAD is plausible, so without its bytes it is SHORT.
    big = struct.pack("<IIQQ", MAX_PAYLOAD, 0, 1, 1)
    assert frame.decode(big, 0) == (Status.SHORT, None, HEADER_SIZE + MAX_PAYLOAD)
