"""HLC: unique, strictly increasing, close to physical time, whatever the physical clock does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2plog.clock.hlc import HLC, ClockJumpError

S = 1_000_000_000
T0 = 1_700_000_000 * S


def test_follows_physical_time_when_it_moves() -> None:
    h = HLC()
    assert [h.now(T0), h.now(T0 + 10), h.now(T0 + 20)] == [T0, T0 + 10, T0 + 20]


def test_same_nanosecond_and_backward_clock_add_one() -> None:
    h = HLC()
    assert [h.now(T0), h.now(T0), h.now(T0 - S), h.now(T0 - S)] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert h.now(T0 + S) == T0 + S  # physical time caught up: back on it


def test_update_merges_a_remote_time() -> None:
    h = HLC()
    h.now(T0)
    assert h.update(T0 + 5 * S, T0 + 1) == T0 + 5 * S + 1  # e.g. the log's last ingest_ts
    assert h.now(T0 + 2) == T0 + 5 * S + 2
    assert h.update(T0, T0 + 3) == T0 + 5 * S + 3  # an older remote time changes nothing


def test_update_refuses_a_remote_time_too_far_ahead() -> None:
    h = HLC(max_forward_ns=S)
    h.now(T0)
    with pytest.raises(ClockJumpError, match="ahead"):
        h.update(T0 + 2 * S, T0)
    assert h.last_ns == T0  # unchanged
    assert h.update(T0 + S, T0) == T0 + S + 1


@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(-10 * S, 10 * S), st.integers(-S, S)),
        min_size=1,
        max_size=200,
    )
)
def test_strictly_increasing_and_never_behind_physical(
    events: list[tuple[bool, int, int]],
) -> None:
    h = HLC()
    physical, last, merged = T0, 0, 0
    for is_update, dt, remote_dt in events:
        physical += dt  # the physical clock jumps forward and backward
        if is_update:
            remote = physical + remote_dt
            ts = h.update(remote, physical)
            assert ts > remote
            merged = max(merged, remote)
        else:
            ts = h.now(physical)
        assert ts > last
        assert ts >= physical
        last = ts
    # Close to physical time: the lead is what the clock went back plus one ns per event.
    assert h.last_ns <= max(physical, merged, T0) + 20 * S + len(events)
