"""NTP clock estimate: a sample filter, a drift fit and a corrected clock that never steps back.

Pure: the caller passes every time in as integer nanoseconds and never a clock object. The
estimator does not care which local clock it is given, only that the samples and the calls to
``corrected_now`` use the same one. A step-free clock (monotonic plus a constant anchor, see
``p2plog.clock.ntp_poller.steady_wall_clock``) is the best choice: then a stepped system clock
changes nothing here. With ``time.time_ns`` a backward step of the system clock is absorbed
(the corrected clock holds instead of stepping back) and a forward step shows until the next NTP
sample, after which it is slewed out.

Theory of operation:

- **Samples** (``NtpSample``): ``offset_ns`` = reference - local, i.e. the correction to add to
  the local clock (ntplib's sign), and ``delay_ns`` = the round trip. The last ``max_samples``
  (8) are kept. The one with the smallest delay is the best estimate of the offset, since a
  short round trip leaves the least room for asymmetric queueing (RFC 5905 §10, clock filter).
- **Drift** (ppm; negative when the local clock runs fast): once the kept samples span at least
  ``drift_min_span_ns``, a least-squares line
  offset(local) is fitted, each sample weighted by 1/(delay/2 + floor)^2 (its offset error is at
  most delay/2). The slope is the local clock's rate error in ppm, clamped to
  ``max_drift_ppm`` (RFC 5905's 500 ppm tolerance).
- **Prediction**: ``offset_at(local)`` = best.offset + drift * (local - best.local).
- **Steps**: a sample whose offset disagrees with the prediction by more than
  ``step_threshold_ns`` (RFC 5905's 128 ms) plus both delays is a suspect. It is used only once
  a second sample agrees with it; then the older samples belong to another regime (the local or
  the reference clock stepped) and the filter restarts from the two. One odd sample alone never
  moves the clock (RFC 5905's popcorn-spike suppressor does the same).
- **Corrected clock**: ``corrected_now(local) = local + applied``, where ``applied`` moves
  toward ``offset_at(local)`` by at most ``max_slew_ppm`` of the local time elapsed since the
  previous call (like adjtime(2)). Before the first corrected time has been handed out,
  ``applied`` is set to the prediction at once: stepping a clock nobody has read yet breaks no
  promise, and it lets a node start several seconds off and still stamp correct times once the
  first poll has answered (callers should wait for that, bounded; see ``NtpPoller``). Once a
  time has been handed out, the clock only slews.

Invariants (asserted): consecutive results of ``corrected_now`` never decrease; between two calls
with local times ``a <= b`` the result grows by ``(b - a) * (1 +- max_slew_ppm / 1e6)`` within
1 ns. If the local clock goes back, the result holds (the step is absorbed into ``applied``).
With no samples the estimate is the identity and ``status()`` says the node runs on the system
clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class NtpSample:
    """One NTP exchange. ``local_ns``: the local clock when it happened; ``offset_ns``: reference
    minus local (add it to correct the local clock); ``delay_ns``: round-trip delay."""

    local_ns: int
    offset_ns: int
    delay_ns: int
    server: str = ""


class Verdict(Enum):
    """What ``add_sample`` did with a sample."""

    ACCEPTED = "accepted"
    SUSPECT = "suspect"  # disagrees with the prediction by more than the step threshold; held
    RESTARTED = "restarted"  # confirmed a suspect: the filter restarted from the two
    REJECTED = "rejected"  # negative delay: the exchange's timestamps are inconsistent


class ClockEstimator:
    def __init__(
        self,
        *,
        max_samples: int = 8,
        max_slew_ppm: int = 500,
        max_drift_ppm: int = 500,
        drift_min_span_ns: int = 60 * NS_PER_S,
        step_threshold_ns: int = 128 * NS_PER_MS,
        stale_after_ns: int = 1024 * NS_PER_S,
        delay_floor_ns: int = 50_000,
    ) -> None:
        assert max_samples >= 2, "the drift fit needs at least two samples"
        # Below 1e6 ppm the corrected clock never stands still while the local clock runs.
        assert 0 < max_slew_ppm < PPM, f"max_slew_ppm={max_slew_ppm} must be in 1..999999"
        assert 0 <= max_drift_ppm < PPM, f"max_drift_ppm={max_drift_ppm}"
        assert drift_min_span_ns > 0
        assert step_threshold_ns > 0
        self.max_slew_ppm = max_slew_ppm
        self.max_drift_ppm = max_drift_ppm
        self.drift_min_span_ns = drift_min_span_ns
        self.step_threshold_ns = step_threshold_ns
        self.stale_after_ns = stale_after_ns
        self.delay_floor_ns = delay_floor_ns
        self._samples: deque[NtpSample] = deque(maxlen=max_samples)
        self._suspect: NtpSample | None = None
        self._best: NtpSample | None = None
        self._drift_ppm = 0.0
        self._drift_fitted = False
        self.restarts = 0
        self.rejected = 0
        # The corrected clock's state (see corrected_now).
        self._handed_out = False
        self._applied_ns = 0
        self._last_local_ns = 0
        self._last_out_ns = 0
        self._slew_credit = 0  # elapsed ns * ppm not yet spent on slewing; < PPM when idle

    # --- samples ------------------------------------------------------------------------------

    def add_sample(self, s: NtpSample) -> Verdict:
        if s.delay_ns < 0:
            self.rejected += 1
            return Verdict.REJECTED
        best = self._best
        if best is not None and self._disagrees(s, best):
            suspect, self._suspect = self._suspect, s
            if suspect is None or self._disagrees(s, suspect):
                return Verdict.SUSPECT
            # Two samples agree with each other and not with the history: the history is from
            # before a clock step. Restart the filter from them.
            self._samples.clear()
            self._samples.append(suspect)
            self._samples.append(s)
            self._suspect = None
            self.restarts += 1
            self._refit()
            return Verdict.RESTARTED
        self._suspect = None
        self._samples.append(s)
        self._refit()
        return Verdict.ACCEPTED

    def _disagrees(self, s: NtpSample, ref: NtpSample) -> bool:
        predicted = ref.offset_ns + self._drift_ns(s.local_ns - ref.local_ns)
        allowed = self.step_threshold_ns + (s.delay_ns + ref.delay_ns) // 2
        return abs(s.offset_ns - predicted) > allowed

    def _refit(self) -> None:
        self._best = min(self._samples, key=lambda x: (x.delay_ns, -x.local_ns))
        self._drift_fitted = False
        self._drift_ppm = 0.0
        first = min(x.local_ns for x in self._samples)
        if max(x.local_ns for x in self._samples) - first < self.drift_min_span_ns:
            return
        # Weighted least squares of offset against local time, centred for float precision.
        ws = [1.0 / float(x.delay_ns // 2 + self.delay_floor_ns) ** 2 for x in self._samples]
        xs = [float(x.local_ns - first) for x in self._samples]
        ys = [float(x.offset_ns - self._samples[0].offset_ns) for x in self._samples]
        sw = sum(ws)
        mx = sum(w * x for w, x in zip(ws, xs, strict=True)) / sw
        my = sum(w * y for w, y in zip(ws, ys, strict=True)) / sw
        sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs, strict=True))
        sxy = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys, strict=True))
        if sxx <= 0.0:
            return
        slope_ppm = sxy / sxx * PPM
        self._drift_ppm = max(-self.max_drift_ppm, min(self.max_drift_ppm, slope_ppm))
        self._drift_fitted = True

    def _drift_ns(self, dt_ns: int) -> int:
        return round(self._drift_ppm * dt_ns / PPM)

    # --- prediction ---------------------------------------------------------------------------

    @property
    def samples(self) -> tuple[NtpSample, ...]:
        return tuple(self._samples)

    @property
    def best(self) -> NtpSample | None:
        """The kept sample with the smallest delay (the newest among equals)."""
        return self._best

    @property
    def drift_ppm(self) -> float:
        return self._drift_ppm

    def offset_at(self, local_ns: int) -> int:
        """Predicted reference - local at ``local_ns``; 0 with no samples."""
        best = self._best
        if best is None:
            return 0
        return best.offset_ns + self._drift_ns(local_ns - best.local_ns)

    def corrected_now(self, local_ns: int) -> int:
        """The corrected time for local time ``local_ns``; never less than the previous result."""
        target = self.offset_at(local_ns)
        if not self._handed_out:
            # Nothing was handed out yet: take the whole correction at once (module docstring).
            self._handed_out = True
            self._applied_ns = target
            self._last_local_ns = local_ns
            self._last_out_ns = local_ns + target
            return self._last_out_ns
        elapsed = local_ns - self._last_local_ns
        if elapsed < 0:
            # The local clock went back: hold the corrected time; the step becomes part of the
            # applied offset (the next NTP sample will show the same step as a larger offset).
            self._applied_ns -= elapsed
            elapsed = 0
        self._slew_credit += elapsed * self.max_slew_ppm
        gap = target - self._applied_ns
        step = min(abs(gap), self._slew_credit // PPM)
        self._applied_ns += step if gap > 0 else -step
        self._slew_credit = min(self._slew_credit - step * PPM, PPM - 1)
        out = local_ns + self._applied_ns
        assert out >= self._last_out_ns, (
            f"corrected clock stepped back: {out} < {self._last_out_ns}"
        )
        self._last_local_ns = local_ns
        self._last_out_ns = out
        return out

    @property
    def applied_offset_ns(self) -> int:
        """The offset currently applied by ``corrected_now`` (slewing toward the prediction)."""
        return self._applied_ns

    def synced(self, local_ns: int) -> bool:
        """A sample is kept and the newest is at most ``stale_after_ns`` old."""
        if not self._samples:
            return False
        newest = max(x.local_ns for x in self._samples)
        return local_ns - newest <= self.stale_after_ns

    def status(self, local_ns: int | None = None) -> dict[str, Any]:
        """For ``status``: offsets in ms, drift in ppm. ``local_ns`` defaults to the last local
        time seen (a call of ``corrected_now`` or the newest sample)."""
        best = self._best
        if local_ns is None:
            seen = [x.local_ns for x in self._samples]
            if self._handed_out:
                seen.append(self._last_local_ns)
            local_ns = max(seen, default=0)
        target = self.offset_at(local_ns)
        applied = self._applied_ns if self._handed_out else target
        synced = self.synced(local_ns)
        if best is None:
            source = "system clock (no NTP sample yet)"
        elif not synced:
            source = f"system clock (NTP samples from {best.server or 'ntp'} are stale)"
        else:
            source = best.server or "ntp"
        return {
            "synced": synced,
            "source": source,
            "offset_ms": target / NS_PER_MS,
            "applied_offset_ms": applied / NS_PER_MS,
            "slew_remaining_ms": (target - applied) / NS_PER_MS,
            "drift_ppm": round(self._drift_ppm, 3),
            "drift_fitted": self._drift_fitted,
            "delay_ms": best.delay_ns / NS_PER_MS if best is not None else None,
            "samples": len(self._samples),
            "restarts": self.restarts,
            "rejected": self.rejected,
        }
