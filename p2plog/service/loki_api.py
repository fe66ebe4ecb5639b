"""Loki's read API on the HTTP port: the subset Grafana's Loki data source and logcli use.

- ``GET /loki/api/v1/query_range?query=&start=&end=&since=&limit=&direction=``: log lines of a
  stream selector with line filters (``compat.logql``), in Loki's ``streams`` answer. Defaults as
  Loki's: the last hour, 100 lines, newest first; at most ``MAX_LINES`` lines.
- ``GET /loki/api/v1/query?query=&time=&limit=&direction=``: the same, for the hour before
  ``time`` (default now); and sums of constant vectors, the query Grafana's data source test
  sends (``vector(1)+vector(1)``, answered 2).
- Metric queries on either (``compat.logql_metric``: ``count_over_time`` and ``rate``, under
  ``sum``/``sum by``/``sum without``: what Grafana's logs-volume histogram asks), counting at
  most ``MAX_METRIC_LINES`` lines, in Loki's ``matrix`` (``vector`` for ``query``) answer.
- ``GET /loki/api/v1/labels``, ``/label/<name>/values`` (optionally ``query=``) and ``/series``
  (``match[]=``): over ``start``..``end`` (default the last 6 hours), read from the newest
  ``MAX_LABEL_RECORDS`` records of that range.
- ``GET /loki/api/v1/tail?query=&start=&limit=`` (websocket): the last ``limit`` lines since
  ``start`` (default an hour ago), then every new one, as Loki's tail frames.

Anything else (other metric queries, pipeline stages, other paths) is a 400 or 404 that says
what is served. How "newest first" is read: index windows from the end of the log, doubling, until
``limit`` lines are found (so the cost follows what is asked); lines come back sorted by time,
but a line whose event time is far behind its commit (a late record) is found only once the
scan reaches its index, which a small ``limit`` may not.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from p2plog.compat import loki_read
from p2plog.compat.logql import LogQLError, LogQuery, parse_query
from p2plog.compat.logql_metric import Counter, is_metric, parse_metric
from p2plog.compat.loki_read import Row, list_answer, row_of, row_of_json, streams_answer
from p2plog.compat.loki_time import parse_duration, parse_time
from p2plog.net.http import HttpRequest, HttpResponse, text
from p2plog.net.http_ws import PushSocket
from p2plog.service import reads
from p2plog.service.api import NodeApi
from p2plog.state.scans import MAX_LIMIT, Filter, row_bytes
from p2plog.state.stored import StoredRecord
from p2plog.wire.client import Tail

PREFIX = "/loki/api/v1/"
MAX_LINES = 5000  # Loki's max_entries_limit_per_query default
MAX_METRIC_LINES = 1_000_000  # lines one metric query counts (each is decoded)
MAX_LABEL_RECORDS = 20_000  # Grafana asks labels as a query is typed: keep each cheap
MAX_LOKI_TAILS = 16
MAX_SERIES_SELECTORS = 16
ANSWER_BYTES = 16 << 20  # of records one read holds (a query's lines, a labels scan)
HOUR_NS = 3600 * 10**9
FIRST_WINDOW = 4096
SERVED = "query_range, query, labels, label/NAME/values, series, tail"
JSON = "application/json"


class LokiApi:
    def __init__(self, node: NodeApi) -> None:
        self.node = node
        self.tails = 0
        self._r = _Frames(node, None)

    async def handle(self, req: HttpRequest) -> HttpResponse:
        what = req.path.removeprefix(PREFIX)
        try:
            query = req.arg("query") or ""
            if what == "query_range":
                start, end = self._range(req, HOUR_NS)
                if is_metric(query):
                    step = _step(req.arg("step"), start, end)
                    return await self._metric(query, start, end - 1, step)
                return await self._lines(req, start, end)
            if what == "query":
                t = parse_time(req.arg("time"), self.node.corrected_now())
                value = loki_read.constant_vector(query)
                if value is not None:
                    return _json(loki_read.vector_answer(value, t))
                if is_metric(query):
                    return await self._metric(query, t, t, 1)
                return await self._lines(req, t - HOUR_NS, t + 1)
            if what == "labels" or (what.startswith("label/") and what.endswith("/values")):
                return await self._labels(req, what)
            if what == "series":
                return await self._series(req)
            if what == "tail":
                return self._tail(req)
        except LogQLError as e:
            return text(400, str(e))
        return text(404, f"{req.path} is not served; under {PREFIX}: {SERVED}")

    # ---------------------------------------------------------------- lines

    def _range(self, req: HttpRequest, default_ns: int) -> tuple[int, int]:
        now = self.node.corrected_now()
        end = parse_time(req.arg("end"), now)
        since = req.arg("since")
        back = parse_duration(since) if since else default_ns
        start = parse_time(req.arg("start"), end - back)
        if start > end:
            raise LogQLError(f"start {start} is after end {end}")
        return start, end + 1  # Loki's end is inclusive

    async def _lines(self, req: HttpRequest, start: int, end: int) -> HttpResponse:
        q = parse_query(req.arg("query") or "")
        limit = _int(req.arg("limit"), 100, "limit")
        if limit > MAX_LINES:
            raise LogQLError(f"limit {limit}: at most {MAX_LINES} lines per query")
        direction = (req.arg("direction") or "backward").lower()
        if direction not in ("backward", "forward"):
            raise LogQLError(f"direction {direction!r}: backward or forward")
        found = await self.newest(q, start, end, limit, forward=direction == "forward")
        return _json(streams_answer(found))

    async def newest(
        self,
        q: LogQuery,
        start: int,
        end: int,
        limit: int,
        *,
        forward: bool = False,
        to_index: int | None = None,
    ) -> list[Row]:
        """The lines of ``q`` in ``[start, end)``: the first ``limit`` (``forward``) or the
        newest, sorted by time in that direction."""
        await self.node.read_barrier()
        flt = _filter(q, start, end)
        applied = self.node.applied
        lo = applied.times.seek(start)
        top = min(applied.record_index, to_index or 1 << 62) + 1
        if forward:
            rows = [row_of(r) for r in await self._forward(flt, lo, top, limit)]
        else:
            rows = [row_of(r) for r in await self._backward(flt, lo, top, limit)]
        rows.sort(key=lambda r: r[0], reverse=not forward)
        return rows[:limit]

    async def _forward(self, flt: Filter, lo: int, hi: int, limit: int) -> list[StoredRecord]:
        """The first ``limit`` matches of record indexes ``[lo, hi)``, at most about
        ``ANSWER_BYTES`` of them."""
        out: list[StoredRecord] = []
        size, pos = 0, lo
        while pos < hi and len(out) < limit and size < ANSWER_BYTES:
            was = pos
            got, pos = await reads.scan(
                self._r, reads.span(self._r, pos, hi), flt, limit - len(out)
            )
            out += got
            size += sum(map(row_bytes, got))
            if pos <= was:
                break  # no progress: nothing is held there any more (retention)
        return out

    async def _backward(self, flt: Filter, lo: int, hi: int, limit: int) -> list[StoredRecord]:
        """The last ``limit`` matches of record indexes ``[lo, hi)``, at most about
        ``ANSWER_BYTES`` of them (the newest kept): windows back from ``hi``, each twice the
        last, each scanned whole in bounded pages."""
        found: list[StoredRecord] = []
        budget = ANSWER_BYTES
        window = FIRST_WINDOW
        while hi > lo and len(found) < limit and budget > 0:
            w_lo = max(lo, hi - window)
            last: deque[tuple[StoredRecord, int]] = deque()
            size, pos = 0, w_lo
            while pos < hi:
                was = pos
                got, pos = await reads.scan(self._r, reads.span(self._r, pos, hi), flt, MAX_LINES)
                for r in got:
                    last.append((r, n := row_bytes(r)))
                    size += n
                while last and (len(last) > limit - len(found) or size > budget):
                    size -= last.popleft()[1]  # the oldest goes: newer ones came
                if pos <= was:
                    break  # no progress: nothing is held there any more (retention)
            found = [r for r, _ in last] + found
            budget -= size
            hi, window = w_lo, window * 2
        return found

    async def _metric(self, query: str, start: int, end: int, step: int) -> HttpResponse:
        """A metric query's answer: every matching line of ``(start - range, end]`` counted
        (at most ``MAX_METRIC_LINES``), a matrix, or a vector for one point."""
        c = Counter(parse_metric(query), start, end, step)
        await self.node.read_barrier()
        flt = _filter(c.q.logs, c.scan_from_ns + 1, end + 1)
        applied = self.node.applied
        pos, top, seen = applied.times.seek(flt.since or 0), applied.record_index + 1, 0
        while pos < top:
            was = pos
            got, pos = await reads.scan(self._r, reads.span(self._r, pos, top), flt, MAX_LIMIT)
            for r in got:
                c.add(loki_read.record_time(r), loki_read.record_labels(r))
            seen += len(got)
            if seen > MAX_METRIC_LINES:
                raise LogQLError(
                    f"over {MAX_METRIC_LINES} lines to count: narrow the selector or the range"
                )
            if pos <= was:
                break
        return _json(c.vector() if start == end else c.matrix())

    # --------------------------------------------------------------- labels

    async def _labels(self, req: HttpRequest, what: str) -> HttpResponse:
        start, end = self._range(req, 6 * HOUR_NS)
        query = req.arg("query")
        q = parse_query(query) if query else LogQuery((), ())
        recs = await self._recent([q], start, end)
        if what == "labels":
            names = {k for r in recs for k in loki_read.record_labels(r)}
            return _json(list_answer(sorted(names)))
        name = what.removeprefix("label/").removesuffix("/values")
        values = {v for r in recs if (v := loki_read.record_labels(r).get(name)) is not None}
        return _json(list_answer(sorted(values)))

    async def _series(self, req: HttpRequest) -> HttpResponse:
        start, end = self._range(req, 6 * HOUR_NS)
        selectors = req.query.get("match[]") or req.query.get("match") or []
        if not selectors:
            raise LogQLError("series needs at least one match[] stream selector")
        if len(selectors) > MAX_SERIES_SELECTORS:
            raise LogQLError(f"at most {MAX_SERIES_SELECTORS} match[] selectors in one request")
        queries = [parse_query(m) for m in selectors]
        seen: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        for r in await self._recent(queries, start, end):  # one scan for all of them
            lb = loki_read.record_labels(r)
            seen.setdefault(tuple(sorted(lb.items())), lb)
        return _json(list_answer(seen.values()))

    async def _recent(self, queries: list[LogQuery], start: int, end: int) -> list[StoredRecord]:
        """The newest ``MAX_LABEL_RECORDS`` records in ``[start, end)`` that any of
        ``queries`` selects."""
        await self.node.read_barrier()
        applied = self.node.applied
        lo, top = applied.times.seek(start), applied.record_index + 1

        def any_of(r: StoredRecord) -> bool:
            labels = loki_read.record_labels(r)
            return any(q.matches(labels, r.msg) for q in queries)

        flt = Filter(since=start, until=end, extra=any_of)
        return await self._backward(flt, lo, top, MAX_LABEL_RECORDS)

    # ----------------------------------------------------------------- tail

    def _tail(self, req: HttpRequest) -> HttpResponse:
        q = parse_query(req.arg("query") or "")
        limit = _int(req.arg("limit"), 100, "limit")
        start = parse_time(req.arg("start"), self.node.corrected_now() - HOUR_NS)
        if self.tails >= MAX_LOKI_TAILS:
            return text(503, f"{MAX_LOKI_TAILS} Loki tails are open, the most this node takes")
        return HttpResponse(
            101, websocket=lambda ws: self._follow(ws, q, start, min(limit, MAX_LINES))
        )

    async def _follow(self, ws: PushSocket, q: LogQuery, start: int, limit: int) -> None:
        if self.tails >= MAX_LOKI_TAILS:  # (again: others may have upgraded meanwhile)
            return
        self.tails += 1
        try:
            await self.node.read_barrier()
            mark = self.node.applied.record_index
            rows = await self.newest(q, start, 1 << 62, limit, to_index=mark)
            await ws.send(_frame(reversed(rows)))
            t = Tail(v=1, req=0, from_index=mark + 1)
            await reads.tail(_Frames(self.node, ws), t, _filter(q, start, None))
        except _Ended:
            pass
        finally:
            self.tails -= 1


class _Frames:
    """A read's session whose batches go out as Loki tail frames (without a socket: the
    session of the scans, which send nothing)."""

    def __init__(self, node: NodeApi, ws: PushSocket | None) -> None:
        self.node = node
        self._ws = ws

    async def send(self, kind: str, fields: dict[str, Any]) -> None:
        assert self._ws is not None, "a scan sends nothing"
        if kind == "batch" and fields["records"]:
            await self._ws.send(_frame(row_of_json(d) for d in fields["records"]))
        elif kind == "end":  # fell behind: end the tail (Grafana reconnects)
            raise _Ended


class _Ended(Exception):
    """The tail fell behind the live stream: Loki's clients reconnect."""


def _frame(rows: Any) -> str:
    return json.dumps({"streams": loki_read.streams(rows), "dropped_entries": None})


def _filter(q: LogQuery, start: int, end: int | None) -> Filter:
    """What the log scan can test itself (time, an exact source, the first ``|=``), then the
    whole query on the record's labels and line."""
    first = next((f.value for f in q.filters if f.op == "|="), None)

    def extra(r: StoredRecord) -> bool:
        return q.matches(loki_read.record_labels(r), r.msg)

    # (Not ``source=``: a record without a source of its own takes its label from a field.)
    return Filter(since=start, until=end, grep=first, extra=extra)


def _step(v: str | None, start: int, end: int) -> int:
    """``step`` as Loki reads it (a duration or seconds); Loki's default: the range / 250,
    whole seconds, at least 1 s."""
    if v:
        return parse_duration(v)
    return max(-(-(end - start) // (250 * 10**9)), 1) * 10**9


def _int(v: str | None, default: int, name: str) -> int:
    if v is None or v == "":
        return default
    if not (v.isascii() and v.isdigit()) or int(v) < 1:
        raise LogQLError(f"{name} {v[:20]!r} must be a whole number from 1")
    return int(v)


def _json(d: dict[str, Any]) -> HttpResponse:
    return HttpResponse(200, json.dumps(d).encode(), JSON)
