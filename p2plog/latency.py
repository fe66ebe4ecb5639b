"""Latency histograms (Prometheus' cumulative-bucket shape), kept by the runtime and read by
``/metrics`` and ``status`` alike, so the percentiles ``status`` shows are the ones a
Prometheus ``histogram_quantile`` over the scraped buckets gives."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

# Seconds: a fast fdatasync is ~0.1 ms, a slow disk or a stall is seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.sum += v

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative counts per upper bound, ``inf`` last (Prometheus' ``le`` buckets)."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def quantile(self, q: float) -> float:
        """``histogram_quantile(q)``: linear within the bucket the rank falls in (0 if empty;
        the highest finite bound when it falls in the +Inf bucket, as Prometheus does)."""
        total = self.count
        if not total:
            return 0.0
        rank = q * total
        lower, seen = 0.0, 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            if seen + n >= rank and n:
                return lower + (bound - lower) * (rank - seen) / n
            seen += n
            lower = bound
        return self.bounds[-1]
