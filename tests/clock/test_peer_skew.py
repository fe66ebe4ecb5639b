"""Peer skew: four-timestamp offset +- uncertainty, best-of with ageing, offset to the majority."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2plog.clock.peer_skew import PeerSkew, measure, offset_to_majority

MS = 1_000_000
S = 1000 * MS
T0 = 1_700_000_000 * S


def probe(theta: int, d_out: int, d_back: int, proc: int, t1: int = T0) -> tuple[int, ...]:
    """Timestamps of one probe to a peer whose clock is ``theta`` ahead of ours."""
    t2 = t1 + d_out + theta
    t3 = t2 + proc
    t4 = t3 - theta + d_back
    return t1, t2, t3, t4


def test_symmetric_delay_gives_the_exact_offset() -> None:
    s = measure(*probe(theta=250 * MS, d_out=3 * MS, d_back=3 * MS, proc=MS))
    assert s is not None
    assert s.offset_ns == 250 * MS
    assert s.uncertainty_ns == 3 * MS


def test_asymmetric_delay_errs_by_half_the_difference() -> None:
    s = measure(*probe(theta=-40 * MS, d_out=9 * MS, d_back=MS, proc=2 * MS))
    assert s is not None
    assert s.offset_ns == -40 * MS + 4 * MS
    assert s.uncertainty_ns == 5 * MS


@given(
    theta=st.integers(-10 * S, 10 * S),
    d_out=st.integers(0, S),
    d_back=st.integers(0, S),
    proc=st.integers(0, S),
)
def test_true_offset_is_always_within_the_uncertainty(
    theta: int, d_out: int, d_back: int, proc: int
) -> None:
    s = measure(*probe(theta, d_out, d_back, proc))
    assert s is not None
    assert abs(s.offset_ns - theta) <= s.uncertainty_ns
    assert s.uncertainty_ns <= (d_out + d_back + 1) // 2


def test_inconsistent_timestamps_are_refused() -> None:
    skew = PeerSkew("n1")
    assert skew.add("n2", T0, T0 + 10 * MS, T0 + 20 * MS, T0 + 5 * MS) is None
    assert skew.refused == 1
    assert skew.best("n2", T0) is None


def test_best_is_the_least_uncertain_after_ageing() -> None:
    skew = PeerSkew("n1", drift_bound_ppm=15, max_age_ns=600 * S)
    skew.add("n2", *probe(100 * MS, MS, MS, 0, t1=T0))  # +-1 ms
    skew.add("n2", *probe(101 * MS, 5 * MS, 5 * MS, 0, t1=T0 + 100 * S - 10 * MS))  # +-5 ms
    best = skew.best("n2", T0 + 101 * S)
    assert best is not None
    assert best.offset_ns == 100 * MS  # aged to 1 + 1.5 ms: still the best
    # A fresh +-5 ms sample 300 s later beats the first, aged by 4.5 ms at 15 ppm.
    skew.add("n2", *probe(102 * MS, 5 * MS, 5 * MS, 0, t1=T0 + 300 * S - 10 * MS))
    later = skew.best("n2", T0 + 301 * S)
    assert later is not None
    assert later.offset_ns == 102 * MS
    assert later.uncertainty_ns == 5 * MS + S * 15 // 1_000_000
    assert later.age_ns == S
    assert skew.best("n2", T0 + 901 * S) is None  # everything older than max_age is forgotten
    assert list(skew.offsets(T0 + 901 * S)) == []


def test_keeps_recent_samples_per_peer() -> None:
    skew = PeerSkew("n1", samples_per_peer=2)
    skew.add("n2", *probe(MS, 0, 0, 0, t1=T0))  # exact: it would win if it were kept
    skew.add("n2", *probe(2 * MS, MS, MS, 0, t1=T0 + S))
    skew.add("n2", *probe(3 * MS, 2 * MS, 2 * MS, 0, t1=T0 + 2 * S))
    best = skew.best("n2", T0 + 3 * S)
    assert best is not None
    assert best.offset_ns == 2 * MS


@pytest.mark.parametrize(
    ("self_id", "table", "expected"),
    [
        ("a", {"a": 0, "b": 0, "c": 10 * S}, 0),  # a good node is not blamed for a bad peer
        ("c", {"a": 0, "b": 0, "c": 10 * S}, 10 * S),  # the bad one is
        ("b", {"a": 0, "b": -3 * MS, "c": 2 * MS}, -3 * MS),
        ("a", {"a": 5 * MS}, 0),  # alone: nothing to compare with
        ("a", {"a": 0, "b": 0, "c": 10 * S, "d": 10 * S}, 0),  # even split: nobody blamed
        ("a", {"a": 7, "b": 0, "c": 3, "d": 2, "e": 100}, 4),
    ],
)
def test_offset_to_majority(self_id: str, table: dict[str, int], expected: int) -> None:
    assert offset_to_majority(self_id, table) == expected


def test_clock_uncertain_from_own_probes() -> None:
    # n3's own view: both peers say n3's clock is 400 ms ahead of theirs.
    skew = PeerSkew("n3")
    skew.add("n1", *probe(-400 * MS, MS, MS, 0))
    skew.add("n2", *probe(-401 * MS, MS, MS, 0))
    assert skew.table(T0) == {"n1": -400 * MS, "n2": -401 * MS, "n3": 0}
    assert skew.offset_to_majority(T0) == 400 * MS
    assert skew.clock_uncertain(250, T0) is True
    assert skew.clock_uncertain(500, T0) is False
    # n1's view: one peer off by 400 ms does not make n1 uncertain.
    good = PeerSkew("n1")
    good.add("n2", *probe(MS, MS, MS, 0))
    good.add("n3", *probe(400 * MS, MS, MS, 0))
    assert good.clock_uncertain(250, T0) is False
    pair = PeerSkew("n1")
    pair.add("n3", *probe(400 * MS, MS, MS, 0))
    assert pair.offset_to_majority(T0) == 0  # even split (n1, n3): nobody blamed
