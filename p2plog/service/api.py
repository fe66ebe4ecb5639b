"""What a client session may ask of its node: the ``NodeApi`` protocol (``runtime.node.Node``
implements it).

Small on purpose: a session submits, reads what is applied (after the read barrier on a
follower), subscribes to the live streams and asks the status; how the node does each (the Raft
loop, the leader's forwards, the storage thread) stays behind it. Reads of the log run through
``read_log``, in the storage worker thread that appends share, so a read never races an append.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Set
from typing import Any, Protocol, TypeVar

from p2plog.config import ClusterConfig
from p2plog.latency import Histogram
from p2plog.order.reorder import Emitted
from p2plog.replica.proposals import SubmitResult
from p2plog.runtime.tail_hub import TailHub
from p2plog.state.entry import BatchRef, Rec
from p2plog.state.event_feed import IsDup
from p2plog.state.scans import ScanLog
from p2plog.wire.client import Member

R = TypeVar("R")


class AppliedState(Protocol):
    """What this node has applied (``state.applier.Applier``), read-only."""

    @property
    def applied_index(self) -> int:
        """The last applied Raft index."""
        ...

    @property
    def record_index(self) -> int:
        """The last applied record's index."""
        ...

    @property
    def dup_indexes(self) -> Set[int]:
        """Record indexes of duplicates (readers skip them)."""
        ...

    def locate(self, record_index: int) -> int:
        """A Raft index at or before the entry that holds ``record_index``."""
        ...

    @property
    def times(self) -> TimeSeek:
        """Where a time range starts (``state.time_index.TimeIndex``)."""
        ...


class TimeSeek(Protocol):
    def seek(self, since_ns: int, from_index: int = 1) -> int:
        """A record index at or before the first one from ``from_index`` on whose event time
        may be ``>= since_ns``."""
        ...


class NodeApi(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def cluster(self) -> ClusterConfig: ...

    @property
    def applied(self) -> AppliedState: ...

    @property
    def tail_hub(self) -> TailHub[Rec]:
        """Applied records, index order, as they are applied."""
        ...

    @property
    def event_hub(self) -> TailHub[Emitted[BatchRef]]:
        """The event-time ordered stream, as it is emitted."""
        ...

    tails_open: int  # client tails on this node, every session's (a session bounds them)
    public_status_cache: tuple[float, dict[str, Any]] | None  # (trio time, view): service.status

    def corrected_now(self) -> int:
        """This node's best estimate of true time, ns since the epoch; never steps back."""
        ...

    def clock_uncertain(self) -> bool:
        """True while this node's clock is off from its peers' by more than the bound."""
        ...

    async def submit(self, ids: list[bytes], bodies: list[bytes], ack: str) -> SubmitResult:
        """Store records (``ids[k]``, ``bodies[k]``) through the leader: acks, or one error."""
        ...

    async def read_barrier(self) -> None:
        """On a follower, wait (bounded) until this node applied what the leader committed."""
        ...

    async def read_log(self, fn: Callable[[ScanLog, IsDup], R]) -> R:
        """``fn(log, is_dup)`` in the storage worker thread; its result."""
        ...

    async def member(self, req: Member) -> dict[str, Any]:
        """A ``member`` request's reply fields (``errors.MemberError`` when it fails)."""
        ...

    @property
    def rejected(self) -> Counter[str]:
        """Requests this node refused, by error code (``/metrics``)."""
        ...

    async def cluster_status(self) -> list[dict[str, Any]]:
        """Every member's full status, this node's first (``reachable`` False: no answer)."""
        ...

    def histograms(self) -> dict[str, Histogram]:
        """Latency histograms by name (``fsync``, ``commit``), in seconds."""
        ...

    def status(self) -> dict[str, Any]:
        """The full status (``service.status`` cuts each role's view from it)."""
        ...
