"""A bounded window of committed record ids, for exactly-once storage of retried submissions.

Bounded by count and by age, where age is measured in the log's own ingest timestamps (never
the local clock). Ids are added and evicted a whole log entry (batch) at a time, oldest first,
so every node evicts the same ids at the same index and marks the same duplicates. Rebuilt by
re-applying the log on restart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class DedupWindow:
    def __init__(self, max_records: int, max_age_ns: int) -> None:
        assert max_records > 0
        assert max_age_ns > 0
        self.max_records = max_records
        self.max_age_ns = max_age_ns
        self._ids: dict[bytes, int] = {}
        self._chunks: deque[tuple[int, Sequence[bytes]]] = deque()

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, rid: bytes) -> int | None:
        """The record index the id was first committed at, if it is in the window."""
        return self._ids.get(rid)

    def add(self, rid: bytes, index: int, ingest_ts: int) -> None:
        self.add_many({rid: index}, ingest_ts)

    def add_many(self, fresh: dict[bytes, int], ingest_ts: int) -> None:
        """Add the new ids of one log entry (id -> record index, all with that entry's ingest
        time), then evict whole entries, oldest first, past the count or age bound."""
        ids = self._ids
        ids.update(fresh)
        chunks = self._chunks
        chunks.append((ingest_ts, tuple(fresh)))
        horizon = ingest_ts - self.max_age_ns
        while chunks and (len(ids) > self.max_records or chunks[0][0] < horizon):
            for rid in chunks.popleft()[1]:
                ids.pop(rid, None)
