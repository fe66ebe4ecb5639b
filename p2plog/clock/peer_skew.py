"""Per-peer clock offset +- uncertainty from four timestamps, and the offset to the majority.

Pure: every time is passed in as integer ns. A probe (a heartbeat and its reply) gives
``t1`` = our send, ``t2`` = peer receive, ``t3`` = peer send, ``t4`` = our receive, where t1/t4
are read on our clock and t2/t3 on the peer's (stamp both with the corrected clock, so what is
measured is the disagreement left after NTP). Then (NTP on-wire, RFC 5905 §8)::

    offset      = ((t2 - t1) + (t3 - t4)) / 2     peer clock - our clock
    uncertainty = ((t4 - t1) - (t3 - t2)) / 2     half the round trip the network took

The true offset lies in ``offset +- uncertainty`` whatever the asymmetry of the two paths.

Per peer the last ``samples_per_peer`` probes are kept; the best is the one with the lowest
uncertainty after ageing: a sample's uncertainty grows by ``drift_bound_ppm`` of its age (the
two clocks may drift apart meanwhile; RFC 5905 grows dispersion at 15 ppm), and samples older
than ``max_age_ns`` are forgotten. A probe with a negative round trip (t3 - t2 > t4 - t1) has
inconsistent timestamps and is refused.

``offset_to_majority``: the median of this node's offsets to every node, itself (0) included.
For an odd cluster that is exactly the offset to a majority: in a 3-node cluster with one bad
clock, both good nodes get ~0 and only the bad one gets its error. Leaving itself out would
average the two others and blame a good node for a bad peer. With an even count the middle
value nearer to 0 is taken, so an evenly split cluster blames nobody.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class SkewSample:
    offset_ns: int  # peer clock - our clock
    uncertainty_ns: int  # the true offset is within offset +- uncertainty
    at_ns: int  # our clock at t4


def measure(t1: int, t2: int, t3: int, t4: int) -> SkewSample | None:
    """One probe's offset and uncertainty; None if the timestamps are inconsistent."""
    rtt = (t4 - t1) - (t3 - t2)
    if rtt < 0:
        return None
    return SkewSample(((t2 - t1) + (t3 - t4)) // 2, (rtt + 1) // 2, t4)


@dataclass(frozen=True, slots=True)
class PeerOffset:
    offset_ns: int
    uncertainty_ns: int  # aged
    age_ns: int


def offset_to_majority(self_id: str, table: Mapping[str, int]) -> int:
    """This node's median offset to all nodes (itself included, see the module docstring).

    ``table`` maps every node with a known offset to its clock minus one reference node's clock
    (any reference: only differences matter). The result is positive when this node's clock is
    ahead of the majority's.
    """
    assert self_id in table, f"{self_id} is not in the offset table"
    mine = table[self_id]
    diffs = sorted(mine - other for other in table.values())
    n = len(diffs)
    if n % 2:
        return diffs[n // 2]
    lo, hi = diffs[n // 2 - 1], diffs[n // 2]
    return lo if abs(lo) <= abs(hi) else hi


class PeerSkew:
    """This node's view of its peers' clocks (feed it every probe; ask with this node's clock)."""

    def __init__(
        self,
        self_id: str,
        *,
        samples_per_peer: int = 8,
        max_age_ns: int = 600 * 1_000_000_000,
        drift_bound_ppm: int = 15,
    ) -> None:
        assert samples_per_peer >= 1
        assert max_age_ns > 0
        assert drift_bound_ppm >= 0
        self.self_id = self_id
        self.samples_per_peer = samples_per_peer
        self.max_age_ns = max_age_ns
        self.drift_bound_ppm = drift_bound_ppm
        self._peers: dict[str, deque[SkewSample]] = {}
        self.refused = 0

    def add(self, peer: str, t1: int, t2: int, t3: int, t4: int) -> SkewSample | None:
        """Record one probe of ``peer``; None (and counted in ``refused``) if inconsistent."""
        assert peer != self.self_id
        s = measure(t1, t2, t3, t4)
        if s is None:
            self.refused += 1
            return None
        self._peers.setdefault(peer, deque(maxlen=self.samples_per_peer)).append(s)
        return s

    def best(self, peer: str, now_ns: int) -> PeerOffset | None:
        """The peer's offset from its least uncertain fresh sample, uncertainty aged to now."""
        found: PeerOffset | None = None
        for s in self._peers.get(peer, ()):
            age = max(0, now_ns - s.at_ns)
            if age > self.max_age_ns:
                continue
            u = s.uncertainty_ns + age * self.drift_bound_ppm // 1_000_000
            if found is None or u <= found.uncertainty_ns:
                found = PeerOffset(s.offset_ns, u, age)
        return found

    def offsets(self, now_ns: int) -> dict[str, PeerOffset]:
        """Every peer with a fresh sample."""
        out: dict[str, PeerOffset] = {}
        for peer in sorted(self._peers):
            b = self.best(peer, now_ns)
            if b is not None:
                out[peer] = b
        return out

    def table(self, now_ns: int) -> dict[str, int]:
        """Offsets of every measured node relative to this node (this node: 0)."""
        t = {peer: b.offset_ns for peer, b in self.offsets(now_ns).items()}
        t[self.self_id] = 0
        return t

    def offset_to_majority(self, now_ns: int) -> int:
        """This node's clock minus the majority's (0 while no peer has been measured)."""
        return offset_to_majority(self.self_id, self.table(now_ns))

    def clock_uncertain(self, max_offset_ms: int, now_ns: int) -> bool:
        """True if this node's offset to the majority exceeds ``max_offset_ms``: its records
        are then marked ``clock_uncertain`` (the node keeps running)."""
        return abs(self.offset_to_majority(now_ns)) > max_offset_ms * NS_PER_MS
