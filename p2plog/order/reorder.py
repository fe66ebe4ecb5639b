"""The event-time reorder buffer: committed records in, event-time ordered records out.

Pure and deterministic: the output is a function of the sequence of calls alone, so every node
fed the same committed log (from the same start index, with the same settings) emits the same
records in the same order with the same flags (ARCHITECTURE §1.5).

Input, in log index order: records (``add_record``: index, ``ts_corrected`` or None, the
leader's ``ingest_ts``, a payload and its size) and time ticks (``add_tick``: the ``ingest_ts``
of a leader tick entry, which carries no record). A record's key is ``(ts_corrected, index)``,
or ``(ingest_ts, index)`` when it has no event time.

Watermark ``W`` = max committed ``ingest_ts`` - ``reorder_window_ms``: the log promises no record
will commit with an ingest time below that max, and the window is how long a record may take from
its event to the leader. ``W`` only grows. After each input:

- every buffered record with key time < ``W`` is emitted, in key order;
- a record whose key time is already below ``W`` as it arrives (below the watermark before its
  own ingest time moved it) is emitted at once, ``late=True``; nothing is ever dropped;
- a record whose ``ts_corrected`` is more than ``absurd_after_ms`` from its ``ingest_ts`` is
  emitted at once, ``absurd=True`` (and ``late`` if below ``W``), and its ingest time does not
  move ``W`` (a day-off producer clock must not hold records for a day or flush the window);
- when the buffer holds more than ``max_records`` records or ``max_bytes`` bytes, the smallest
  keys are released at once, ``early=True``.

Guarantee (tested): the records emitted without a flag come out in strictly increasing key
order, across calls and ``flush_all``. Proof sketch: an unflagged record is emitted only once
its key time is < ``W``; any record arriving later unflagged has key time >= the ``W`` of its
arrival, which is >= every earlier ``W``.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Generic, TypeVar

P = TypeVar("P")
NS_PER_MS = 1_000_000
DAY_MS = 86_400_000


@dataclass(slots=True)
class Emitted(Generic[P]):
    """One record as the event-time stream delivers it."""

    index: int
    key_ts: int  # ts_corrected, or ingest_ts when the record has no event time
    ingest_ts: int
    payload: P
    late: bool = False  # its key was below the watermark when it arrived
    early: bool = False  # released before the watermark passed it, because the buffer was full
    absurd: bool = False  # its event time is more than absurd_after_ms from its ingest time

    @property
    def flagged(self) -> bool:
        return self.late or self.early or self.absurd


_Item = tuple[int, int, int, P, int]  # key time, index, ingest_ts, payload, size
_key_of = itemgetter(0)
_size_of = itemgetter(4)


class ReorderBuffer(Generic[P]):
    def __init__(
        self,
        *,
        reorder_window_ms: int = 1000,
        max_records: int = 100_000,
        max_bytes: int = 64 << 20,
        absurd_after_ms: int = DAY_MS,
    ) -> None:
        assert reorder_window_ms >= 0
        assert max_records >= 1
        assert max_bytes >= 1
        assert absurd_after_ms > 0
        self.window_ns = reorder_window_ms * NS_PER_MS
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.absurd_after_ns = absurd_after_ms * NS_PER_MS
        # Buffered records as (key time, index, ingest_ts, payload, size); (key, index) is
        # unique, so the payload is never compared. They sit in sorted runs: an entry's
        # records are sorted once (in C) and extend the last run if they all come after it,
        # else start a run of their own (several producers: entries overlap in event time).
        # Emitting cuts every run at the watermark by bisection and merges the pieces with
        # one sort (timsort merges sorted runs in C), so no record costs a Python-level heap
        # operation. Records fed one at a time that arrive out of order go to a heap. The
        # next record out is always the smallest of all heads, so the output does not depend
        # on where a record sits.
        self._runs: list[list[_Item[P]]] = []
        self._heap: list[_Item[P]] = []
        self._depth = 0
        self._bytes = 0
        self._max_ingest: int | None = None
        self._last_index = 0
        # True while nobody reads the output (no event-tail subscriber): records are still
        # ordered, flagged and counted the same, but not materialized as ``Emitted``.
        self.discard_output = False
        self.emitted = 0
        self.late = 0
        self.early = 0
        self.absurd = 0

    @property
    def watermark_ns(self) -> int | None:
        """Max committed ingest time minus the window; None before any input."""
        return None if self._max_ingest is None else self._max_ingest - self.window_ns

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def bytes(self) -> int:
        return self._bytes

    def add_record(
        self,
        index: int,
        ts_corrected: int | None,
        ingest_ts: int,
        payload: P,
        size_bytes: int,
        out: list[Emitted[P]] | None = None,
    ) -> list[Emitted[P]]:
        """Feed the committed record at ``index``; returns what is emitted now, in order
        (appended to ``out`` when given, so a batch's output collects in one list)."""
        assert index > self._last_index, (
            f"records out of index order: {index} after {self._last_index}"
        )
        assert size_bytes >= 0
        if out is None:
            out = []
        self._last_index = index
        key = ingest_ts if ts_corrected is None else ts_corrected
        mx = self._max_ingest
        late = mx is not None and key < mx - self.window_ns
        if ts_corrected is not None and abs(ts_corrected - ingest_ts) > self.absurd_after_ns:
            self.absurd += 1
            self.late += late
            self._out(out, key, index, ingest_ts, payload, late=late, absurd=True)
            return out
        if late:
            self.late += 1
            self._out(out, key, index, ingest_ts, payload, late=True)
        else:
            item = (key, index, ingest_ts, payload, size_bytes)
            runs = self._runs
            if runs and item > runs[-1][-1]:
                runs[-1].append(item)
            else:
                heapq.heappush(self._heap, item)
            self._depth += 1
            self._bytes += size_bytes
        self._advance(ingest_ts, out)
        while self._depth > self.max_records or self._bytes > self.max_bytes:
            self._pop(out, early=True)
        return out

    def add_batch(
        self,
        indexes: Sequence[int],
        keys: Sequence[int],
        ingest_ts: int,
        payloads: Iterable[P],
        sizes: Sequence[int],
        out: list[Emitted[P]] | None = None,
    ) -> list[Emitted[P]]:
        """Feed the records of one log entry (all with the entry's ``ingest_ts``), exactly as
        ``add_record`` would one by one; ``keys`` are their key times (``ts_corrected``, or
        ``ingest_ts`` for a record without one).

        Why it is cheaper: within one entry the watermark moves at most once, at the first
        record that is not absurd. So when no record is absurd, late, or overflows the buffer
        (the common case, checked with a few whole-list operations), the sequential result is:
        advance the watermark, then add the records. Otherwise each record goes through
        ``add_record``, so the two agree always (a property test feeds both)."""
        if out is None:
            out = []
        n = len(keys)
        if n == 0:
            return out
        assert n == len(indexes) == len(sizes)
        lo, hi = min(keys), max(keys)
        mx = self._max_ingest
        w = (ingest_ts if mx is None or ingest_ts > mx else mx) - self.window_ns
        total = sum(sizes)
        if (
            lo < w
            or lo < ingest_ts - self.absurd_after_ns
            or hi > ingest_ts + self.absurd_after_ns
            or self._depth + n > self.max_records
            or self._bytes + total > self.max_bytes
        ):
            for index, key, payload, size in zip(indexes, keys, payloads, sizes, strict=True):
                ts = None if key == ingest_ts else key  # same key, same flags either way
                self.add_record(index, ts, ingest_ts, payload, size, out)
            return out
        assert indexes[0] > self._last_index, (
            f"records out of index order: {indexes[0]} after {self._last_index}"
        )
        self._last_index = indexes[-1]
        self._advance(ingest_ts, out)
        items = list(zip(keys, indexes, repeat(ingest_ts), payloads, sizes))
        items.sort()
        runs = self._runs
        if runs and items[0] > runs[-1][-1]:
            runs[-1] += items
        else:
            runs.append(items)
        self._depth += n
        self._bytes += total
        return out

    def export(self) -> tuple[dict[str, int | None], list[tuple[int, int, int, P, int]]]:
        """The buffer's state and its records (key, index, ingest_ts, payload, size) in key
        order: what a snapshot keeps so the stream goes on identically from it. Where a
        record sits (run or heap) is not state: the smallest head always comes out first."""
        items = self._heap + [it for run in self._runs for it in run]
        items.sort()
        state = {"max_ingest": self._max_ingest, "last_index": self._last_index}
        for k in ("emitted", "late", "early", "absurd"):
            state[k] = getattr(self, k)
        return state, items

    def restore(
        self, state: dict[str, int | None], items: Sequence[tuple[int, int, int, P, int]]
    ) -> None:
        """Replace the state by what ``export`` gave (the buffer has the same settings:
        they are cluster settings)."""
        self._heap = []
        self._max_ingest = state["max_ingest"]
        self._last_index = int(state["last_index"] or 0)
        self.emitted, self.late = int(state["emitted"] or 0), int(state["late"] or 0)
        self.early, self.absurd = int(state["early"] or 0), int(state["absurd"] or 0)
        self._runs = [sorted(items)] if items else []
        self._depth = len(items)
        self._bytes = sum(map(_size_of, items))

    def is_absurd(self, ts_corrected: int | None, ingest_ts: int) -> bool:
        """Is this event time too far from its ingest time to wait for (or to move anything)?"""
        return ts_corrected is not None and abs(ts_corrected - ingest_ts) > self.absurd_after_ns

    def add_tick(self, ingest_ts: int) -> list[Emitted[P]]:
        """Feed the ingest time of a committed leader tick (or no-op) that carries a time; it
        advances the watermark, so an idle cluster still flushes."""
        return self._advance(ingest_ts, [])

    def flush_all(self) -> list[Emitted[P]]:
        """Emit everything still buffered, in key order (shutdown, end of a query). Unflagged:
        these are in order with everything emitted before."""
        done = self._heap + [it for run in self._runs for it in run]
        done.sort()
        self._heap, self._runs = [], []
        out: list[Emitted[P]] = []
        self._emit(done, out)
        return out

    def _advance(self, ingest_ts: int, out: list[Emitted[P]]) -> list[Emitted[P]]:
        if self._max_ingest is None or ingest_ts > self._max_ingest:
            self._max_ingest = ingest_ts
        w = self._max_ingest - self.window_ns
        pieces: list[list[_Item[P]]] = []
        runs = self._runs
        for run in runs:
            if run[0][0] >= w:
                continue
            cut = bisect.bisect_left(run, w, key=_key_of)
            if cut:
                pieces.append(run[:cut])
                del run[:cut]
        if pieces:
            self._runs = [run for run in runs if run]
        heap = self._heap
        if heap and heap[0][0] < w:
            mine = []
            while heap and heap[0][0] < w:
                mine.append(heapq.heappop(heap))
            pieces.append(mine)
        if not pieces:
            return out
        done = pieces[0]
        if len(pieces) > 1:
            done = [it for piece in pieces for it in piece]
            done.sort()  # a merge of sorted pieces
        self._emit(done, out)
        return out

    def _emit(self, done: list[_Item[P]], out: list[Emitted[P]]) -> None:
        """Emit records in the order given (unflagged)."""
        self._depth -= len(done)
        self._bytes -= sum(map(_size_of, done))
        self.emitted += len(done)
        if not self.discard_output:
            out += [Emitted(i, k, t, p) for k, i, t, p, _ in done]

    def _first(self) -> _Item[P] | None:
        heads = [run[0] for run in self._runs]
        if self._heap:
            heads.append(self._heap[0])
        return min(heads) if heads else None

    def _pop(self, out: list[Emitted[P]], *, early: bool) -> None:
        """Release the smallest buffered record (the buffer is full: ``early``)."""
        runs, heap = self._runs, self._heap
        k = min(range(len(runs)), key=lambda j: runs[j][0]) if runs else -1
        if heap and (k < 0 or heap[0] < runs[k][0]):
            key, index, ingest_ts, payload, size = heapq.heappop(heap)
        else:
            key, index, ingest_ts, payload, size = runs[k].pop(0)
            if not runs[k]:
                del runs[k]
        self._depth -= 1
        self._bytes -= size
        self.early += early
        self._out(out, key, index, ingest_ts, payload, early=early)

    def _out(
        self,
        out: list[Emitted[P]],
        key: int,
        index: int,
        ingest_ts: int,
        payload: P,
        *,
        late: bool = False,
        early: bool = False,
        absurd: bool = False,
    ) -> None:
        self.emitted += 1
        if not self.discard_output:
            out.append(Emitted(index, key, ingest_ts, payload, late, early, absurd))

    def statistics(self, now_ns: int | None = None) -> dict[str, Any]:
        """Counters for ``status``. ``watermark_lag_ms`` (given the current time) grows while
        nothing commits, e.g. when the leader's ticks stop; ``oldest_wait_ms`` is how far the
        newest ingest time is past the oldest buffered record."""
        w = self.watermark_ns
        head = self._first()
        oldest = head[0] if head else None
        return {
            "depth": self.depth,
            "bytes": self._bytes,
            "emitted": self.emitted,
            "late": self.late,
            "early": self.early,
            "absurd": self.absurd,
            "watermark_ns": w,
            "watermark_lag_ms": None if w is None or now_ns is None else (now_ns - w) / NS_PER_MS,
            "oldest_wait_ms": (
                None
                if oldest is None or self._max_ingest is None
                else (self._max_ingest - oldest) / NS_PER_MS
            ),
        }
