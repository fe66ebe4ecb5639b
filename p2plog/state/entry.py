"""Raft entry payloads: many records to an entry, and the leader's time ticks.

The leader packs the records of the submissions it takes in one round into ONE Raft entry, so
Raft, the disks and the peer links handle one frame per batch, not per record (the per-record
cost of Entry objects, frames and messages dominated the leader's CPU)::

    kind(1) = 0x03 | ingest_ts (i64) | base (u64) | n (u32) | n ids (16 each)
               | n body lengths (u32 each) | n bodies, body = ts_corrected (i64) + CBOR

All integers little-endian. A record's index is ``base + position``: dense record numbers
(like Kafka offsets), not Raft indexes. The leader sets ``base`` to one past the last record in
its log; the log matching property makes that the same on every node. Dedup at apply reads the
ids at fixed offsets without decoding CBOR. A leader time tick is ``kind(1) = 0x02 |
ingest_ts``; the empty entry is the Raft no-op. ``entry_problem`` says whether bytes from a
peer have this shape, before a follower appends them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

from p2plog.raft.membership import decode_conf, is_conf
from p2plog.record import NO_TS, TS_PREFIX
from p2plog.state.stored import StoredRecord, decode_body

KIND_TICK = 0x02
KIND_BATCH = 0x03

_BATCH = struct.Struct("<BqQI")  # kind, ingest_ts, base record index, count
BATCH_HEAD_SIZE = _BATCH.size  # 21
MAX_ENTRY_RECORDS = 65_536


def batch_data(ingest_ts: int, base: int, recs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The Raft entry payload of a batch of records (see the module docstring): one entry per
    batch, so Raft, the disk and the wire handle one frame for many records."""
    return batch_data_of(ingest_ts, base, [rid for rid, _ in recs], [b for _, b in recs])


def batch_data_of(
    ingest_ts: int, base: int, ids: Sequence[bytes], bodies: Sequence[bytes]
) -> bytes:
    """``batch_data`` from the ids and the bodies as two lists (how the leader holds them)."""
    n = len(ids)
    assert 0 < n <= MAX_ENTRY_RECORDS, n
    assert n == len(bodies), (n, len(bodies))
    return b"".join(
        (
            _BATCH.pack(KIND_BATCH, ingest_ts, base, n),
            b"".join(ids),
            struct.pack(f"<{n}I", *map(len, bodies)),
            *bodies,
        )
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """A parsed batch entry: ``n`` records with indexes ``base .. base + n - 1``."""

    ingest_ts: int
    base: int
    n: int
    data: bytes

    def ids(self) -> list[bytes]:
        d = self.data
        return [d[o : o + 16] for o in range(BATCH_HEAD_SIZE, BATCH_HEAD_SIZE + 16 * self.n, 16)]

    def lengths(self) -> tuple[int, ...]:
        """Each record's body length."""
        return struct.unpack_from(f"<{self.n}I", self.data, BATCH_HEAD_SIZE + 16 * self.n)

    def offsets(self) -> list[int]:
        """Where each body starts in ``data``, and (last, ``n + 1``-th) where the last ends."""
        return list(accumulate(self.lengths(), initial=BATCH_HEAD_SIZE + 20 * self.n))

    def bodies(self) -> list[bytes]:
        d, offs = self.data, self.offsets()
        return [d[a:b] for a, b in pairwise(offs)]

    def event_times(self, offsets: Sequence[int]) -> list[int]:
        """Each record's ``ts_corrected`` prefix (``NO_TS``: none), read without a decode."""
        d, unpack = self.data, TS_PREFIX.unpack_from
        return [unpack(d, o)[0] for o in offsets[:-1]]

    def records(self, term: int) -> list[Rec]:
        """The records of this batch (index, term, ingest time, id, body), in log order."""
        ts, base = self.ingest_ts, self.base
        return [
            Rec(base + k, term, ts, rid, body)
            for k, (rid, body) in enumerate(zip(self.ids(), self.bodies(), strict=True))
        ]


class BatchRef:
    """The records of one committed batch entry, as the event stream buffers them: one object
    shared by all of the entry's records (not a ``Rec`` each), turned into a ``Rec`` only when
    a reader takes the record. It keeps the entry's bytes alive only while one of its records
    is still buffered."""

    __slots__ = ("_offsets", "batch", "term")

    def __init__(self, term: int, batch: Batch, offsets: list[int] | None = None) -> None:
        self.term = term
        self.batch = batch
        self._offsets = offsets

    def rec(self, index: int) -> Rec:
        b = self.batch
        k = index - b.base
        assert 0 <= k < b.n, f"record {index} is not in the batch at {b.base} (+{b.n})"
        offs = self._offsets
        if offs is None:
            offs = self._offsets = b.offsets()
        o, d = BATCH_HEAD_SIZE + 16 * k, b.data
        return Rec(index, self.term, b.ingest_ts, d[o : o + 16], d[offs[k] : offs[k + 1]])


def entry_problem(data: bytes) -> str | None:
    """Why ``data`` is not an entry payload a leader writes, or None when it is one: the
    no-op (empty), a time tick, a configuration (``raft.membership``), or a batch whose header,
    ids and body lengths add up to its size. A follower checks this before it appends what a
    leader sent (the record bodies were validated where they entered the cluster)."""
    if not data:
        return None
    if data[0] == KIND_TICK:
        return None if len(data) == _TICK.size else f"a time tick of {len(data)} bytes"
    if is_conf(data):
        try:
            decode_conf(data)
        except ValueError as e:
            return str(e)
        return None
    if data[0] != KIND_BATCH:
        return f"unknown entry kind {data[0]}"
    if len(data) < BATCH_HEAD_SIZE:
        return "a batch shorter than its header"
    _, _, base, n = _BATCH.unpack_from(data)
    head = BATCH_HEAD_SIZE + (16 + 4) * n
    if not 0 < n <= MAX_ENTRY_RECORDS or base < 1 or len(data) < head:
        return f"a batch header of {n} records from record {base} in {len(data)} bytes"
    lengths = struct.unpack_from(f"<{n}I", data, BATCH_HEAD_SIZE + 16 * n)
    if min(lengths) <= TS_PREFIX.size or head + sum(lengths) != len(data):
        return "record body lengths that do not add up to the batch"
    return None


def parse_batch(data: bytes) -> Batch | None:
    """The batch an entry carries, or None for ticks and no-ops."""
    if len(data) < BATCH_HEAD_SIZE or data[0] != KIND_BATCH:
        return None
    _, ts, base, n = _BATCH.unpack_from(data)
    return Batch(ts, base, n, data)


@dataclass(slots=True)
class Rec:
    """One committed record as it sits in the log: enough to key, filter and decode it."""

    index: int
    term: int
    ingest_ts: int
    id: bytes
    body: bytes

    @property
    def ts_corrected(self) -> int | None:
        """The event-time key from the body's binary prefix (None: the record has no ts)."""
        tc = int(TS_PREFIX.unpack_from(self.body)[0])
        return None if tc == NO_TS else tc

    def decode(self) -> StoredRecord:
        return decode_body(self.index, self.term, self.ingest_ts, self.id, self.body)


_TICK = struct.Struct("<Bq")


def tick_data(ingest_ts: int) -> bytes:
    """A leader time tick: no record, only the leader's time, so the event-time watermark
    (a function of the committed log) advances when no records arrive."""
    return _TICK.pack(KIND_TICK, ingest_ts)


def entry_tick_ts(data: bytes) -> int | None:
    if len(data) != _TICK.size or data[0] != KIND_TICK:
        return None
    return int(_TICK.unpack(data)[1])


def entry_ingest_ts(data: bytes) -> int | None:
    """The leader's time of a batch or tick entry, or None for other entries."""
    if len(data) >= BATCH_HEAD_SIZE and data[0] == KIND_BATCH:
        return int(_BATCH.unpack_from(data)[1])
    return entry_tick_ts(data)
