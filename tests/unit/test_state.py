"""Deterministic apply-side state: the dedup window, the applier, and the tail fan-out."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2plog.raft.types import Entry, Index, Term
from p2plog.runtime.tail_hub import BUFFER_ENTRIES, TailHub
from p2plog.state.applier import Applier
from p2plog.state.dedup import DedupWindow
from p2plog.state.entry import batch_data, tick_data

S = 1_000_000_000


def rid(n: int) -> bytes:
    return n.to_bytes(16, "big")


# ------------------------------------------------------------------ DedupWindow


def test_get_returns_first_index() -> None:
    w = DedupWindow(10, 60 * S)
    assert w.get(rid(1)) is None
    w.add(rid(1), 5, 100)
    w.add(rid(2), 6, 101)
    assert w.get(rid(1)) == 5
    assert w.get(rid(2)) == 6
    assert len(w) == 2


def test_count_eviction_drops_the_oldest() -> None:
    w = DedupWindow(3, 60 * S)
    for i in range(1, 6):
        w.add(rid(i), i, i)
    assert len(w) == 3
    assert [w.get(rid(i)) for i in range(1, 6)] == [None, None, 3, 4, 5]


def test_age_eviction_uses_the_ingest_ts_passed_in() -> None:
    w = DedupWindow(1000, 10 * S)
    w.add(rid(1), 1, 0)
    w.add(rid(2), 2, 5 * S)
    w.add(rid(3), 3, 10 * S)  # horizon 0: ts 0 is not older than the horizon, kept
    assert len(w) == 3
    w.add(rid(4), 4, 10 * S + 1)  # horizon 1 ns: rid 1 (ts 0) is now too old
    assert w.get(rid(1)) is None
    assert [w.get(rid(i)) for i in (2, 3, 4)] == [2, 3, 4]
    w.add(rid(5), 5, 100 * S)  # a big jump in ingest time evicts everything older
    assert len(w) == 1
    assert w.get(rid(5)) == 5


def test_age_eviction_ignores_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    w = DedupWindow(1000, 1)  # 1 ns window
    w.add(rid(1), 1, 42)
    monkeypatch.setattr(time, "time_ns", lambda: 10**30)
    monkeypatch.setattr(time, "time", lambda: 1e20)
    monkeypatch.setattr(time, "monotonic", lambda: 1e20)
    assert w.get(rid(1)) == 1  # nothing evicts until the log's own time moves
    w.add(rid(2), 2, 42)
    assert len(w) == 2


def test_window_rejects_nonsense_bounds() -> None:
    with pytest.raises(AssertionError):
        DedupWindow(0, S)
    with pytest.raises(AssertionError):
        DedupWindow(1, 0)


@given(
    ops=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5 * S)), max_size=200),
    max_records=st.integers(1, 20),
    max_age_s=st.integers(1, 3),
)
def test_window_is_deterministic(
    ops: list[tuple[int, int]], max_records: int, max_age_s: int
) -> None:
    """Two nodes fed the same sequence agree at every step (the replicas' dedup must match)."""
    a, b = DedupWindow(max_records, max_age_s * S), DedupWindow(max_records, max_age_s * S)
    ts = 0
    ts_at: dict[int, int] = {}
    for i, (n, dt) in enumerate(ops, start=1):
        ts += dt
        if a.get(rid(n)) is None:
            a.add(rid(n), i, ts)
            b.add(rid(n), i, ts)
            ts_at[i] = ts
        assert len(a) == len(b) <= max_records
        assert [a.get(rid(k)) for k in range(31)] == [b.get(rid(k)) for k in range(31)]
        for k in range(31):
            idx = a.get(rid(k))
            if idx is not None:  # nothing older than the age window survives
                assert ts_at[idx] >= ts_at[max(ts_at)] - max_age_s * S


# ------------------------------------------------------------------ Applier


def batch_entry(index: int, ns: list[int], base: int, ingest_ts: int = 0, term: int = 1) -> Entry:
    data = batch_data(ingest_ts, base, [(rid(n), b"\0" * 8 + b"\xa0") for n in ns])
    return Entry(Term(term), Index(index), data)


def noop(index: int, term: int = 1) -> Entry:
    return Entry(Term(term), Index(index), b"")


def test_applier_first_copy_is_the_record_second_is_a_dup() -> None:
    ap = Applier(100, 60 * S)
    a = ap.apply(batch_entry(1, [7, 8], base=1))
    assert a is not None
    assert (a.index, a.term, a.batch.base, a.batch.n, a.dups) == (1, 1, 1, 2, {})
    a = ap.apply(batch_entry(2, [9, 7], base=3, term=2))
    assert a is not None
    assert a.dups == {1: 1}  # position 1 (record 4) repeats record 1
    assert ap.dup_indexes == {4}
    assert ap.records == 3
    assert (ap.applied_index, ap.record_index) == (2, 4)
    # a third copy still points at the original, not at the second copy
    a = ap.apply(batch_entry(3, [7], base=5, term=2))
    assert a is not None
    assert a.dups == {0: 1}
    assert ap.dup_indexes == {4, 5}
    assert [ap.window.get(rid(n)) for n in (7, 8, 9)] == [1, 2, 3]  # 9: stored beside a dup
    assert [ap.term_of(i) for i in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 2]


def test_applier_same_id_twice_in_one_batch() -> None:
    ap = Applier(100, 60 * S)
    a = ap.apply(batch_entry(1, [3, 4, 3, 3], base=1))
    assert a is not None
    assert a.dups == {2: 1, 3: 1}
    assert ap.records == 2
    assert ap.dup_indexes == {3, 4}


def test_applier_skips_noops_and_other_kinds() -> None:
    ap = Applier(100, 60 * S)
    assert ap.apply(noop(1)) is None
    assert ap.apply(Entry(Term(1), Index(2), b"\x02" + b"\x00" * 40)) is None
    assert ap.apply(Entry(Term(1), Index(3), b"\x03short")) is None
    assert ap.apply(Entry(Term(1), Index(4), tick_data(10**18))) is None  # a leader time tick
    assert ap.applied_index == 4
    assert ap.records == 0
    assert len(ap.window) == 0
    assert ap.dup_indexes == set()


@pytest.mark.parametrize("bad", [0, 2, 3, 6])
def test_applier_asserts_contiguous_indexes(bad: int) -> None:
    ap = Applier(100, 60 * S)
    if bad > 2:
        ap.apply(noop(1))
    with pytest.raises(AssertionError, match="apply"):
        ap.apply(noop(bad))


def test_applier_asserts_contiguous_record_indexes() -> None:
    ap = Applier(100, 60 * S)
    ap.apply(batch_entry(1, [1, 2], base=1))
    with pytest.raises(AssertionError, match="expected 3"):
        ap.apply(batch_entry(2, [3], base=4))


def test_applier_dedup_is_bounded_by_the_window() -> None:
    ap = Applier(2, 60 * S)
    ap.apply(batch_entry(1, [1], base=1))
    ap.apply(batch_entry(2, [2], base=2))
    ap.apply(batch_entry(3, [3], base=3))  # evicts id 1 by count
    a = ap.apply(batch_entry(4, [1], base=4))
    assert a is not None
    assert a.dups == {}  # outside the window: stored again as a new record


def test_applier_evicts_whole_entries() -> None:
    ap = Applier(3, 60 * S)
    ap.apply(batch_entry(1, [1, 2], base=1))
    ap.apply(batch_entry(2, [3, 4], base=3))  # 4 ids > 3: the first entry's ids go
    assert [ap.window.get(rid(n)) for n in (1, 2, 3, 4)] == [None, None, 3, 4]


def test_applier_age_uses_entry_ingest_ts() -> None:
    ap = Applier(100, 10 * S)
    ap.apply(batch_entry(1, [1], base=1, ingest_ts=0))
    a = ap.apply(batch_entry(2, [1], base=2, ingest_ts=10 * S))  # at the horizon: still a dup
    assert a is not None
    assert a.dups == {0: 1}
    ap.apply(batch_entry(3, [2], base=3, ingest_ts=10 * S + 1))  # evicts id 1 by age
    a = ap.apply(batch_entry(4, [1], base=4, ingest_ts=10 * S + 2))
    assert a is not None
    assert a.dups == {}


def test_applier_locate_finds_an_entry_at_or_before_the_record() -> None:
    ap = Applier(1000, 60 * S)
    base, index = 1, 1
    for k in range(3000):
        ns = list(range(base, base + 1 + k % 5))
        if k % 7 == 0:
            ap.apply(noop(index))
            index += 1
        ap.apply(batch_entry(index, ns, base=base))
        base += len(ns)
        index += 1
    starts: dict[int, int] = {}
    for rec in range(1, base):
        start = ap.locate(rec)
        assert 1 <= start < index
        starts[rec] = start
    assert sorted(starts.values()) == list(starts.values())  # monotone
    assert len(set(starts.values())) >= 3  # sparse, but not one point


@given(st.lists(st.tuples(st.lists(st.integers(0, 6), max_size=4), st.booleans()), max_size=40))
def test_applier_replicas_agree(ops: list[tuple[list[int], bool]]) -> None:
    entries = []
    base = 1
    for i, (ns, is_noop) in enumerate(ops, start=1):
        if is_noop or not ns:
            entries.append(noop(i))
        else:
            entries.append(batch_entry(i, ns, base=base, ingest_ts=i * S))
            base += len(ns)
    a, b = Applier(3, 20 * S), Applier(3, 20 * S)
    assert [a.apply(e) for e in entries] == [b.apply(e) for e in entries]
    assert a.dup_indexes == b.dup_indexes
    assert a.records + len(a.dup_indexes) == base - 1


# ------------------------------------------------------------------ TailHub


def ents(lo: int, hi: int) -> list[Entry]:
    return [noop(i) for i in range(lo, hi)]


def test_publish_fans_out_to_every_subscriber() -> None:
    hub = TailHub()
    s1, s2 = hub.subscribe(), hub.subscribe()
    assert s1.limit == BUFFER_ENTRIES
    hub.publish(ents(1, 4))
    hub.publish(ents(4, 5))
    for s in (s1, s2):
        assert [e.index for e in s.buf] == [1, 2, 3, 4]
        assert s.wakeup.is_set()
        assert s.behind_at is None


def test_publish_nothing_wakes_nobody() -> None:
    hub = TailHub()
    s = hub.subscribe()
    hub.publish([])
    assert not s.wakeup.is_set()
    assert not s.buf


def test_slow_subscriber_is_cut_off_with_the_first_missed_index() -> None:
    hub = TailHub()
    slow, fast = hub.subscribe(limit=5), hub.subscribe(limit=100)
    hub.publish(ents(1, 4))  # slow holds 1..3
    slow.buf.popleft()  # it read index 1; 2 and 3 still unread
    hub.publish(ents(4, 7))  # 2 + 3 = 5: exactly the limit, fine
    assert [e.index for e in slow.buf] == [2, 3, 4, 5, 6]
    slow.wakeup = type(slow.wakeup)()  # the reader consumed its wakeup
    hub.publish(ents(7, 8))  # 6 > 5: over the limit
    assert slow.behind_at == 2  # it never saw 2: resume from there
    assert not slow.buf  # the buffer is freed
    assert slow.wakeup.is_set()  # the reader wakes up to notice
    hub.publish(ents(8, 10))
    assert not slow.buf  # a reader that fell behind gets nothing more
    assert slow.behind_at == 2
    assert [e.index for e in fast.buf] == list(range(1, 10))  # others are unaffected


def test_first_batch_over_the_limit() -> None:
    hub = TailHub()
    s = hub.subscribe(limit=2)
    hub.publish(ents(10, 13))
    assert s.behind_at == 10
    assert not s.buf


def test_unsubscribe() -> None:
    hub = TailHub()
    s1, s2 = hub.subscribe(), hub.subscribe()
    hub.unsubscribe(s1)
    hub.unsubscribe(s1)  # idempotent
    hub.publish(ents(1, 2))
    assert not s1.buf
    assert not s1.wakeup.is_set()
    assert [e.index for e in s2.buf] == [1]
    assert hub.subs == {s2}


def test_subscribers_are_distinct_even_when_equal_looking() -> None:
    hub = TailHub()
    subs = [hub.subscribe(limit=3) for _ in range(3)]
    assert len(hub.subs) == 3
    hub.unsubscribe(subs[1])
    assert hub.subs == {subs[0], subs[2]}


def test_random_readers_never_lose_or_reorder() -> None:
    rng = random.Random(7)
    hub = TailHub()
    s = hub.subscribe(limit=50)
    seen: list[int] = []
    nxt = 1
    for _ in range(500):
        n = rng.randrange(0, 10)
        hub.publish(ents(nxt, nxt + n))
        nxt += n
        for _ in range(rng.randrange(0, 12)):
            if s.buf:
                seen.append(s.buf.popleft().index)
        if s.behind_at is not None:
            # everything before behind_at was delivered, in order, exactly once
            assert seen == list(range(1, s.behind_at))
            return
    assert seen == list(range(1, len(seen) + 1))
