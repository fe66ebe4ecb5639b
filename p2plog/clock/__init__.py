"""Time: NTP estimate, hybrid logical clock and peer skew are pure (times passed in as ints, ns);
only ``ntp_poller`` does I/O (it is not imported here, so importing the package stays pure)."""

from p2plog.clock.estimator import ClockEstimator, NtpSample, Verdict
from p2plog.clock.hlc import HLC, ClockJumpError
from p2plog.clock.peer_skew import PeerOffset, PeerSkew, SkewSample, measure, offset_to_majority

__all__ = [
    "HLC",
    "ClockEstimator",
    "ClockJumpError",
    "NtpSample",
    "PeerOffset",
    "PeerSkew",
    "SkewSample",
    "Verdict",
    "measure",
    "offset_to_majority",
]
