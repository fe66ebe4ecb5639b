"""Cheap structural checks on one node, run after every step by tests and the simulator.

Each check is O(peers + unstable entries). Cross-node and cross-history properties (election
safety, log matching, leader completeness, state-machine safety) live in
``p2plog.testing.checker``, which sees the whole cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2plog.raft.progress import ProgressState
from p2plog.raft.types import Index, Role

if TYPE_CHECKING:
    from p2plog.raft.node import RaftNode


class InvariantViolation(AssertionError):
    """A node broke one of its own invariants: a bug in the core, never an operating error."""


def check_node(node: RaftNode) -> None:
    """Raise ``InvariantViolation`` naming the node, term and the broken rule."""
    problems = list(_problems(node))
    if problems:
        raise InvariantViolation(f"{node.id} term={node.term}: " + "; ".join(problems))


def _problems(node: RaftNode):  # type: ignore[no-untyped-def]
    lg = node.log
    last = lg.last_index()
    if not 0 <= lg.applied <= lg.committed <= last:
        yield f"need applied {lg.applied} <= commit {lg.committed} <= last index {last}"
    ps = lg.pending_snapshot
    if ps is not None:
        if lg.offset != ps.index + 1 or lg.committed < ps.index:
            yield f"pending snapshot at {ps.index} with offset {lg.offset}, commit {lg.committed}"
    elif lg.offset < lg.reader.first_index() or lg.offset - 1 > lg.reader.last_index():
        yield (
            f"unstable offset {lg.offset} outside persisted log "
            f"{lg.reader.first_index()}..{lg.reader.last_index() + 1}"
        )
    elif lg.reader.first_index() - 1 > lg.applied:
        yield f"log compacted to {lg.reader.first_index() - 1} past applied {lg.applied}"
    prev_term = lg.term(Index(lg.offset - 1)) if lg.offset > 1 else 0
    for i, e in enumerate(lg.unstable):
        if e.index != lg.offset + i:
            yield f"unstable entry {e.index} at position {i} (offset {lg.offset})"
            break
        if e.term < prev_term or e.term > node.term:
            yield f"entry {e.index} has term {e.term} (previous {prev_term}, current {node.term})"
            break
        prev_term = e.term
    if node.role in (Role.CANDIDATE, Role.LEADER) and node.vote != node.id:
        yield f"{node.role.value} must have voted for itself, voted {node.vote}"
    if node.role is Role.LEADER:
        yield from _leader_problems(node, last)
    elif node.progress:
        yield f"{node.role.value} keeps leader progress"
    if node.leader == node.id and node.role is not Role.LEADER:
        yield f"{node.role.value} believes itself leader"


def _leader_problems(node: RaftNode, last: int):  # type: ignore[no-untyped-def]
    if node.leader != node.id:
        yield f"leader thinks the leader is {node.leader}"
    members = {node.id, *node.conf.members()}
    if set(node.progress) != members:
        yield f"progress for {sorted(node.progress)} but the members are {sorted(members)}"
    for pid, pr in node.progress.items():
        if not pr.match < pr.next <= last + 1:
            yield f"progress {pid}: need match {pr.match} < next {pr.next} <= {last + 1}"
        if len(pr.inflight) > node.config.max_inflight_msgs:
            yield f"progress {pid}: {len(pr.inflight)} in flight > {node.config.max_inflight_msgs}"
        if pr.state is ProgressState.PROBE and pr.inflight:
            yield f"progress {pid}: probing with {len(pr.inflight)} in flight"
        if any(b <= a for a, b in zip(pr.inflight, list(pr.inflight)[1:], strict=False)):
            yield f"progress {pid}: in-flight indexes not increasing: {list(pr.inflight)}"
    if node.progress[node.id].match > node.log.stable_last_index():
        yield "leader counts its own unpersisted entries"
    if node.uncommitted_bytes < 0:
        yield f"negative uncommitted bytes {node.uncommitted_bytes}"
