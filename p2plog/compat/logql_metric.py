"""The metric queries Grafana's Loki data source runs beside log queries: counts of lines over
time, for its logs-volume histogram and for panels. Pure: parsing and counting, no I/O.

Supported (``MetricQuery``): ``count_over_time(<log query>[<range>])`` and ``rate(...)`` (the
count per second of the range), alone or under ``sum``, ``sum by (labels)`` or ``sum without
(labels)`` (the grouping before or after the parenthesis). ``<log query>`` is what
``logql.parse_query`` takes, optionally followed by ``| drop __error__`` (Grafana adds it; p2plog
never makes ``__error__`` labels, so it drops nothing). Anything else that looks like a metric
query is a LogQLError naming what is served.

Evaluation (``Counter``), as Loki evaluates a range vector: at each step ``t`` from ``start`` to
``end``, the lines with a time in ``(t - range, t]``; a series exists at a step only where it
has lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from p2plog.compat.logql import LogQLError, LogQuery, parse_query
from p2plog.compat.loki_time import parse_duration

SERVED = (
    "metric queries: count_over_time(<log query>[range]) or rate(...), alone or under sum, "
    "sum by (labels) or sum without (labels)"
)
MAX_POINTS = 11_000  # Loki's limit on points per series
MAX_SERIES = 500  # Loki's max_query_series default
_SUM_BEFORE = re.compile(r"\s*sum\s*(?:(by|without)\s*\(([^()]*)\))?\s*\((.*)\)\s*", re.S)
_SUM_AFTER = re.compile(r"\s*sum\s*\((.*)\)\s*(by|without)\s*\(([^()]*)\)\s*", re.S)
_RANGE_FN = re.compile(r"\s*(count_over_time|rate)\s*\((.*)\)\s*", re.S)
_RANGE = re.compile(r"(.*)\[\s*([0-9a-z.]+)\s*\]\s*", re.S)
_DROP_ERROR = re.compile(r"(.*?)\|\s*drop\s+__error__(?:\s*,\s*__error_details__)?\s*", re.S)
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class MetricQuery:
    fn: str  # "count_over_time" or "rate"
    logs: LogQuery
    range_ns: int
    grouping: str | None = None  # None (every series apart), "by" or "without"
    labels: tuple[str, ...] = ()

    def series(self, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
        """The series a line of these labels counts in."""
        if self.grouping == "by":
            return tuple((k, labels[k]) for k in self.labels if labels.get(k))
        if self.grouping == "without":
            return tuple(sorted((k, v) for k, v in labels.items() if k not in self.labels))
        return tuple(sorted(labels.items()))


def is_metric(text: str) -> bool:
    """Does ``text`` start as a metric query (an aggregation or a range function)?"""
    return re.match(r"\s*[a-z_]+\s*(\(|by\b|without\b)", text) is not None


def parse_metric(text: str) -> MetricQuery:
    grouping: str | None = None
    labels, inner = "", text
    if (after := _SUM_AFTER.fullmatch(text)) is not None:
        inner, grouping, labels = after.group(1), after.group(2), after.group(3)
    elif (before := _SUM_BEFORE.fullmatch(text)) is not None:
        grouping, labels, inner = before.group(1) or "by", before.group(2) or "", before.group(3)
        # (a plain ``sum`` is ``sum by ()``: one series)
    f = _RANGE_FN.fullmatch(inner)
    r = _RANGE.fullmatch(f.group(2)) if f is not None else None
    if f is None or r is None:
        raise LogQLError(f"{text.strip()[:80]!r} is not a metric query served here; {SERVED}")
    logs = r.group(1)
    drop = _DROP_ERROR.fullmatch(logs)
    names = tuple(x.strip() for x in labels.split(",") if x.strip())
    bad = [x for x in names if not _LABEL.fullmatch(x)]
    if bad:
        raise LogQLError(f"label {bad[0]!r} in the grouping is not a label name")
    range_ns = parse_duration(r.group(2))
    if range_ns <= 0:
        raise LogQLError("a range must be longer than 0")
    query = parse_query(drop.group(1) if drop is not None else logs)
    return MetricQuery(f.group(1), query, range_ns, grouping, names)


class Counter:
    """The points of one metric query over ``start..end`` every ``step_ns``: fed each line's
    time and labels, in any order."""

    def __init__(self, q: MetricQuery, start_ns: int, end_ns: int, step_ns: int) -> None:
        if step_ns <= 0:
            raise LogQLError("step must be longer than 0")
        n = (end_ns - start_ns) // step_ns + 1
        if n > MAX_POINTS:
            raise LogQLError(
                f"{n} points per series (range / step) is over {MAX_POINTS}: raise step"
            )
        self.q, self.start, self.step, self.n = q, start_ns, step_ns, n
        # Per series, the change of its count at each point (a line adds 1 over a run of
        # points): O(1) a line, however many points its range spans.
        self.deltas: dict[tuple[tuple[str, str], ...], dict[int, int]] = {}

    @property
    def scan_from_ns(self) -> int:
        """The earliest line time any point counts (exclusive)."""
        return self.start - self.q.range_ns

    def add(self, t_ns: int, labels: dict[str, str]) -> None:
        """Count a line at ``t_ns`` in every point ``t`` with ``t - range < t_ns <= t``."""
        first = max(0, -((self.start - t_ns) // self.step))  # ceil((t_ns - start) / step)
        last = min(self.n - 1, (t_ns + self.q.range_ns - 1 - self.start) // self.step)
        if first > last:
            return
        key = self.q.series(labels)
        d = self.deltas.get(key)
        if d is None:
            if len(self.deltas) >= MAX_SERIES:
                raise LogQLError(
                    f"over {MAX_SERIES} series: aggregate with sum by (...) or narrow the selector"
                )
            d = self.deltas[key] = {}
        d[first] = d.get(first, 0) + 1
        d[last + 1] = d.get(last + 1, 0) - 1

    def _points(self, d: dict[int, int]) -> list[tuple[int, int]]:
        """(point, count) where the count is not 0, from a series' deltas."""
        out, count, keys = [], 0, sorted(d)
        for i, k in enumerate(keys):
            count += d[k]
            if count:
                end = keys[i + 1] if i + 1 < len(keys) else self.n
                out += [(j, count) for j in range(k, min(end, self.n))]
        return out

    def _value(self, count: int) -> str:
        if self.q.fn == "rate":
            return f"{count / (self.q.range_ns / 1e9):g}"
        return str(count)

    def matrix(self) -> dict[str, Any]:
        """A ``query_range`` answer: one series per label set, points where it has lines."""
        result = [
            {
                "metric": dict(key),
                "values": [
                    [(self.start + k * self.step) / 1e9, self._value(c)] for k, c in self._points(d)
                ],
            }
            for key, d in self.deltas.items()
        ]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    def vector(self) -> dict[str, Any]:
        """An instant ``query`` answer (one point: ``start`` = ``end``)."""
        at = self.start / 1e9
        result = [
            {"metric": dict(key), "value": [at, self._value(c)]}
            for key, d in self.deltas.items()
            for k, c in self._points(d)
            if k == 0
        ]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}
