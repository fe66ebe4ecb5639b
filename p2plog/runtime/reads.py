"""Reads from the committed log: filtered, paged scans (``query``) in a worker thread, in index
order or in the event-time stream's order (``event_scan``).

Only applied (committed) records are visible (the high-watermark rule); duplicates the applier
marked are skipped. Scans go through the storage limiter in bounded chunks, so a large query
never holds the storage for long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2plog.order.reorder import DAY_MS, Emitted, ReorderBuffer
from p2plog.raft.types import Entry, Index
from p2plog.record import LEVELS, StoredRecord, decode_entry
from p2plog.runtime.event_stream import emitted_record, feed_entry, watermark_time
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


def event_scan(
    storage: SegmentedLog,
    lo: int,
    hi: int,
    applied: int,
    dups: Callable[[int], bool],
    *,
    window_ms: int,
    absurd_after_ms: int = DAY_MS,
) -> list[tuple[StoredRecord, Emitted[Entry]]]:
    """The records of ``[lo, hi)`` in the order the event-time stream emits them, each with how
    the stream emitted it (its late/early/absurd flags).

    Why a partial replay is exact: ``ingest_ts`` grows with the index, so the watermark after
    any entry depends only on the last entry before it that carries a time. A fresh buffer is
    seeded with that time, fed the records of the range, and fed every later entry only as a
    watermark move (skipping duplicates and absurd records, as the live stream does) until the
    range has drained. Records still inside the window at the end of the log come last, in
    key order, unflagged. Only a buffer-full early release in the live stream (which depends on
    records outside the range) can differ.
    """
    buf: ReorderBuffer[Entry] = ReorderBuffer(
        reorder_window_ms=window_ms,
        max_records=1 << 62,
        max_bytes=1 << 62,
        absurd_after_ms=absurd_after_ms,
    )
    seed = _last_time_before(storage, buf, lo, dups)
    if seed is not None:
        buf.add_tick(seed)
    out: list[tuple[StoredRecord, Emitted[Entry]]] = []

    def take(emitted: list[Emitted[Entry]]) -> None:
        out.extend((emitted_record(em), em) for em in emitted)

    pos = max(lo, storage.first_index())
    end = applied + 1
    while pos < end and (pos < hi or buf.depth):
        entries = storage.entries(Index(pos), Index(min(end, pos + CHUNK_ENTRIES)), CHUNK_BYTES)
        if not entries:
            break
        for e in entries:
            pos = e.index + 1
            # Inside the range, records are fed as records; after it, only as watermark moves.
            take(feed_entry(buf, e, dup=dups(e.index), as_record=e.index < hi))
            if pos >= hi and not buf.depth:
                break
    take(buf.flush_all())
    return out


def _last_time_before(
    storage: SegmentedLog, buf: ReorderBuffer[Entry], lo: int, dups: Callable[[int], bool]
) -> int | None:
    """The watermark time of the last entry before ``lo`` that moves the watermark."""
    hi = lo
    first = storage.first_index()
    while hi > first:
        start = max(first, hi - CHUNK_ENTRIES)
        entries = storage.entries(Index(start), Index(hi), CHUNK_BYTES * 4)
        for e in reversed(entries):
            t = watermark_time(buf, e, dup=dups(e.index))
            if t is not None:
                return t
        hi = start
    return None
