"""Scans of the committed log: filtered, paged reads (``query``) in index order or in the
event-time stream's order (``event_scan``), and the originals of retried ids (``bodies_at``).

Pure functions of what a ``ScanLog`` returns (the runtime passes its ``SegmentedLog`` and runs
them in the storage worker thread). Only applied (committed) records are visible (the
high-watermark rule): the caller bounds a ``Span`` by the applied index; duplicates the applier
marked are skipped. Every scan reads in bounded chunks and steps, so a large query never holds
the storage (which appends share) for long.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from p2plog.order.reorder import DAY_MS, Emitted, ReorderBuffer
from p2plog.raft.types import Entry, Index
from p2plog.record import LEVELS, NO_TS, TS_PREFIX
from p2plog.state.entry import BatchRef, parse_batch
from p2plog.state.event_feed import IsDup, emitted_record, feed_entry, watermark_time
from p2plog.state.stored import StoredRecord, decode_body, level_at_least

CHUNK_ENTRIES = 4096
CHUNK_BYTES = 4 << 20
STEP_RECORDS = 16_384  # records one scan step looks at (tens of ms) before it lets writes in
STEP_BYTES = 1 << 20
MAX_LIMIT = 10_000
PAGE_BYTES = 1 << 20  # a reply page holds at most about this many bytes of records
ROW_OVERHEAD = 160  # a record's keys and numbers in a reply, besides its body's bytes


class ScanLog(Protocol):
    """What a scan reads: the log's retained entries (``SegmentedLog`` is one)."""

    def first_index(self) -> Index:
        """The first entry still held (1 until older segments are dropped)."""
        ...

    def entries(self, lo: Index, hi: Index, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)`` up to ``max_bytes`` of payload, but always at least one."""
        ...


@dataclass(frozen=True, slots=True)
class Filter:
    from_index: int = 1
    to_index: int | None = None
    since: int | None = None
    until: int | None = None
    level: str | None = None
    source: str | None = None
    grep: str | None = None
    fields: tuple[tuple[str, str], ...] = ()  # (key, value as text): all must match
    # A further test of the decoded record, after all of the above (a Loki query's label
    # matchers and line filters: ``service.loki_api``).
    extra: Callable[[StoredRecord], bool] | None = None

    @property
    def level_no(self) -> int:
        return 0 if self.level is None else LEVELS.index(self.level)

    def raw_needles(self) -> list[bytes]:
        """Byte strings a matching record's encoded body must contain: a cheap test that
        skips the CBOR decode of most records a ``grep`` or ``source`` filter rejects."""
        return [x.encode() for x in (self.grep, self.source) if x] + [
            k.encode() for k, _ in self.fields
        ]

    def time_rejects(self, body: bytes, ingest_ts: int) -> bool:
        """The record is outside ``since``/``until``, read from its binary prefix (no decode):
        the same time ``matches`` uses."""
        if self.since is None and self.until is None:
            return False
        tc = TS_PREFIX.unpack_from(body)[0]
        t = ingest_ts if tc == NO_TS else tc
        return (self.since is not None and t < self.since) or (
            self.until is not None and t >= self.until
        )

    def matches(self, r: StoredRecord) -> bool:
        if self.level is not None and LEVELS.index(r.level) < LEVELS.index(self.level):
            return False
        if self.source is not None and r.source != self.source:
            return False
        if self.grep is not None and self.grep not in r.msg:
            return False
        for k, want in self.fields:
            if k not in r.fields or field_text(r.fields[k]) != want:
                return False
        t = r.ts_corrected if r.ts_corrected is not None else r.ingest_ts
        if self.since is not None and t < self.since:
            return False
        if self.until is not None and t >= self.until:
            return False
        return self.extra is None or self.extra(r)


@dataclass(frozen=True, slots=True)
class Span:
    """Where a read runs: record indexes ``[lo, hi)``, found in the log from Raft index
    ``start`` (``Applier.locate(lo)``) up to, not including, Raft index ``end``."""

    lo: int
    hi: int
    start: int
    end: int


def field_text(v: object) -> str:
    """A field value as ``--field key=value`` writes it: text as is, others as JSON
    (``42``, ``1.5``, ``true``)."""
    return v if isinstance(v, str) else json.dumps(v)


def row_bytes(r: StoredRecord) -> int:
    """About what a record costs in a reply page (its text, plus keys and numbers)."""
    f = sum(len(k) + (len(v) if isinstance(v, str) else 9) for k, v in r.fields.items())
    return len(r.msg) + len(r.source) + f + ROW_OVERHEAD


def scan_step(
    storage: ScanLog,
    span: Span,
    flt: Filter,
    dups: IsDup,
    limit: int,
    max_bytes: int = PAGE_BYTES,
    budget: int = STEP_RECORDS,
) -> tuple[list[StoredRecord], int, Span | None]:
    """One bounded step of a scan: at most ``limit`` matches (and about ``max_bytes`` of them,
    at least one: a 50 MB reply of 48 KB records once cost 200 MB and lost elections), after
    looking at about ``budget`` records. Returns (matches, next record index, the span left,
    or None when the span is done). Bounded so a long filtered scan never holds the storage
    (which appends share) for long: one unbounded page once stalled every write for 6 s."""
    out: list[StoredRecord] = []
    lo, hi = span.lo, span.hi
    if limit <= 0 or lo >= hi:
        return out, lo, None
    raw = flt.raw_needles()
    pos = max(span.start, storage.first_index())
    scanned = 0
    while pos < span.end:
        entries = storage.entries(Index(pos), Index(min(span.end, pos + CHUNK_ENTRIES)), STEP_BYTES)
        if not entries:
            break
        for e in entries:
            b = parse_batch(e.data)
            if b is not None and b.base + b.n > lo:
                if b.base >= hi:
                    return out, hi, None
                ids = b.ids()
                base, term, ingest = b.base, e.term, b.ingest_ts
                for k, body in enumerate(b.bodies()):
                    i = base + k
                    if i < lo:
                        continue
                    if i >= hi:
                        return out, hi, None
                    lo = i + 1
                    scanned += 1
                    if dups(i) or (raw and not all(n in body for n in raw)):
                        continue
                    if flt.level is not None and not level_at_least(body, flt.level_no):
                        continue
                    if flt.time_rejects(body, ingest):
                        continue
                    d = decode_body(i, term, ingest, ids[k], body)
                    if flt.matches(d) and len(out) < limit:
                        out.append(d)
                        max_bytes -= row_bytes(d)
                        if len(out) >= limit or max_bytes <= 0:
                            return out, lo, Span(lo, hi, e.index, span.end)
            pos = e.index + 1
            if scanned >= budget:
                return out, lo, Span(lo, hi, pos, span.end)
    # Every applied entry from ``start`` was read: the records of [lo, hi) not seen are
    # below the log's first index (cut by retention), so the range is done.
    return out, max(lo, hi) if pos >= span.end else lo, None


def span_for_bytes(storage: ScanLog, span: Span, max_bytes: int) -> Span:
    """``span`` cut short after about ``max_bytes`` of record bodies (at least one record):
    an event-order page covers whole index ranges, so its size is chosen before the replay."""
    pos, lo, hi = max(span.start, storage.first_index()), span.lo, span.hi
    while pos < span.end:
        entries = storage.entries(Index(pos), Index(min(span.end, pos + CHUNK_ENTRIES)), STEP_BYTES)
        if not entries:
            break
        for e in entries:
            b = parse_batch(e.data)
            if b is None or b.base + b.n <= lo:
                continue
            if b.base >= hi:
                return span
            for k, n in enumerate(b.lengths()):
                i = b.base + k
                if lo <= i < hi:
                    max_bytes -= n + ROW_OVERHEAD
                    if max_bytes <= 0:
                        return Span(lo, i + 1, span.start, span.end)
        pos = entries[-1].index + 1
    return span


def bodies_at(storage: ScanLog, span: Span, want: set[int]) -> dict[int, bytes]:
    """The bodies of the records ``want`` (record indexes inside ``span``), read in one pass
    over the span: the originals that retried ids are compared with."""
    out: dict[int, bytes] = {}
    pos = max(span.start, storage.first_index())
    while pos < span.end and len(out) < len(want):
        entries = storage.entries(Index(pos), Index(min(span.end, pos + CHUNK_ENTRIES)), STEP_BYTES)
        if not entries:
            break
        for e in entries:
            b = parse_batch(e.data)
            if b is None or b.base + b.n <= span.lo:
                continue
            if b.base >= span.hi:
                return out
            for k, body in enumerate(b.bodies()):
                if b.base + k in want:
                    out[b.base + k] = body
        pos = entries[-1].index + 1
    return out


def record_json(r: StoredRecord, late: bool = False) -> dict[str, Any]:
    d = r.to_json()
    d["late"] = late
    return d


def event_scan(
    storage: ScanLog,
    span: Span,
    dups: IsDup,
    *,
    window_ms: int,
    absurd_after_ms: int = DAY_MS,
) -> list[tuple[StoredRecord, Emitted[BatchRef]]]:
    """The records of ``span`` in the order the event-time stream emits them, each with how
    the stream emitted it (its late/early/absurd flags).

    Why a partial replay is exact: ``ingest_ts`` grows with the index, so the watermark after
    any record depends only on the last record (or tick) before it that moved the watermark. A
    fresh buffer is seeded with that time, fed the records of the range, and fed every other
    record only as a watermark move (skipping duplicates and absurd records, as the live stream
    does) until the range has drained. Records still inside the window at the end of the log
    come last, in key order, unflagged. Only a buffer-full early release in the live stream
    (which depends on records outside the range) can differ.
    """
    buf: ReorderBuffer[BatchRef] = ReorderBuffer(
        reorder_window_ms=window_ms,
        max_records=1 << 62,
        max_bytes=1 << 62,
        absurd_after_ms=absurd_after_ms,
    )
    seed = _last_time_before(storage, buf, span.start, dups)
    if seed is not None:
        buf.add_tick(seed)
    out: list[tuple[StoredRecord, Emitted[BatchRef]]] = []
    pos = max(span.start, storage.first_index())
    done = False
    while pos < span.end and not done:
        hi = Index(min(span.end, pos + CHUNK_ENTRIES))
        entries = storage.entries(Index(pos), hi, CHUNK_BYTES)
        if not entries:
            break
        for e in entries:
            pos = e.index + 1
            emitted = feed_entry(buf, e, dup=dups, lo=span.lo, hi=span.hi)
            out.extend((emitted_record(em), em) for em in emitted)
            b = parse_batch(e.data)
            if b is not None and b.base + b.n >= span.hi and not buf.depth:
                done = True
                break
    out.extend((emitted_record(em), em) for em in buf.flush_all())
    return out


def _last_time_before(
    storage: ScanLog, buf: ReorderBuffer[BatchRef], start: int, dups: IsDup
) -> int | None:
    """The watermark time of the last entry before Raft index ``start`` that moves it."""
    hi = start
    first = storage.first_index()
    while hi > first:
        lo = max(first, hi - CHUNK_ENTRIES)
        entries = storage.entries(Index(lo), Index(hi), CHUNK_BYTES * 4)
        for e in reversed(entries):
            t = watermark_time(buf, e, dup=dups)
            if t is not None:
                return t
        hi = lo
    return None
