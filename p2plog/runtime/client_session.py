"""One client websocket: requests in, replies out, many requests in flight.

Malformed frames (undecodable, oversized, no ``req``) close the connection with a reason; a
well-formed request with bad fields gets ``error bad_request`` and the connection stays; a bad
record gets a per-record error in the ``ack`` and nothing of it is stored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from p2plog.order.reorder import Emitted
from p2plog.record import (
    LEVELS,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    BatchRef,
    RecordError,
    StoredRecord,
    uuid_text,
    validate,
)
from p2plog.runtime.event_stream import emitted_json, emitted_record
from p2plog.runtime.node import RETRY_AFTER_MS, Node
from p2plog.runtime.reads import MAX_LIMIT, Filter, Span, event_scan, record_json, scan_step
from p2plog.storage.segmented_log import SegmentedLog
from p2plog.wire.client import MAX_CLIENT_FRAME, add_to_runs
from p2plog.wire.envelope import (
    ProtocolError,
    decode,
    encode,
    get_bool,
    get_int,
    get_list,
    get_opt_int,
    get_opt_str,
    get_str,
)

log = logging.getLogger("p2plog.client_session")
R = TypeVar("R")

SEND_TIMEOUT_S = 30.0
MAX_CLIENT_OFFSET_NS = 86_400 * 10**9
TAIL_PAGE = 1000


class Session:
    def __init__(self, node: Node, ws: WebSocketConnection) -> None:
        self.node = node
        self.ws = ws
        self.inflight = 0
        self.tails: dict[int, trio.CancelScope] = {}

    async def send(self, kind: str, fields: dict[str, Any]) -> None:
        with trio.fail_after(SEND_TIMEOUT_S):
            await self.ws.send_message(encode(kind, fields))

    async def error(self, req: int, code: str, msg: str) -> None:
        fields: dict[str, Any] = {"req": req, "code": code, "msg": msg}
        if code in ("unavailable", "overloaded", "disk_full", "timeout"):
            fields["retry_after_ms"] = RETRY_AFTER_MS
        await self.send("error", fields)

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            try:
                while True:
                    raw = await self.ws.get_message()
                    msg = decode(raw, MAX_CLIENT_FRAME)
                    req = get_int(msg, "req")
                    self.dispatch(nursery, req, msg, len(raw))
            except ProtocolError as e:
                log.warning("%s: closing client %s: %s", self.node.me.id, self.ws.remote, e)
                with trio.move_on_after(1.0):
                    await self.ws.aclose(1008, str(e)[:120])
            except ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    def dispatch(self, nursery: trio.Nursery, req: int, msg: dict[str, Any], size: int) -> None:
        kind = msg["kind"]
        if kind == "submit":
            nursery.start_soon(self.guard, req, self.submit(req, msg, size))
        elif kind == "query":
            nursery.start_soon(self.guard, req, self.query(req, msg))
        elif kind == "tail":
            scope = trio.CancelScope()
            self.tails[req] = scope
            nursery.start_soon(self.guard, req, self.tail(req, msg, scope))
        elif kind == "cancel":
            existing = self.tails.pop(req, None)
            if existing is not None:
                existing.cancel()
        elif kind == "status":
            nursery.start_soon(
                self.guard, req, self.send("status", {"req": req, "node": self.node.status()})
            )
        elif kind == "time":
            t2 = self.node.corrected_now()
            nursery.start_soon(self.guard, req, self.reply_time(req, msg, t2))
        else:
            nursery.start_soon(
                self.guard, req, self.error(req, "bad_request", f"unknown kind {kind!r}")
            )

    async def guard(self, req: int, work: Any) -> None:
        """Run one request; a bad field becomes ``bad_request``, a dead connection ends it."""
        with contextlib.suppress(ConnectionClosed, trio.TooSlowError):
            try:
                await work
            except ProtocolError as e:
                await self.error(req, "bad_request", str(e))

    async def reply_time(self, req: int, msg: dict[str, Any], t2: int) -> None:
        t1 = get_int(msg, "t1")
        t3 = self.node.corrected_now()
        await self.send("time", {"req": req, "t1": t1, "t2": t2, "t3": t3})

    # -------------------------------------------------------------- submit

    async def submit(self, req: int, msg: dict[str, Any], size: int) -> None:
        ack = get_str(msg, "ack", "quorum")
        if ack not in ("quorum", "leader"):
            raise ProtocolError(f"submit: ack must be quorum or leader, got {ack!r}")
        records = get_list(msg, "records", MAX_BATCH_RECORDS)
        if size > MAX_BATCH_BYTES + 64 * 1024:
            await self.error(req, "bad_request", f"batch of {size} bytes exceeds {MAX_BATCH_BYTES}")
            return
        limit = self.node.config.cluster.max_conn_inflight_records
        if self.inflight + len(records) > limit:
            await self.error(
                req, "overloaded", f"over {limit} records in flight on this connection"
            )
            return
        compact = get_bool(msg, "compact", False)
        offset = get_int(msg, "clock_offset_ns", 0)
        if abs(offset) > MAX_CLIENT_OFFSET_NS:
            raise ProtocolError(f"submit: clock_offset_ns {offset} is beyond one day")
        received = self.node.corrected_now()
        uncertain = self.node.clock_uncertain()
        node_id = self.node.me.id
        ids: list[bytes] = []
        bodies: list[bytes] = []
        errors: list[dict[str, Any]] = []
        for i, r in enumerate(records):
            try:
                a = validate(
                    r,
                    node=node_id,
                    clock_offset_ns=offset,
                    received_ns=received,
                    clock_uncertain=uncertain,
                )
            except RecordError as e:
                errors.append({"i": i, "error": f"record {i}: {e}"})
                continue
            ids.append(a.id)
            bodies.append(a.body)
        acks: list[dict[str, Any]] = []
        if not ids:
            await self.send("ack", {"req": req, "acks": acks, "errors": errors})
            return
        self.inflight += len(ids)
        try:
            res = await self.node.submit(ids, bodies, ack)
        finally:
            self.inflight -= len(ids)
        if res.error is not None:
            await self.error(req, *res.error)
            return
        # Positions in the submission of the accepted records (identity when none was bad).
        bad = {e["i"] for e in errors}
        where = [i for i in range(len(records)) if i not in bad] if bad else range(len(ids))
        runs: list[list[int]] = []
        for p0, m, index0, term in res.runs:
            if compact and not bad:
                runs.append([p0, m, index0, term])
                continue
            for j in range(m):
                if compact:
                    add_to_runs(runs, where[p0 + j], index0 + j, term)
                else:
                    acks.append(_ack_json(where[p0 + j], ids[p0 + j], index0 + j, term, False))
        for k, got in res.singles.items():
            acks.append(_ack_json(where[k], got.id, got.index, got.term, got.dup))
        if res.acked < len(ids):
            done = set(res.singles)
            for p0, m, _, _ in res.runs:
                done.update(range(p0, p0 + m))
            for k in range(len(ids)):
                if k not in done:
                    i = where[k]
                    errors.append({"i": i, "error": f"record {i}: not acknowledged; retry"})
        acks.sort(key=lambda a: int(a["i"]))
        reply: dict[str, Any] = {"req": req, "acks": acks, "errors": errors}
        if compact:
            reply["runs"] = runs
        await self.send("ack", reply)

    # --------------------------------------------------------------- reads

    def filter(self, msg: dict[str, Any]) -> Filter:
        level = get_opt_str(msg, "level")
        if level is not None and level not in LEVELS:
            raise ProtocolError(f"level {level!r} is not one of {'|'.join(LEVELS)}")
        order = get_str(msg, "order", "index")
        if order not in ("index", "event"):
            raise ProtocolError(f"order must be index or event, got {order!r}")
        return Filter(
            from_index=max(1, get_opt_int(msg, "from_index") or 1),
            to_index=get_opt_int(msg, "to_index"),
            since=get_opt_int(msg, "since"),
            until=get_opt_int(msg, "until"),
            level=level,
            source=get_opt_str(msg, "source"),
            grep=get_opt_str(msg, "grep"),
        )

    async def read(self, fn: Callable[[SegmentedLog, Callable[[int], bool]], R]) -> R:
        """Run ``fn(storage, is_dup)`` in the storage worker thread (reads and appends share
        one limiter, so a read never races an append)."""
        loop = self.node.loop
        storage = self.node.storage
        assert loop is not None
        assert storage is not None
        is_dup = loop.applier.dup_indexes.__contains__
        return await trio.to_thread.run_sync(lambda: fn(storage, is_dup), limiter=self.node.limiter)

    def span(self, lo: int, hi: int) -> Span:
        """Record indexes ``[lo, hi)`` capped at what is applied, and where the log holds them."""
        applier = self.node.loop.applier if self.node.loop else None
        assert applier is not None
        hi = min(hi, applier.record_index + 1)
        return Span(lo, hi, applier.locate(lo), applier.applied_index + 1)

    async def scan(self, span: Span, flt: Filter, limit: int) -> tuple[list[Any], int]:
        """Matches in ``span`` (at most ``limit``): bounded steps, one worker-thread call each,
        so appends (which share the storage limiter) get in between them."""
        out: list[Any] = []
        while True:
            got, nxt, rest = await self.read(partial(_scan_step, span, flt, limit - len(out)))
            out += got
            if rest is None or len(out) >= limit:
                return out, nxt
            span = rest

    async def event_scan(self, span: Span) -> list[tuple[StoredRecord, Emitted[BatchRef]]]:
        window = self.node.config.cluster.reorder_window_ms
        return await self.read(lambda st, dup: event_scan(st, span, dup, window_ms=window))

    async def query(self, req: int, msg: dict[str, Any]) -> None:
        flt = self.filter(msg)
        limit = min(get_int(msg, "limit", 1000), MAX_LIMIT)
        if limit < 1:
            raise ProtocolError("query: limit must be at least 1")
        await self.node.read_barrier()
        span = self.span(flt.from_index, (flt.to_index or 1 << 62) + 1)
        if get_str(msg, "order", "index") == "event":
            # The event-time stream's order and flags for the records of one index range (at
            # most ``limit`` indexes, so at most ``limit`` rows); page on with next_index.
            end = span.hi
            span = self.span(flt.from_index, min(end, flt.from_index + limit))
            pairs = await self.event_scan(span)
            rows = [emitted_json(em, r) for r, em in pairs if flt.matches(r)]
            await self.send(
                "batch",
                {"req": req, "records": rows, "next_index": span.hi, "done": span.hi >= end},
            )
            return
        recs, nxt = await self.scan(span, flt, limit)
        rows = [record_json(r) for r in recs]
        done = nxt >= span.hi
        await self.send("batch", {"req": req, "records": rows, "next_index": nxt, "done": done})

    async def tail(self, req: int, msg: dict[str, Any], scope: trio.CancelScope) -> None:
        flt = self.filter(msg)
        if get_str(msg, "order", "index") == "event":
            await self.tail_events(req, flt, scope)
            return
        loop = self.node.loop
        assert loop is not None
        await self.node.read_barrier()
        sub = self.node.tail_hub.subscribe()
        pos = get_opt_int(msg, "from_index") or loop.applier.record_index + 1
        try:
            with scope:
                while True:
                    if sub.behind_at is not None:
                        await self.send(
                            "end",
                            {
                                "req": req,
                                "code": "behind",
                                "msg": "this reader fell behind the live stream; resume from "
                                "resume_index",
                                "resume_index": pos,
                            },
                        )
                        return
                    applied = loop.applier.record_index
                    first_buffered = sub.buf[0].index if sub.buf else applied + 1
                    if pos < first_buffered and pos <= applied:
                        span = self.span(pos, first_buffered)
                        recs, pos = await self.scan(span, flt, TAIL_PAGE)
                        if recs:
                            await self.batch(req, [record_json(r) for r in recs])
                        continue
                    if sub.buf:
                        items = list(sub.buf)
                        sub.buf.clear()
                        rows = []
                        for rec in items:
                            if rec.index < pos:
                                continue
                            r = rec.decode()
                            if flt.matches(r):
                                rows.append(record_json(r))
                        pos = max(pos, items[-1].index + 1)
                        if rows:
                            await self.batch(req, rows)
                        continue
                    sub.wakeup = trio.Event()
                    await sub.wakeup.wait()
        finally:
            self.node.tail_hub.unsubscribe(sub)
            self.tails.pop(req, None)

    async def tail_events(self, req: int, flt: Filter, scope: trio.CancelScope) -> None:
        """Follow the event-time ordered stream from now (it is the same on every node).
        ``from_index`` does not apply: event order is not index order."""
        sub = self.node.events.hub.subscribe()
        try:
            with scope:
                while True:
                    if sub.behind_at is not None:
                        await self.send(
                            "end",
                            {
                                "req": req,
                                "code": "behind",
                                "msg": "this reader fell behind the event-time stream; tail "
                                "again to follow it from now",
                                "resume_index": None,
                            },
                        )
                        return
                    if sub.buf:
                        items = list(sub.buf)
                        sub.buf.clear()
                        rows = []
                        for em in items:
                            r = emitted_record(em)
                            if flt.matches(r):
                                rows.append(emitted_json(em, r))
                        if rows:
                            await self.batch(req, rows)
                        continue
                    sub.wakeup = trio.Event()
                    await sub.wakeup.wait()
        finally:
            self.node.events.hub.unsubscribe(sub)
            self.tails.pop(req, None)

    async def batch(self, req: int, rows: list[dict[str, Any]]) -> None:
        await self.send("batch", {"req": req, "records": rows, "done": False})


def _ack_json(i: int, rid: bytes, index: int, term: int, dup: bool) -> dict[str, Any]:
    return {"i": i, "id": uuid_text(rid), "index": index, "term": term, "dup": dup}


def _scan_step(
    span: Span, flt: Filter, limit: int, storage: SegmentedLog, dups: Callable[[int], bool]
) -> tuple[list[StoredRecord], int, Span | None]:
    return scan_step(storage, span, flt, dups, limit)


async def serve_client(node: Node, ws: WebSocketConnection) -> None:
    await Session(node, ws).serve()


__all__ = ["get_bool", "serve_client"]
