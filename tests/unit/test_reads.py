"""Scans (``scan_step``, stepped to the end as the node pages a query) over a real SegmentedLog
filled with batch entries (and a few no-ops)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2plog.raft.types import Entry, HardState, Index, NodeId, Snapshot, Term
from p2plog.record import LEVELS, validate
from p2plog.state import scans
from p2plog.state.entry import batch_data, parse_batch
from p2plog.state.scans import Filter, Span, record_json, row_bytes, scan_step
from p2plog.state.stored import StoredRecord
from p2plog.storage.segmented_log import SegmentedLog

S = 1_000_000_000
SOURCES = ("web", "db", "cron")


def no_dups(_: int) -> bool:
    return False


def scan_chunk(
    storage: SegmentedLog, span: Span, flt: Filter, dups: Callable[[int], bool], limit: int
) -> tuple[list[StoredRecord], int]:
    """``scan_step`` after ``scan_step`` until ``limit`` matches, a page's bytes or the end of
    the span, as the node pages a query; returns (records, next record index)."""
    out: list[StoredRecord] = []
    max_bytes = scans.PAGE_BYTES
    while True:
        got, nxt, rest = scan_step(storage, span, flt, dups, limit - len(out), max_bytes)
        out += got
        max_bytes -= sum(map(row_bytes, got))
        if rest is None or len(out) >= limit or max_bytes <= 0:
            return out, nxt
        span = rest


def rid(i: int) -> bytes:
    return uuid.UUID(int=i).bytes


def make_entries(n: int) -> list[Entry]:
    """Index 1 is a leader no-op, then batch entries holding records 2..n (a batch starts at
    every record i with i % 3 == 2 or i % 7 == 0, and every 5th entry is a no-op). Record i
    has a predictable shape: level LEVELS[i % 5], source SOURCES[i % 3], msg "event i" (+
    " disk" when i % 4 == 0), ts_corrected i s, except every 7th record has no ts (it then
    falls back to its batch's ingest_ts = 1000 s + i s, as it is first in its batch).
    """
    out = [Entry(Term(1), Index(1), b"")]
    batch: list[tuple[bytes, bytes]] = []
    base = 2

    def flush() -> None:
        if not batch:
            return
        if len(out) % 5 == 0:
            out.append(Entry(Term(1 + base // 50), Index(len(out) + 1), b""))
        data = batch_data(1000 * S + base * S, base, batch)
        out.append(Entry(Term(1 + base // 50), Index(len(out) + 1), data))

    for i in range(2, n + 1):
        if i % 3 == 2 or i % 7 == 0:
            flush()
            batch, base = [], i
        ts = None if i % 7 == 0 else i * S
        a = validate(
            {
                "id": rid(i),
                "ts": ts,
                "level": LEVELS[i % 5],
                "source": SOURCES[i % 3],
                "msg": f"event {i}" + (" disk" if i % 4 == 0 else ""),
            },
            node="n1",
        )
        batch.append((a.id, a.body))
    flush()
    return out


N = 120


def fill(log: SegmentedLog) -> None:
    """Small batches, so the log rolls over several 4 KiB segments (a batch never splits)."""
    es = make_entries(N)
    for k in range(0, len(es), 10):
        log.append_batch(es[k : k + 10], HardState(Term(3), NodeId("n1")))


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[SegmentedLog]:
    log = SegmentedLog(tmp_path / "n1", segment_bytes=4096, node="n1")  # several segments
    fill(log)
    yield log
    log.close()


def span(storage: SegmentedLog, lo: int, hi: int) -> Span:
    return Span(lo, hi, 1, storage.last_index() + 1)


def indexes(storage: SegmentedLog, flt: Filter, **kw: int) -> tuple[list[int], int]:
    lo = kw.get("lo", 1)
    hi = kw.get("hi", N + 1)
    limit = kw.get("limit", 10_000)
    recs, nxt = scan_chunk(storage, span(storage, lo, hi), flt, no_dups, limit)
    return [r.index for r in recs], nxt


def test_storage_spans_segments(storage: SegmentedLog) -> None:
    assert len(storage.segments) > 2
    last = parse_batch(
        storage.entries(storage.last_index(), Index(storage.last_index() + 1), 1 << 20)[0].data
    )
    assert last is not None
    assert last.base + last.n - 1 == N


def test_no_filter_returns_every_record_and_skips_noops(storage: SegmentedLog) -> None:
    got, nxt = indexes(storage, Filter())
    assert got == list(range(2, N + 1))
    assert nxt == N + 1


def test_records_are_decoded(storage: SegmentedLog) -> None:
    recs, _ = scan_chunk(storage, span(storage, 7, 9), Filter(), no_dups, 10)
    assert [(r.index, r.level, r.source, r.msg, r.ts, r.ts_corrected) for r in recs] == [
        (7, LEVELS[2], SOURCES[1], "event 7", None, None),
        (8, LEVELS[3], SOURCES[2], "event 8 disk", 8 * S, 8 * S),
    ]
    assert recs[0].id == rid(7)
    assert recs[0].term == 1
    assert recs[0].ingest_ts == 1007 * S
    assert record_json(recs[1], late=True)["late"] is True
    assert record_json(recs[1])["index"] == 8


@pytest.mark.parametrize("level", LEVELS)
def test_level_is_a_minimum(storage: SegmentedLog, level: str) -> None:
    got, _ = indexes(storage, Filter(level=level))
    want = [i for i in range(2, N + 1) if i % 5 >= LEVELS.index(level)]
    assert got == want


def test_source_is_exact(storage: SegmentedLog) -> None:
    got, _ = indexes(storage, Filter(source="db"))
    assert got == [i for i in range(2, N + 1) if i % 3 == 1]
    assert indexes(storage, Filter(source="d"))[0] == []


def test_grep_is_a_substring_of_msg(storage: SegmentedLog) -> None:
    got, _ = indexes(storage, Filter(grep="disk"))
    assert got == [i for i in range(2, N + 1) if i % 4 == 0]
    assert indexes(storage, Filter(grep="event 11"))[0] == [11, *range(110, 120)]
    assert indexes(storage, Filter(grep="DISK"))[0] == []  # case matters


def event_time(i: int) -> int:
    return 1000 * S + i * S if i % 7 == 0 else i * S


def test_since_until_on_ts_corrected_falling_back_to_ingest_ts(storage: SegmentedLog) -> None:
    got, _ = indexes(storage, Filter(since=10 * S, until=20 * S))
    assert got == [i for i in range(10, 20) if i % 7 != 0]  # until is exclusive
    # records without ts are found by their ingest time instead
    got, _ = indexes(storage, Filter(since=1000 * S))
    assert got == [i for i in range(2, N + 1) if i % 7 == 0]
    got, _ = indexes(storage, Filter(since=1014 * S, until=1022 * S))
    assert got == [14, 21]
    got, _ = indexes(storage, Filter(until=3 * S))
    assert got == [2]


def test_filters_combine(storage: SegmentedLog) -> None:
    flt = Filter(level="warning", source="web", grep="disk", since=20 * S, until=100 * S)
    got, _ = indexes(storage, flt)
    want = [
        i
        for i in range(2, N + 1)
        if i % 5 >= 2 and i % 3 == 0 and i % 4 == 0 and 20 * S <= event_time(i) < 100 * S
    ]
    assert want  # the test means something
    assert got == want


def test_limit_and_next_index_page_through(storage: SegmentedLog) -> None:
    flt = Filter(source="cron")  # every 3rd index
    pages: list[list[int]] = []
    lo = 1
    while lo <= N:
        got, nxt = indexes(storage, flt, lo=lo, limit=7)
        assert len(got) <= 7
        if len(got) == 7:
            assert nxt == got[-1] + 1  # a full page: resume right after its last record
        else:
            assert nxt == N + 1  # a short page scanned to the end of the range
        pages.append(got)
        assert nxt > lo
        lo = nxt
    flat = [i for p in pages for i in p]
    assert flat == [i for i in range(2, N + 1) if i % 3 == 2]


def test_limit_zero_returns_nothing(storage: SegmentedLog) -> None:
    assert indexes(storage, Filter(), lo=5, limit=0) == ([], 5)


def test_range_bounds(storage: SegmentedLog) -> None:
    assert indexes(storage, Filter(), lo=10, hi=13) == ([10, 11, 12], 13)
    assert indexes(storage, Filter(), lo=10, hi=10) == ([], 10)
    # no match in the range: the next index is the end of the range (scanned past)
    assert indexes(storage, Filter(grep="nothing"), lo=10, hi=50) == ([], 50)


def test_dup_indexes_are_skipped(storage: SegmentedLog) -> None:
    dups = {3, 4, 5, 50}
    recs, nxt = scan_chunk(storage, span(storage, 1, 60), Filter(), dups.__contains__, 100)
    assert [r.index for r in recs] == [i for i in range(2, 60) if i not in dups]
    assert nxt == 60
    # a dup at the end of a page still advances the next index past it
    recs, nxt = scan_chunk(storage, span(storage, 2, 6), Filter(), dups.__contains__, 100)
    assert ([r.index for r in recs], nxt) == ([2], 6)


def test_scans_in_chunks(storage: SegmentedLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scans, "CHUNK_ENTRIES", 4)
    monkeypatch.setattr(scans, "CHUNK_BYTES", 1)  # at least one entry per read
    got, nxt = indexes(storage, Filter(grep="disk"), lo=1, hi=N + 1, limit=5)
    assert got == [4, 8, 12, 16, 20]
    assert nxt == 21


def test_lo_below_first_index_is_clamped(tmp_path: Path) -> None:
    log = SegmentedLog(tmp_path / "n1", segment_bytes=4096, node="n1")
    try:
        fill(log)
        log.compact(Snapshot(Index(59), log.term(Index(59)), b""))
        assert log.remove_before(Index(60)) > 0  # retention dropped the oldest segments
        first = log.first_index()
        assert first > 1
        es = log.entries(first, Index(first + 2), 1 << 20)
        oldest = next(b for e in es if (b := parse_batch(e.data)))
        got, nxt = indexes(log, Filter(), lo=1)
        assert got == list(range(oldest.base, N + 1))
        assert nxt == N + 1
    finally:
        log.close()


def test_a_log_that_holds_no_record_of_the_range_is_done_with_it(tmp_path: Path) -> None:
    """A node restored from a snapshot may hold none of the records asked for (they are in
    the snapshot's past): the scan ends with next = hi, so a client paging on stops."""
    log = SegmentedLog(tmp_path / "n1", segment_bytes=4096, node="n1")
    try:
        fill(log)
        log.install_snapshot(Snapshot(Index(N + 10), Term(3), b""))
        recs, nxt = scan_chunk(log, Span(1, N + 1, 1, N + 11), Filter(), no_dups, 100)
        assert (recs, nxt) == ([], N + 1)
    finally:
        log.close()


def test_empty_log(tmp_path: Path) -> None:
    log = SegmentedLog(tmp_path / "empty", node="n1")
    try:
        assert scan_chunk(log, Span(1, 1, 1, 1), Filter(), no_dups, 10) == ([], 1)
    finally:
        log.close()


def test_scan_steps_are_bounded_and_resume_mid_entry(storage: SegmentedLog) -> None:
    """Each step looks at about ``budget`` records, then hands back the rest of the span
    (possibly inside an entry); the steps together give exactly the one-go scan."""
    flt = Filter(grep="event")
    rest: Span | None = span(storage, 1, N + 1)
    got: list[int] = []
    steps = 0
    while rest is not None:
        recs, nxt, rest = scan_step(storage, rest, flt, no_dups, 1000, budget=4)
        assert len(recs) <= 6  # the budget is checked after each entry (of at most 3)
        got += [r.index for r in recs]
        steps += 1
        assert steps < 100
    assert nxt == N + 1
    assert got == list(range(2, N + 1))
    assert steps >= N // 6


def test_level_filter_skips_decoding(
    storage: SegmentedLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real = scans.decode_body

    def spy(i: int, *a: object) -> object:
        decoded.append(i)
        return real(i, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(scans, "decode_body", spy)
    got, _ = indexes(storage, Filter(level="critical"))
    assert got == [i for i in range(2, N + 1) if i % 5 == 4]
    assert decoded == got  # only the matches were decoded


def test_field_filters_match_on_the_node(tmp_path: Path) -> None:
    """``--field key=value``: every pair must hold; numbers and booleans compare as JSON."""
    log = SegmentedLog(tmp_path / "f", node="n1")
    recs = []
    for i in range(1, 13):
        fields = {"user": f"u{i % 3}", "n": i % 4, "ok": i % 2 == 0, "r": 0.5 * i}
        a = validate({"id": rid(i), "msg": f"m {i}", "fields": fields}, node="n1")
        recs.append((a.id, a.body))
    log.append_batch([Entry(Term(1), Index(1), batch_data(S, 1, recs))], HardState(Term(1)))
    try:

        def got(*pairs: tuple[str, str]) -> list[int]:
            where = Span(1, 13, 1, log.last_index() + 1)
            found, _, _ = scan_step(log, where, Filter(fields=pairs), no_dups, 100)
            return [r.index for r in found]

        assert got(("user", "u1")) == [1, 4, 7, 10]
        assert got(("user", "u1"), ("ok", "true")) == [4, 10]
        assert got(("n", "3")) == [3, 7, 11]
        assert got(("r", "1.5")) == [3]
        assert got(("user", "nobody")) == []
        assert got(("missing", "x")) == []
        assert got(("n", "u1")) == []  # a text value never equals a number
    finally:
        log.close()
