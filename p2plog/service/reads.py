"""The reads of a client session: ``query`` pages and ``tail`` streams, in index or event order.

Every page is bounded in records (``MAX_LIMIT``) and in bytes (``state.scans.PAGE_BYTES``): a
client asking for everything gets it a page at a time (``next_index``), never one huge frame.
Scans run in bounded steps in the storage worker thread (``NodeApi.read_log``: appends share
it, so they get in between steps). A tail whose reader falls behind its buffer is ended with
``end {code: "behind"}`` and the index to resume from; one whose replies stop going out loses
its connection with the reason (``Session.send``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, Protocol, TypeVar

import trio

from p2plog.order.reorder import Emitted
from p2plog.service.api import NodeApi
from p2plog.state.entry import BatchRef
from p2plog.state.event_feed import IsDup, emitted_json, emitted_record
from p2plog.state.scans import (
    MAX_LIMIT,
    PAGE_BYTES,
    Filter,
    ScanLog,
    Span,
    event_scan,
    record_json,
    row_bytes,
    scan_step,
    span_for_bytes,
)
from p2plog.state.stored import StoredRecord
from p2plog.wire.client import Query, Select, Tail

R = TypeVar("R")
TAIL_PAGE = 1000


class Session(Protocol):
    """What a read uses of its session (``service.session.Session``): the node, and the way
    back to the client."""

    @property
    def node(self) -> NodeApi: ...

    async def send(self, kind: str, fields: dict[str, Any]) -> None: ...


def selection(sel: Select) -> Filter:
    return Filter(
        from_index=max(1, sel.from_index or 1),
        to_index=sel.to_index,
        since=sel.since,
        until=sel.until,
        level=sel.level,
        source=sel.source,
        grep=sel.grep,
        fields=tuple(sel.fields),
    )


async def read(s: Session, fn: Callable[[ScanLog, IsDup], R]) -> R:
    """Run ``fn(log, is_dup)`` in the storage worker thread (reads and appends share it, so a
    read never races an append)."""
    return await s.node.read_log(fn)


def span(s: Session, lo: int, hi: int) -> Span:
    """Record indexes ``[lo, hi)`` capped at what is applied, and where the log holds them."""
    applied = s.node.applied
    hi = min(hi, applied.record_index + 1)
    return Span(lo, hi, applied.locate(lo), applied.applied_index + 1)


async def scan(
    s: Session, where: Span, flt: Filter, limit: int, max_bytes: int = PAGE_BYTES
) -> tuple[list[StoredRecord], int]:
    """Matches in ``where`` (at most ``limit``, about ``max_bytes``): bounded steps, one
    worker-thread call each, so appends get in between them."""
    out: list[StoredRecord] = []
    while True:
        step = partial(_scan_step, where, flt, limit - len(out), max_bytes)
        got, nxt, rest = await read(s, step)
        out += got
        max_bytes -= sum(map(row_bytes, got))
        if rest is None or len(out) >= limit or max_bytes <= 0:
            return out, nxt
        where = rest


def _scan_step(
    where: Span,
    flt: Filter,
    limit: int,
    max_bytes: int,
    storage: ScanLog,
    dups: IsDup,
) -> tuple[list[StoredRecord], int, Span | None]:
    return scan_step(storage, where, flt, dups, limit, max_bytes)


async def query(s: Session, q: Query) -> None:
    flt = selection(q)
    limit = min(q.limit, MAX_LIMIT)
    await s.node.read_barrier()
    if flt.since is not None:  # start where the time range can start, not at the beginning
        flt = replace(flt, from_index=s.node.applied.times.seek(flt.since, flt.from_index))
    where = span(s, flt.from_index, (flt.to_index or 1 << 62) + 1)
    if q.order == "event":  # a replay from any index is exact (``state.scans.event_scan``)
        await _event_page(s, q.req, flt, where, limit)
        return
    recs, nxt = await scan(s, where, flt, limit)
    rows = [record_json(r) for r in recs]
    done = nxt >= where.hi
    await s.send("batch", {"req": q.req, "records": rows, "next_index": nxt, "done": done})


async def _event_page(s: Session, req: int, flt: Filter, where: Span, limit: int) -> None:
    """The event-time stream's order and flags for the records of one index range (at most
    ``limit`` indexes and about ``PAGE_BYTES`` of them, so at most that many rows); the
    client pages on with ``next_index``."""
    end = where.hi
    page = span(s, flt.from_index, min(end, flt.from_index + limit))
    page = await read(s, lambda st, _dup: span_for_bytes(st, page, PAGE_BYTES))
    window = s.node.cluster.reorder_window_ms
    pairs: list[tuple[StoredRecord, Emitted[BatchRef]]] = await read(
        s, lambda st, dup: event_scan(st, page, dup, window_ms=window)
    )
    rows = [emitted_json(em, r) for r, em in pairs if flt.matches(r)]
    done = page.hi >= end
    await s.send("batch", {"req": req, "records": rows, "next_index": page.hi, "done": done})


async def tail(s: Session, t: Tail, flt: Filter | None = None) -> None:
    """Follow the log until cancelled (the session holds the cancel scope); ``flt`` instead
    of the request's selection (the Loki tail's)."""
    if t.order == "event":
        await _tail_events(s, t.req, flt or selection(t))
    else:
        await _tail_index(s, t, flt or selection(t))


async def _tail_index(s: Session, t: Tail, flt: Filter) -> None:
    applied = s.node.applied
    await s.node.read_barrier()
    sub = s.node.tail_hub.subscribe()
    pos = t.from_index or applied.record_index + 1
    try:
        while True:
            if sub.behind_at is not None:
                msg = "this reader fell behind the live stream; resume from resume_index"
                await s.send(
                    "end", {"req": t.req, "code": "behind", "msg": msg, "resume_index": pos}
                )
                return
            last = applied.record_index
            first_buffered = sub.buf[0].index if sub.buf else last + 1
            if pos < first_buffered and pos <= last:
                recs, pos = await scan(s, span(s, pos, first_buffered), flt, TAIL_PAGE)
                await batch(s, t.req, [(record_json(r), row_bytes(r)) for r in recs])
                continue
            if sub.buf:
                items = sub.take()
                rows = []
                for rec in items:
                    if rec.index >= pos and flt.matches(r := rec.decode()):
                        rows.append((record_json(r), row_bytes(r)))
                pos = max(pos, items[-1].index + 1)
                await batch(s, t.req, rows)
                continue
            sub.wakeup = trio.Event()
            await sub.wakeup.wait()
    finally:
        s.node.tail_hub.unsubscribe(sub)


async def _tail_events(s: Session, req: int, flt: Filter) -> None:
    """Follow the event-time ordered stream from now (it is the same on every node).
    ``from_index`` does not apply: event order is not index order."""
    sub = s.node.event_hub.subscribe()
    try:
        while True:
            if sub.behind_at is not None:
                msg = "this reader fell behind the event-time stream; tail again to follow it"
                fields = {"req": req, "code": "behind", "msg": msg, "resume_index": None}
                await s.send("end", fields)
                return
            if sub.buf:
                rows = []
                for em in sub.take():
                    r = emitted_record(em)
                    if flt.matches(r):
                        rows.append((emitted_json(em, r), row_bytes(r)))
                await batch(s, req, rows)
                continue
            sub.wakeup = trio.Event()
            await sub.wakeup.wait()
    finally:
        s.node.event_hub.unsubscribe(sub)


async def batch(s: Session, req: int, rows: list[tuple[dict[str, Any], int]]) -> None:
    """Send tail rows (each with its size) in frames of at most ``TAIL_PAGE`` rows and
    about ``PAGE_BYTES``."""
    page: list[dict[str, Any]] = []
    size = 0
    for row, n in rows:
        page.append(row)
        size += n
        if len(page) >= TAIL_PAGE or size >= PAGE_BYTES:
            await s.send("batch", {"req": req, "records": page, "done": False})
            page, size = [], 0
    if page:
        await s.send("batch", {"req": req, "records": page, "done": False})
