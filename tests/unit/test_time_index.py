"""Seeking by time (``state.time_index``): a seek never skips a record a ``since`` query
matches, and on a log whose clocks behave it lands close to the first one."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from p2plog.raft.types import Entry, Index, Term
from p2plog.record import validate
from p2plog.state.applier import LOCATE_EVERY_RECORDS, Applier
from p2plog.state.entry import batch_data_of
from p2plog.state.time_index import MAX_FUTURE, SEEK_SLACK_NS

S = 1_000_000_000
T0 = 1_800_000_000 * S


def apply_log(batches: list[list[int | None]], ingest_step_ns: int = S // 10) -> Applier:
    """Apply batches of records given by event-time offsets from their ingest time (None: no
    ``ts``); ingest times grow by ``ingest_step_ns`` per batch."""
    a = Applier(1 << 30, 1 << 62)
    base, n = 1, 0
    for k, offsets in enumerate(batches):
        ingest = T0 + k * ingest_step_ns
        ids, bodies = [], []
        for off in offsets:
            n += 1
            raw: dict[str, object] = {"id": uuid.UUID(int=n).bytes, "msg": "m"}
            if off is not None:
                raw["ts"] = ingest + off
            acc = validate(raw, node="n1")
            ids.append(acc.id)
            bodies.append(acc.body)
        a.apply(Entry(Term(1), Index(k + 1), batch_data_of(ingest, base, ids, bodies)))
        base += len(offsets)
    return a


def truth(batches: list[list[int | None]], since: int, start: int, step: int) -> int | None:
    """The first record index >= start whose event time (else ingest time) is >= since."""
    i = 0
    for k, offsets in enumerate(batches):
        ingest = T0 + k * step
        for off in offsets:
            i += 1
            t = ingest + (off if off is not None else 0)
            if i >= start and t >= since:
                return i
    return None


offsets = st.one_of(
    st.none(),
    st.integers(-3600 * S, 0),  # late, by up to an hour
    st.integers(0, 3 * S),  # ahead of its ingest time: past the slack sometimes
)


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(st.lists(offsets, min_size=1, max_size=30), min_size=1, max_size=60),
    since_s=st.floats(-3700, 10),
    start=st.integers(1, 400),
)
def test_a_seek_never_skips_a_match(
    batches: list[list[int | None]], since_s: float, start: int
) -> None:
    step = S // 10
    a = apply_log(batches, step)
    since = T0 + int(since_s * S)
    got = a.times.seek(since, start)
    assert got >= start
    first = truth(batches, since, start, step)
    if first is not None:
        assert got <= first


def test_on_a_well_behaved_log_a_seek_lands_near_the_range() -> None:
    batches: list[list[int | None]] = [[-(k % 50) * 1_000_000] * 100 for k in range(2000)]
    a = apply_log(batches, S // 100)  # 100 records per 10 ms: 20 s of log, 200,000 records
    since = T0 + 15 * S
    first = truth(batches, since, 1, S // 100)
    assert first is not None
    got = a.times.seek(since)
    # at most the slack's worth of records (1 s: 10,000) plus one sample before the range
    assert first - got <= SEEK_SLACK_NS // (S // 100) * 100 + LOCATE_EVERY_RECORDS + 100
    assert got <= first


def test_a_future_dated_record_before_the_seek_point_is_found() -> None:
    batches: list[list[int | None]] = [[0] * 100 for _ in range(1000)]
    batches[10] = [0, 60 * S] + [0] * 98  # record 1002: a producer clock a minute ahead
    a = apply_log(batches, S // 100)
    since = T0 + 9 * S
    assert a.times.seek(since) == 1002  # not the ~8 s point, where the other matches begin


def test_too_many_future_dated_records_turn_seeking_off() -> None:
    n = MAX_FUTURE // 1000 + 1
    a = apply_log([[10 * S] * 1000 for _ in range(n)], S)
    assert a.times.overflow
    assert a.times.seek(T0 + 100 * S, 7) == 7
