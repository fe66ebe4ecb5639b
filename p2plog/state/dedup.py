"""A bounded window of committed record ids, for exactly-once storage of retried submissions.

Bounded by count and by age, where age is measured in the log's own ingest timestamps (never
the local clock), so every node evicts the same ids at the same index and marks the same
duplicates. Rebuilt by re-applying the log on restart.
"""

from __future__ import annotations

from collections import OrderedDict


class DedupWindow:
    def __init__(self, max_records: int, max_age_ns: int) -> None:
        assert max_records > 0
        assert max_age_ns > 0
        self.max_records = max_records
        self.max_age_ns = max_age_ns
        self._ids: OrderedDict[bytes, tuple[int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, rid: bytes) -> int | None:
        """The index the id was first committed at, if it is in the window."""
        hit = self._ids.get(rid)
        return hit[0] if hit else None

    def add(self, rid: bytes, index: int, ingest_ts: int) -> None:
        self._ids[rid] = (index, ingest_ts)
        while len(self._ids) > self.max_records:
            self._ids.popitem(last=False)
        horizon = ingest_ts - self.max_age_ns
        while self._ids:
            _, (_, ts) = next(iter(self._ids.items()))
            if ts >= horizon:
                break
            self._ids.popitem(last=False)
