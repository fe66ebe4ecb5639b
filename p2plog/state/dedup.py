"""A bounded window of committed record ids, for exactly-once storage of retried submissions.

Bounded by count and by age, where age is measured in the log's own ingest timestamps (never
the local clock). Ids are added and evicted a whole log entry (batch) at a time, oldest first,
so every node evicts the same ids at the same index and marks the same duplicates. Rebuilt by
re-applying the log on restart.

Memory, since the window is the biggest thing a node holds (250k ids by default): each id maps
to its entry's shared ``_Chunk``, not to an ``int`` of its own (8 MB per 250k ids); the record
index is worked out from the chunk when a duplicate is looked up, which is rare.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import repeat


class _Chunk:
    """The fresh ids of one log entry and their record indexes (usually one ``range``)."""

    __slots__ = ("_packed", "_pos", "ids", "indexes", "ingest_ts")

    def __init__(self, ids: Sequence[bytes], indexes: Sequence[int], ingest_ts: int) -> None:
        self.ids = ids  # never changed once the chunk is made
        self.indexes = indexes
        self.ingest_ts = ingest_ts
        self._pos: dict[bytes, int] | None = None
        self._packed: bytes | None = None

    def packed(self) -> bytes:
        """The ids back to back, made once (every snapshot after the first reuses it)."""
        if self._packed is None:
            self._packed = b"".join(self.ids)
        return self._packed

    def index_of(self, rid: bytes) -> int:
        if self._pos is None:  # the first duplicate that hits this entry
            self._pos = dict(zip(self.ids, self.indexes, strict=True))
        return self._pos[rid]


class DedupWindow:
    def __init__(self, max_records: int, max_age_ns: int) -> None:
        assert max_records > 0
        assert max_age_ns > 0
        self.max_records = max_records
        self.max_age_ns = max_age_ns
        self._ids: dict[bytes, _Chunk] = {}
        self._chunks: deque[_Chunk] = deque()

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, rid: bytes) -> int | None:
        """The record index the id was first committed at, if it is in the window."""
        c = self._ids.get(rid)
        return None if c is None else c.index_of(rid)

    def isdisjoint(self, ids: Sequence[bytes]) -> bool:
        """None of ``ids`` is in the window (one C-level pass: the common case)."""
        return self._ids.keys().isdisjoint(ids)

    def export(self) -> list[tuple[bytes, Sequence[int], int]]:
        """The window's entries, oldest first, as (ids back to back, record indexes, ingest
        time): what a snapshot keeps so that a node restored from it marks the same
        duplicates. Immutable values: a chunk never changes once made."""
        return [(c.packed(), c.indexes, c.ingest_ts) for c in self._chunks]

    def restore(self, chunks: Sequence[tuple[Sequence[bytes], Sequence[int], int]]) -> None:
        """Refill an empty window from ``export``'s output (no eviction: it was in bounds)."""
        assert not self._chunks, "restore into a window that holds ids"
        for ids, indexes, ts in chunks:
            c = _Chunk(ids, indexes, ts)
            self._ids.update(zip(ids, repeat(c)))
            self._chunks.append(c)

    def add(self, rid: bytes, index: int, ingest_ts: int) -> None:
        self.add_many([rid], [index], ingest_ts)

    def add_many(self, ids: Sequence[bytes], indexes: Sequence[int], ingest_ts: int) -> None:
        """Add the new ids of one log entry (distinct, none in the window; ``indexes`` their
        record indexes, all with that entry's ingest time), then evict whole entries, oldest
        first, past the count or age bound."""
        c = _Chunk(ids, indexes, ingest_ts)
        window = self._ids
        window.update(zip(ids, repeat(c)))
        chunks = self._chunks
        chunks.append(c)
        horizon = ingest_ts - self.max_age_ns
        while chunks and (len(window) > self.max_records or chunks[0].ingest_ts < horizon):
            deque(map(window.pop, chunks.popleft().ids, repeat(None)), maxlen=0)
