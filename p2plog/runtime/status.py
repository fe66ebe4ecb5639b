"""A node's ``status``, in three views by who asks.

- anyone (no token, when tokens are required): this node's role, term and indexes, and
  whether it is healthy; not its id, nothing about its peers (not their ids, not their
  addresses), its address, its clock's offsets to peers or what a storage failure said;
- a ``read`` or ``write`` token: also the leader's id and this node's load (fsync times,
  records in flight, reorder buffer, its own clock);
- ``admin`` (or no tokens configured): everything, peers and addresses included.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import trio

from p2plog.security.tokens import Grant

if TYPE_CHECKING:
    from p2plog.runtime.node import Node

PUBLIC = (
    "id",
    "role",
    "term",
    "commit_index",
    "applied_index",
    "last_index",
    "first_index",
    "records",
    "record_index",
    "disk_full",
    "storage_failed",
    "uptime_s",
)


PUBLIC_CACHE_S = 0.1


def node_status(node: Node, grant: Grant) -> dict[str, Any]:
    if grant.role is None:
        return public_status(node)
    full = _full(node)
    if grant.role == "admin":
        return full
    out = {k: full[k] for k in PUBLIC}
    out["storage_failed"] = full["storage_failed"]
    for k in ("leader", "fsync_ms_p50", "fsync_ms_p99", "fsyncs", "log_bytes"):
        out[k] = full[k]
    for k in ("inflight_records", "tail_subscribers", "reorder", "connections"):
        out[k] = full[k]
    out["clock"] = {k: v for k, v in full["clock"].items() if k != "peer_offsets_ms"}
    return out


def public_status(node: Node) -> dict[str, Any]:
    """The anonymous view, made at most every ``PUBLIC_CACHE_S``: anyone may ask it, so
    asking it in a loop must not cost the node a full status each time."""
    now = trio.current_time()
    cached = node.public_status_cache
    if cached is not None and now - cached[0] < PUBLIC_CACHE_S:
        return cached[1]
    full = _full(node)
    out = {k: full[k] for k in PUBLIC if k != "id"}
    out["storage_failed"] = full["storage_failed"] is not None  # its text may name paths
    out["clock"] = {"clock_uncertain": full["clock"]["clock_uncertain"]}
    node.public_status_cache = (now, out)
    return out


def _full(node: Node) -> dict[str, Any]:
    loop = node.loop
    assert loop is not None
    assert node.storage is not None
    st = loop.status()
    fs = sorted(loop.fsync_s) if loop.fsync_s else [0.0]
    peers = {}
    for p in node.peers:
        prog = st.progress.get(p.id)
        link = node.links[p.id]
        peers[p.id] = {
            "address": p.address,
            "connected": link.connected,
            "match_index": prog.match if prog else None,
            "lag": (st.last_index - prog.match) if prog else None,
            "dropped_frames": link.dropped,
        }
    return {
        "id": node.me.id,
        "address": node.me.address,
        "role": st.role.value,
        "term": st.term,
        "leader": st.leader,
        "commit_index": st.commit_index,
        "applied_index": loop.applier.applied_index,
        "last_index": st.last_index,
        "first_index": node.storage.first_index(),
        "records": loop.applier.records,
        "record_index": loop.applier.record_index,
        "peers": peers,
        "fsync_ms_p50": round(statistics.median(fs) * 1000, 3),
        "fsync_ms_p99": round(fs[int(len(fs) * 0.99) - 1 if len(fs) > 1 else 0] * 1000, 3),
        "fsyncs": node.storage.fsyncs,
        "log_bytes": node.storage.total_bytes,
        "disk_full": loop.disk_full,
        "storage_failed": loop.failed,
        "inflight_records": node.inflight,
        "tail_subscribers": len(node.tail_hub.subs),
        "connections": node.connection_stats(),
        "security": node.security_summary,
        "uptime_s": round(time.time() - node.started_at, 1),
        "clock": clock_status(node),
        "reorder": node.events.statistics(node.corrected_now()),
    }


def clock_status(node: Node) -> dict[str, Any]:
    now = node.corrected_now()
    st = node.estimator.status(node.local_ns())
    if not node.config.ntp.servers:
        st["source"] = "system clock (no [ntp] servers configured)"
    st["peer_offsets_ms"] = {
        p: round(o.offset_ns / 1e6, 3) for p, o in node.skew.offsets(now).items()
    }
    st["offset_to_majority_ms"] = round(node.skew.offset_to_majority(now) / 1e6, 3)
    st["clock_uncertain"] = node.clock_uncertain()
    return st
