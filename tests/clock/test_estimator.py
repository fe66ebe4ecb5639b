"""ClockEstimator: clock filter, drift fit, prediction, step handling and the slewed clock."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2plog.clock.estimator import ClockEstimator, NtpSample, Verdict

S = 1_000_000_000
MS = 1_000_000
US = 1_000
T0 = 1_700_000_000 * S  # a realistic epoch time: the arithmetic must stay exact at this size


def test_no_samples_is_identity_and_says_so() -> None:
    est = ClockEstimator()
    assert est.offset_at(T0) == 0
    assert [est.corrected_now(T0 + k * MS) for k in range(3)] == [T0, T0 + MS, T0 + 2 * MS]
    st_ = est.status()
    assert st_["synced"] is False
    assert "system clock" in st_["source"]
    assert st_["samples"] == 0
    assert st_["offset_ms"] == 0


def test_picks_the_min_delay_sample() -> None:
    est = ClockEstimator()
    for k, (offset_ms, delay_ms) in enumerate([(10, 5), (12, 1), (8, 3), (11, 2)]):
        est.add_sample(NtpSample(T0 + k * S, offset_ms * MS, delay_ms * MS, f"s{k}"))
    assert est.best is not None
    assert est.best.server == "s1"
    assert est.offset_at(T0 + 5 * S) == 12 * MS  # span 3 s: no drift fitted yet
    assert est.status()["source"] == "s1"
    assert est.status()["delay_ms"] == 1.0


def test_keeps_only_the_last_eight() -> None:
    est = ClockEstimator(drift_min_span_ns=10**6 * S)
    est.add_sample(NtpSample(T0, 50 * MS, 100 * US, "old-best"))
    for k in range(1, 8):
        est.add_sample(NtpSample(T0 + k * S, 40 * MS, MS, f"s{k}"))
    assert est.best is not None
    assert est.best.server == "old-best"
    est.add_sample(NtpSample(T0 + 8 * S, 40 * MS, 2 * MS, "s8"))  # pushes old-best out
    assert len(est.samples) == 8
    assert est.best.server != "old-best"
    assert est.offset_at(T0 + 9 * S) == 40 * MS


def drifting_samples(
    ppm: float, n: int, interval_s: int, seed: int, noise_us: int = 200
) -> list[NtpSample]:
    """Local clock running ``ppm`` fast: reference - local falls by ppm * elapsed. Each offset
    is off by up to half its delay (asymmetric paths) plus ``noise_us``."""
    rng = Random(seed)
    out = []
    for k in range(n):
        local = T0 + k * interval_s * S
        truth = 3 * S - round(ppm * (local - T0) / 1e6)
        delay = rng.randint(200 * US, 3 * MS)
        err = rng.randint(-delay // 4, delay // 4) + rng.randint(-noise_us * US, noise_us * US)
        out.append(NtpSample(local, truth + err, delay))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_drift_estimate_within_a_few_ppm(seed: int) -> None:
    est = ClockEstimator()
    for s in drifting_samples(100, 8, 64, seed):
        assert est.add_sample(s) is Verdict.ACCEPTED
    assert est.status()["drift_fitted"] is True
    assert abs(est.drift_ppm - -100) < 3, est.drift_ppm
    # Between polls the prediction follows the drift (unfitted it would be 3.2 ms off).
    local = T0 + 7 * 64 * S + 32 * S
    truth = 3 * S - 100 * (local - T0) // 1_000_000
    assert abs(est.offset_at(local) - truth) < 1 * MS


def test_no_drift_fit_while_the_span_is_short_and_drift_is_clamped() -> None:
    est = ClockEstimator(drift_min_span_ns=60 * S)
    for s in drifting_samples(100, 4, 10, seed=1):  # 30 s span
        est.add_sample(s)
    assert est.drift_ppm == 0.0
    assert est.status()["drift_fitted"] is False
    wild = ClockEstimator(max_drift_ppm=500, step_threshold_ns=10 * S)
    for s in drifting_samples(2000, 8, 64, seed=2, noise_us=0):
        wild.add_sample(s)
    assert wild.drift_ppm == -500


def test_initial_offset_is_stepped_only_before_the_first_handout() -> None:
    est = ClockEstimator(max_slew_ppm=500)
    est.add_sample(NtpSample(T0, 5 * S, MS))
    assert est.corrected_now(T0 + S) == T0 + 6 * S  # nothing handed out before: step at once
    late = ClockEstimator(max_slew_ppm=500)
    assert late.corrected_now(T0) == T0  # handed out identity time
    late.add_sample(NtpSample(T0, 5 * S, MS))
    assert late.corrected_now(T0 + S) == T0 + S + 500 * US  # now only slewing at 500 ppm
    assert late.status(T0 + S)["slew_remaining_ms"] == pytest.approx(5000 - 0.5)


def test_slew_converges_then_tracks_exactly() -> None:
    est = ClockEstimator(max_slew_ppm=500)
    est.corrected_now(T0)
    est.add_sample(NtpSample(T0, -100 * MS, MS))
    local = T0
    for _ in range(201):  # 100 ms at 500 ppm takes 200 s
        local += S
        est.corrected_now(local)
    assert est.applied_offset_ns == -100 * MS
    assert est.corrected_now(local + S) == local + S - 100 * MS


def test_one_outlier_is_held_two_agreeing_restart_the_filter() -> None:
    est = ClockEstimator()
    for k in range(4):
        est.add_sample(NtpSample(T0 + k * S, 10 * MS, MS))
    assert est.add_sample(NtpSample(T0 + 4 * S, 3 * S, MS)) is Verdict.SUSPECT
    assert est.offset_at(T0 + 5 * S) == 10 * MS  # one spike moves nothing
    assert est.add_sample(NtpSample(T0 + 5 * S, 10 * MS, MS)) is Verdict.ACCEPTED
    assert est.add_sample(NtpSample(T0 + 6 * S, 3 * S, MS)) is Verdict.SUSPECT
    assert est.add_sample(NtpSample(T0 + 7 * S, 3 * S + 50 * US, 2 * MS)) is Verdict.RESTARTED
    assert len(est.samples) == 2
    assert est.offset_at(T0 + 8 * S) == 3 * S  # the min-delay one of the two
    assert est.status()["restarts"] == 1


def test_negative_delay_is_rejected() -> None:
    est = ClockEstimator()
    assert est.add_sample(NtpSample(T0, MS, -1)) is Verdict.REJECTED
    assert est.samples == ()
    assert est.status()["rejected"] == 1


def test_synced_goes_stale() -> None:
    est = ClockEstimator(stale_after_ns=100 * S)
    est.add_sample(NtpSample(T0, MS, MS, "127.0.0.1:11123"))
    assert est.status(T0 + 50 * S)["synced"] is True
    late = est.status(T0 + 101 * S)
    assert late["synced"] is False
    assert "stale" in late["source"]


# --- the corrected clock under arbitrary offset jumps (hypothesis) ------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, 120 * S), st.just(0)),
        st.tuples(
            st.just("sample"),
            st.integers(-10 * S, 10 * S),  # offset jumps forward and backward, up to 10 s
            st.integers(0, 20 * MS),  # delay
        ),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=ops, slew_ppm=st.sampled_from([1, 100, 500, 5000]), start_offset=st.integers(-S, S))
def test_corrected_now_monotonic_and_rate_bounded(
    ops: list[tuple[str, int, int]], slew_ppm: int, start_offset: int
) -> None:
    est = ClockEstimator(max_slew_ppm=slew_ppm)
    est.add_sample(NtpSample(T0, start_offset, MS))
    local = T0
    last_local, last_out = local, est.corrected_now(local)
    assert last_out == T0 + start_offset
    for kind, a, b in ops:
        if kind == "read":
            local += a
            out = est.corrected_now(local)
            dl, do = local - last_local, out - last_out
            assert out >= last_out
            # Never faster or slower than the slew bound (1 ns of integer rounding).
            assert abs(do - dl) <= dl * slew_ppm // 1_000_000 + 1, (dl, do)
            last_local, last_out = local, out
        else:
            est.add_sample(NtpSample(local, a, b))  # offset, delay


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.integers(-30 * S, 30 * S), min_size=1, max_size=50))
def test_corrected_now_holds_when_the_local_clock_steps_back(steps: list[int]) -> None:
    est = ClockEstimator()
    est.add_sample(NtpSample(T0, 2 * S, MS))
    local, last = T0, est.corrected_now(T0)
    for dt in steps:
        local += dt
        out = est.corrected_now(local)
        assert out >= last
        if dt <= 0:
            assert out == last
        last = out
