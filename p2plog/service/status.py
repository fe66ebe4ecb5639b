"""A node's ``status`` in three views by who asks, each cut from the full one
(``NodeApi.status()``):

- anyone (no token, when tokens are required): this node's role, term and indexes, and
  whether it is healthy; not its id, nothing about its peers (not their ids, not their
  addresses), its address, its clock's offsets to peers or what a storage failure said;
- a ``read`` or ``write`` token: also the leader's id and this node's load (fsync times,
  records in flight, reorder buffer, its own clock);
- ``admin`` (or no tokens configured): everything, peers and addresses included.
"""

from __future__ import annotations

from typing import Any

import trio

from p2plog.security.tokens import Grant
from p2plog.service.api import NodeApi

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


def node_status(node: NodeApi, grant: Grant) -> dict[str, Any]:
    if grant.role is None:
        return public_status(node)
    return view(node.status(), grant)


def view(full: dict[str, Any], grant: Grant) -> dict[str, Any]:
    """What ``grant`` may see of a full status (this node's, or a peer's for the console)."""
    if grant.role == "admin":
        return full
    if grant.role is None:
        return _public(full)
    out = {k: full[k] for k in PUBLIC}
    out["storage_failed"] = full["storage_failed"]
    for k in ("leader", "fsync_ms_p50", "fsync_ms_p99", "fsyncs", "log_bytes"):
        out[k] = full[k]
    for k in ("inflight_records", "tail_subscribers", "reorder", "connections", "retention"):
        out[k] = full[k]
    out["clock"] = {k: v for k, v in full["clock"].items() if k != "peer_offsets_ms"}
    return out


def public_status(node: NodeApi) -> dict[str, Any]:
    """The anonymous view, made at most every ``PUBLIC_CACHE_S``: anyone may ask it, so
    asking it in a loop must not cost the node a full status each time."""
    now = trio.current_time()
    cached = node.public_status_cache
    if cached is not None and now - cached[0] < PUBLIC_CACHE_S:
        return cached[1]
    out = _public(node.status())
    node.public_status_cache = (now, out)
    return out


def _public(full: dict[str, Any]) -> dict[str, Any]:
    out = {k: full[k] for k in PUBLIC if k != "id"}
    out["storage_failed"] = full["storage_failed"] is not None  # its text may name paths
    out["clock"] = {"clock_uncertain": full["clock"]["clock_uncertain"]}
    return out
