"""A node's full status (``Node.status``): what ``status`` reports, before ``service.status``
cuts it down to what a token's role may see."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from p2plog.clock.estimator import ClockEstimator
from p2plog.clock.peer_skew import PeerSkew
from p2plog.config import Config, NodeConfig
from p2plog.net.listener import Listener
from p2plog.net.peer_link import PeerLink
from p2plog.order.reorder import Emitted
from p2plog.raft.types import NodeId
from p2plog.runtime.raft_loop import RaftLoop
from p2plog.runtime.retention import Retention
from p2plog.runtime.submit import Submits
from p2plog.runtime.tail_hub import TailHub
from p2plog.security.policy import NodeSecurity, describe
from p2plog.state.entry import BatchRef, Rec
from p2plog.storage.segmented_log import SegmentedLog


class Node(Protocol):
    """What the status reads of a node (``runtime.node.Node`` is the one; a Protocol, so this
    module does not import the node that imports it)."""

    me: NodeConfig
    config: Config
    loop: RaftLoop | None
    storage: SegmentedLog | None
    listener: Listener | None
    links: dict[NodeId, PeerLink]
    submits: Submits | None
    tail_hub: TailHub[Rec]
    event_hub: TailHub[Emitted[BatchRef]]
    security: NodeSecurity
    started_at: float
    rejected: Counter[str]
    retention: Retention
    estimator: ClockEstimator
    skew: PeerSkew
    local_ns: Callable[[], int]

    def corrected_now(self) -> int: ...

    def clock_uncertain(self) -> bool: ...


def full(self: Node) -> dict[str, Any]:
    """The full status (``service.status`` gives each role its view)."""
    loop, storage, listener = self.loop, self.storage, self.listener
    assert loop is not None
    assert storage is not None
    st = loop.status()
    peers = {}
    for pid, link in list(self.links.items()):
        prog = st.progress.get(pid)
        peers[pid] = {
            "address": f"{link.host}:{link.port}",
            "member": "voter" if pid in st.conf.voters else "learner",
            "connected": link.connected,
            "match_index": prog.match if prog else None,
            "lag": (st.last_index - prog.match) if prog else None,
            "dropped_frames": link.dropped,
        }
    return {
        "id": self.me.id,
        "address": self.me.address,
        "role": st.role.value,
        "term": st.term,
        "leader": st.leader,
        "commit_index": st.commit_index,
        "applied_index": loop.applier.applied_index,
        "last_index": st.last_index,
        "first_index": storage.first_index(),
        "records": loop.applier.records,
        "time_index": loop.applier.times.statistics(),
        "record_index": loop.applier.record_index,
        "peers": peers,
        "members": {"voters": list(st.conf.voters), "learners": list(st.conf.learners)},
        "fsync_ms_p50": round(loop.fsync_s.quantile(0.5) * 1000, 3),
        "fsync_ms_p99": round(loop.fsync_s.quantile(0.99) * 1000, 3),
        "fsyncs": storage.fsyncs,
        "bytes_written": storage.bytes_written,
        "disk_budget_bytes": self.config.cluster.disk_budget_bytes,
        "leader_changes": loop.leader_changes,
        "dedup_hits": loop.applier.dedup_hits,
        "rejected": dict(self.rejected),
        "log_bytes": storage.total_bytes,
        "disk_full": loop.disk_full,
        "storage_failed": loop.failed,
        "inflight_records": self.submits.inflight if self.submits is not None else 0,
        "tail_subscribers": len(self.tail_hub.subs),
        "connections": listener.statistics() if listener is not None else {},
        "security": describe(self.security),
        "uptime_s": round(time.time() - self.started_at, 1),
        "clock": _clock(self),
        "reorder": _reorder(self, loop),
        "retention": self.retention.status(),
    }


def _clock(self: Node) -> dict[str, Any]:
    now = self.corrected_now()
    st = self.estimator.status(self.local_ns())
    if not self.config.ntp.servers:
        st["source"] = "system clock (no [ntp] servers configured)"
    st["peer_offsets_ms"] = {
        p: round(o.offset_ns / 1e6, 3) for p, o in self.skew.offsets(now).items()
    }
    st["offset_to_majority_ms"] = round(self.skew.offset_to_majority(now) / 1e6, 3)
    st["clock_uncertain"] = self.clock_uncertain()
    return st


def _reorder(self: Node, loop: RaftLoop) -> dict[str, Any]:
    st = loop.replica.events.statistics(self.corrected_now())
    st["subscribers"] = len(self.event_hub.subs)
    return st
