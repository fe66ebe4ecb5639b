"""The reorder buffer: examples, then hypothesis properties over arbitrary committed sequences."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from p2plog.order.reorder import Emitted, ReorderBuffer

MS = 1_000_000
S = 1000 * MS
DAY = 86_400 * S
T0 = 1_700_000_000 * S


def keys(out: list[Emitted[str]]) -> list[int]:
    return [e.index for e in out]


def test_holds_records_until_the_watermark_passes_them() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(reorder_window_ms=1000)
    assert buf.watermark_ns is None
    assert buf.add_record(1, T0 + 300 * MS, T0 + 400 * MS, "b", 10) == []
    assert buf.add_record(2, T0 + 100 * MS, T0 + 500 * MS, "a", 10) == []  # ts before #1
    assert buf.depth == 2
    assert buf.bytes == 20
    assert buf.watermark_ns == T0 - 500 * MS
    out = buf.add_record(3, T0 + 1200 * MS, T0 + 1250 * MS, "c", 10)  # W = T0 + 250 ms
    assert keys(out) == [2]
    assert not out[0].flagged
    out = buf.add_record(4, T0 + 2000 * MS, T0 + 2300 * MS, "d", 10)  # W = T0 + 1300 ms
    assert keys(out) == [1, 3]
    assert [e.payload for e in out] == ["b", "c"]
    assert buf.flush_all()[0].payload == "d"
    assert buf.depth == 0
    assert buf.bytes == 0


def test_idle_cluster_flushes_through_ticks() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(reorder_window_ms=1000)
    assert buf.add_record(1, T0, T0 + 5 * MS, "x", 1) == []
    assert buf.add_tick(T0 + 500 * MS) == []
    assert buf.add_tick(T0 + 1000 * MS) == []  # W == T0: not below yet
    out = buf.add_tick(T0 + 1000 * MS + 1)
    assert keys(out) == [1]
    assert buf.statistics(now_ns=T0 + 3 * S)["watermark_lag_ms"] == (3 * S - 1) / MS


def test_late_record_is_emitted_at_once_flagged_never_dropped() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(reorder_window_ms=1000)
    buf.add_tick(T0 + 10 * S)  # W = T0 + 9 s
    out = buf.add_record(1, T0 + 2 * S, T0 + 10 * S + 1, "old", 5)
    assert len(out) == 1
    assert out[0].late
    assert out[0].payload == "old"
    assert buf.late == 1
    # A record within the window of the old watermark is not late, even if its own ingest time
    # moves the watermark past it: it is still in order with everything emitted before.
    out = buf.add_record(2, T0 + 9500 * MS, T0 + 11 * S, "ok", 5)
    assert keys(out) == [2]
    assert not out[0].flagged


def test_absurd_timestamp_is_kept_flagged_and_does_not_move_the_watermark() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(reorder_window_ms=1000, absurd_after_ms=86_400_000)
    buf.add_tick(T0)
    out = buf.add_record(1, T0 + 2 * DAY, T0 + S, "future", 5)
    assert len(out) == 1
    assert out[0].absurd
    assert not out[0].late
    out = buf.add_record(2, T0 + DAY, T0 + S, "a day off", 5)
    assert out == []  # within the bound: buffered as usual
    assert buf.watermark_ns == T0  # record 1 did not move it; record 2 did
    out = buf.add_record(3, T0 - 3 * DAY, T0 + S, "past", 5)
    assert out[0].absurd
    assert out[0].late
    assert buf.statistics()["absurd"] == 2
    assert buf.statistics()["late"] == 1


def test_record_without_event_time_is_keyed_by_ingest_time() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(reorder_window_ms=1000)
    buf.add_record(1, None, T0 + 500 * MS, "no-ts", 1)
    buf.add_record(2, T0 + 300 * MS, T0 + 600 * MS, "ts", 1)
    out = buf.add_tick(T0 + 2 * S)
    assert [(e.payload, e.key_ts) for e in out] == [("ts", T0 + 300 * MS), ("no-ts", T0 + 500 * MS)]


def test_full_buffer_releases_the_oldest_early() -> None:
    buf: ReorderBuffer[str] = ReorderBuffer(reorder_window_ms=60_000, max_records=2, max_bytes=100)
    buf.add_record(1, T0 + 3 * MS, T0, "c", 10)
    buf.add_record(2, T0 + 2 * MS, T0, "b", 10)
    out = buf.add_record(3, T0 + 1 * MS, T0, "a", 10)
    assert [(e.payload, e.early) for e in out] == [("a", True)]
    out = buf.add_record(4, T0 + 4 * MS, T0, "big", 95)  # bytes: 115 > 100
    assert [(e.payload, e.early) for e in out] == [("b", True), ("c", True)]
    assert buf.depth == 1
    assert buf.early == 3


# --- properties ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    ts_delta_ms: int | None  # ts_corrected - ingest_ts
    ingest_step_ms: int  # ingest_ts - previous ingest_ts (negative: a leader change, HLC off)
    size: int


@dataclass(frozen=True)
class Tick:
    ingest_step_ms: int


item = st.one_of(
    st.builds(
        Rec,
        st.one_of(
            st.none(),
            st.integers(-3000, 500),  # mostly a little in the past: clients, queues, skew
            st.sampled_from([-3 * 86_400_000, 2 * 86_400_000]),  # absurd
        ),
        st.integers(-200, 400),
        st.integers(0, 300),
    ),
    st.builds(Tick, st.integers(0, 1500)),
)
Config = tuple[int, int, int]  # window_ms, max_records, max_bytes
configs = st.tuples(st.sampled_from([0, 50, 1000]), st.integers(1, 20), st.integers(1, 2000))


def run(items: list[Rec | Tick], cfg: Config) -> tuple[list[Emitted[int]], list[int]]:
    """Feed the committed sequence; returns everything emitted (flush_all last) and the indexes
    of the records fed. Checks the bounds after every step."""
    window, max_records, max_bytes = cfg
    buf: ReorderBuffer[int] = ReorderBuffer(
        reorder_window_ms=window, max_records=max_records, max_bytes=max_bytes
    )
    out: list[Emitted[int]] = []
    fed: list[int] = []
    ingest = T0
    last_w: int | None = None
    for index, it in enumerate(items, start=1):
        ingest += it.ingest_step_ms * MS
        if isinstance(it, Tick):
            out += buf.add_tick(ingest)
        else:
            ts = None if it.ts_delta_ms is None else ingest + it.ts_delta_ms * MS
            w_before = buf.watermark_ns
            got = buf.add_record(index, ts, ingest, index, it.size)
            fed.append(index)
            for e in got:
                if e.index == index:
                    assert e.late == (w_before is not None and e.key_ts < w_before)
            out += got
        assert buf.depth <= max_records
        assert buf.bytes <= max_bytes or buf.depth == 0
        w = buf.watermark_ns
        assert last_w is None or (w is not None and w >= last_w), "watermark went back"
        last_w = w
    return out + buf.flush_all(), fed


@settings(max_examples=300, deadline=None)
@given(items=st.lists(item, max_size=80), cfg=configs)
def test_unflagged_output_is_sorted_and_nothing_is_lost(
    items: list[Rec | Tick], cfg: Config
) -> None:
    out, fed = run(items, cfg)
    assert sorted(e.index for e in out) == fed  # every record exactly once
    assert all(e.payload == e.index for e in out)
    unflagged = [(e.key_ts, e.index) for e in out if not e.flagged]
    assert unflagged == sorted(unflagged)
    assert len(set(unflagged)) == len(unflagged)
    for e in out:
        if e.absurd:
            assert abs(e.key_ts - e.ingest_ts) > DAY


@settings(max_examples=100, deadline=None)
@given(items=st.lists(item, max_size=80), cfg=configs)
def test_same_committed_sequence_same_output(items: list[Rec | Tick], cfg: Config) -> None:
    assert run(items, cfg) == run(list(items), cfg)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(item, max_size=60))
def test_unbounded_buffer_releases_nothing_early(items: list[Rec | Tick]) -> None:
    out, _ = run(items, (1000, 10**6, 10**9))
    assert not any(e.early for e in out)


# --- add_batch: the same as add_record one by one -------------------------------------------

batch_item = st.tuples(
    st.integers(-200, 400),  # ingest step, ms
    st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.integers(-3000, 500),
                st.sampled_from([-3 * 86_400_000, 2 * 86_400_000]),
            ),
            st.integers(0, 300),
        ),
        max_size=12,
    ),
    st.booleans(),  # sorted by key within the entry
    st.booleans(),  # an event-tail reader is listening (output materialized)
    st.booleans(),  # every record on time (the common case, which takes the fast path)
)


roomy = st.tuples(st.sampled_from([0, 50, 1000]), st.just(10**6), st.just(10**9))


@settings(max_examples=400, deadline=None)
@given(entries=st.lists(batch_item, max_size=30), cfg=st.one_of(configs, roomy))
def test_add_batch_is_add_record_one_by_one(
    entries: list[tuple[int, list[tuple[int | None, int]], bool, bool, bool]], cfg: Config
) -> None:
    window, max_records, max_bytes = cfg

    def fresh() -> ReorderBuffer[int]:
        return ReorderBuffer(reorder_window_ms=window, max_records=max_records, max_bytes=max_bytes)

    one, bulk = fresh(), fresh()
    ingest, index = T0, 0
    for step, recs, in_order, listening, on_time in entries:
        ingest += step * MS
        if on_time:
            recs = [(None if d is None else abs(d) % 500, size) for d, size in recs]
        rows = [(None if d is None else ingest + d * MS, size) for d, size in recs]
        if in_order:
            rows.sort(key=lambda r: ingest if r[0] is None else r[0])
        idx = list(range(index + 1, index + 1 + len(rows)))
        index += len(rows)
        one.discard_output = bulk.discard_output = not listening
        want: list[Emitted[int]] = []
        for i, (ts, size) in zip(idx, rows, strict=True):
            one.add_record(i, ts, ingest, i, size, want)
        keys = [ingest if ts is None else ts for ts, _ in rows]
        got = bulk.add_batch(idx, keys, ingest, idx, [s for _, s in rows])
        assert got == want
        assert (bulk.depth, bulk.bytes) == (one.depth, one.bytes)
        assert bulk.statistics(ingest) == one.statistics(ingest)
    assert bulk.flush_all() == one.flush_all()
