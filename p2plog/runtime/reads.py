"""Reads from the committed log: filtered, paged scans (``query``) in a worker thread.

Only applied (committed) records are visible (the high-watermark rule); duplicates the applier
marked are skipped. Scans go through the storage limiter in bounded chunks, so a large query
never holds the storage for long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2plog.raft.types import Index
from p2plog.record import LEVELS, StoredRecord, decode_entry
from p2plog.storage.segmented_log import SegmentedLog

CHUNK_ENTRIES = 4096
CHUNK_BYTES = 4 << 20
MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Filter:
    from_index: int = 1
    to_index: int | None = None
    since: int | None = None
    until: int | None = None
    level: str | None = None
    source: str | None = None
    grep: str | None = None

    def matches(self, r: StoredRecord) -> bool:
        if self.level is not None and LEVELS.index(r.level) < LEVELS.index(self.level):
            return False
        if self.source is not None and r.source != self.source:
            return False
        if self.grep is not None and self.grep not in r.msg:
            return False
        t = r.ts_corrected if r.ts_corrected is not None else r.ingest_ts
        if self.since is not None and t < self.since:
            return False
        return not (self.until is not None and t >= self.until)


def scan_chunk(
    storage: SegmentedLog,
    lo: int,
    hi: int,
    flt: Filter,
    dups: Callable[[int], bool],
    limit: int,
) -> tuple[list[StoredRecord], int]:
    """Matching records in ``[lo, hi)``, at most ``limit``; returns (records, next index)."""
    out: list[StoredRecord] = []
    lo = max(lo, storage.first_index())
    while lo < hi and len(out) < limit:
        stop = min(hi, lo + CHUNK_ENTRIES)
        entries = storage.entries(Index(lo), Index(stop), CHUNK_BYTES)
        for e in entries:
            lo = e.index + 1
            if dups(e.index):
                continue
            r = decode_entry(e.index, e.term, e.data)
            if r is not None and flt.matches(r):
                out.append(r)
                if len(out) >= limit:
                    break
        if not entries:
            break
    return out, lo


def record_json(r: StoredRecord, late: bool = False) -> dict[str, Any]:
    d = r.to_json()
    d["late"] = late
    return d
