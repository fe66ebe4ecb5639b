"""Metric queries of the Loki read API (compat/logql_metric.py): what parses, and counts as Loki
counts a range vector."""

from __future__ import annotations

import pytest

from p2plog.compat.logql import LogQLError
from p2plog.compat.logql_metric import Counter, is_metric, parse_metric

S = 10**9


@pytest.mark.parametrize(
    ("text", "fn", "grouping", "labels", "range_s"),
    [
        ('count_over_time({a="b"}[5m])', "count_over_time", None, (), 300),
        ('rate({a="b"} |= "x"[30s])', "rate", None, (), 30),
        ('sum(count_over_time({a="b"}[1m]))', "count_over_time", "by", (), 60),
        ('sum by (level) (count_over_time({a="b"}[1m]))', "count_over_time", "by", ("level",), 60),
        ('sum(rate({a="b"}[1m])) by (job, env)', "rate", "by", ("job", "env"), 60),
        (
            'sum without (host) (count_over_time({a="b"}[1h]))',
            "count_over_time",
            "without",
            ("host",),
            3600,
        ),
        # What Grafana's logs-volume histogram sends.
        (
            'sum by (level, detected_level) (count_over_time({app="x"} | drop __error__[1m]))',
            "count_over_time",
            "by",
            ("level", "detected_level"),
            60,
        ),
    ],
)
def test_parses(
    text: str, fn: str, grouping: str | None, labels: tuple[str, ...], range_s: int
) -> None:
    assert is_metric(text)
    q = parse_metric(text)
    assert (q.fn, q.grouping, q.labels, q.range_ns) == (fn, grouping, labels, range_s * S)


@pytest.mark.parametrize(
    "text",
    [
        'avg_over_time({a="b"}[1m])',
        'topk(3, count_over_time({a="b"}[1m]))',
        'rate({a="b"})',
        'count_over_time({a="b"} | json [1m])',
        'sum by (a-b) (count_over_time({a="b"}[1m]))',
    ],
)
def test_refuses_what_is_not_served(text: str) -> None:
    with pytest.raises(LogQLError):
        parse_metric(text)


def test_log_queries_are_not_metric() -> None:
    assert not is_metric('{a="b"} |= "rate("')


def test_counts_as_a_range_vector() -> None:
    q = parse_metric('sum by (level) (count_over_time({a="b"}[10s]))')
    c = Counter(q, 100 * S, 130 * S, 10 * S)  # points at 100, 110, 120, 130
    assert c.scan_from_ns == 90 * S
    for t, level in [
        (95, "info"),
        (100, "info"),
        (101, "info"),
        (110, "error"),
        (125, "info"),
        (131, "info"),
        (85, "info"),
    ]:
        c.add(t * S, {"level": level, "host": "h"})
    by = {tuple(s["metric"].items()): s["values"] for s in c.matrix()["data"]["result"]}
    # A point t counts (t - 10 s, t]: 100 has 95 and 100; 110 has 101; 130 has 125.
    assert by[(("level", "info"),)] == [[100.0, "2"], [110.0, "1"], [130.0, "1"]]
    assert by[(("level", "error"),)] == [[110.0, "1"]]


def test_overlapping_ranges_and_rate() -> None:
    q = parse_metric('rate({a="b"}[20s])')
    c = Counter(q, 0, 30 * S, 10 * S)
    c.add(5 * S, {"a": "b"})  # in (t - 20, t] for t = 10 and 20
    (series,) = c.matrix()["data"]["result"]
    assert series["metric"] == {"a": "b"}
    assert series["values"] == [[10.0, "0.05"], [20.0, "0.05"]]


def test_instant_and_limits() -> None:
    q = parse_metric('count_over_time({a="b"}[1m])')
    c = Counter(q, 100 * S, 100 * S, 1)
    c.add(50 * S, {"a": "b"})
    c.add(30 * S, {"a": "b"})  # outside (40, 100]
    assert c.vector()["data"]["result"] == [{"metric": {"a": "b"}, "value": [100.0, "1"]}]
    with pytest.raises(LogQLError, match="raise step"):
        Counter(q, 0, 20_000 * S, S)


def test_series_are_bounded() -> None:
    q = parse_metric('count_over_time({a="b"}[1m])')  # no sum: a series per label set
    c = Counter(q, 100 * S, 100 * S, 1)
    for i in range(500):
        c.add(90 * S, {"trace_id": str(i)})
    with pytest.raises(LogQLError, match="over 500 series"):
        c.add(90 * S, {"trace_id": "one more"})
