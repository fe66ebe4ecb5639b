"""Where a time range starts in the log, so ``query --since`` need not scan from the start.

Ingest time (the leader's HLC) grows with the record index, so a sparse sample of (ingest time,
record index) finds the first record ingested at or after a time. A query's ``since`` is on
event time (``ts_corrected``), which is not ordered: a record's event time may lie before its
ingest time by any amount (a late record), but after it only by the error of the clocks. So a
scan for ``since = T`` may start at the first record ingested at ``T - SEEK_SLACK_NS``, but for
the few records whose event time is further ahead of their ingest time ("future-dated": a
producer clock off). Those are remembered (``MAX_FUTURE``), and a seek that would skip one
starts at it instead; past the bound, seeking is off and scans start at the beginning. So a
seek is exact always, and fast when clocks behave.

Built by the applier as it applies (on every node, and again by the replay on restart).
"""

from __future__ import annotations

import bisect
from typing import Any

from p2plog.record import NO_TS
from p2plog.state.entry import Batch

SEEK_SLACK_NS = 1_000_000_000
MAX_FUTURE = 65_536


class TimeIndex:
    def __init__(self) -> None:
        self._ts: list[int] = []  # running maximum of ingest time at each sample ...
        self._rec: list[int] = []  # ... and the sample's first record index
        self._future: list[tuple[int, int]] = []  # (record index, event time), index order
        self.overflow = False  # more future-dated records than MAX_FUTURE: no seeking

    def statistics(self) -> dict[str, int | bool]:
        """For ``status``: samples kept, future-dated records remembered, seeking off."""
        return {"samples": len(self._ts), "future_dated": len(self._future), "off": self.overflow}

    def export(self) -> dict[str, object]:
        return {
            "ts": list(self._ts),
            "rec": list(self._rec),
            "future": [list(f) for f in self._future],
            "overflow": self.overflow,
        }

    @classmethod
    def restore(cls, d: dict[str, Any]) -> TimeIndex:
        t = cls()
        t._ts, t._rec = [int(x) for x in d["ts"]], [int(x) for x in d["rec"]]
        t._future = [(int(i), int(tc)) for i, tc in d["future"]]
        t.overflow = bool(d["overflow"])
        return t

    def forget_before(self, record_index: int) -> None:
        """Drop what only records below ``record_index`` (cut by retention) needed: a seek
        into the cut part starts at the first record kept anyway."""
        k = max(0, bisect.bisect_right(self._rec, record_index) - 1)
        del self._ts[:k], self._rec[:k]
        del self._future[: bisect.bisect_left(self._future, (record_index, NO_TS))]

    def sample(self, b: Batch) -> None:
        """Batch ``b`` starts a sample (the applier's locate cadence)."""
        ts = b.ingest_ts if not self._ts else max(self._ts[-1], b.ingest_ts)
        self._ts.append(ts)
        self._rec.append(b.base)

    def note(self, b: Batch, tcs: list[int]) -> None:
        """Remember the records of ``b`` (event times ``tcs``) whose event time is past its
        ingest time + slack."""
        ahead = b.ingest_ts + SEEK_SLACK_NS
        if max(tcs, default=NO_TS) <= ahead or self.overflow:
            return
        for k, tc in enumerate(tcs):
            if tc > ahead:
                if len(self._future) >= MAX_FUTURE:
                    self.overflow = True
                    self._future.clear()
                    return
                self._future.append((b.base + k, tc))

    def seek(self, since_ns: int, from_index: int = 1) -> int:
        """A record index at or before the first record at or after ``from_index`` whose event
        time may be ``>= since_ns``."""
        if self.overflow:
            return from_index
        k = bisect.bisect_left(self._ts, since_ns - SEEK_SLACK_NS) - 1
        start = self._rec[k] if k >= 0 else 1
        if start <= from_index:
            return from_index
        lo = bisect.bisect_left(self._future, (from_index, NO_TS))
        for i, tc in self._future[lo:]:
            if i >= start:
                break
            if tc >= since_ns:
                return i
        return start
