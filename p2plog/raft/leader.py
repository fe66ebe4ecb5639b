"""Leader behaviour: replication with per-follower pipelines, commit, heartbeats, CheckQuorum
and leadership transfer. Functions take the node; they are the leader's ``step`` and ``tick``.

Invariants: only entries of the current term are committed by counting replicas (Raft §5.4.2);
the leader's own match index is its *persisted* last index; a follower's ``next`` never drops
below ``match + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    TimeoutNow,
)
from p2plog.raft.participant import Participant
from p2plog.raft.progress import ProgressState
from p2plog.raft.quorum import committed_index
from p2plog.raft.types import Entry, Index, NodeId


def append_entries(node: Participant, entries: Sequence[Entry]) -> None:
    """Append the leader's own entries; they go out with the next ``ready()``."""
    node.log.append(entries)
    for e in entries:
        node.uncommitted.append((e.index, len(e.data)))
        node.uncommitted_bytes += len(e.data)
    node.bcast_pending = True


def self_persisted(node: Participant, index: Index) -> None:
    node.progress[node.id].maybe_update(index)
    maybe_commit(node)


def maybe_commit(node: Participant) -> bool:
    """Commit the highest index persisted on a majority if it is of the current term."""
    # Only voters count; a leader that a pending change removes does not count itself (§4.2.2).
    q = committed_index(node.progress[v].match for v in node.voters)
    if q <= node.log.committed or node.log.term(q) != node.term:
        return False  # Raft §5.4.2: never commit an older term's entry by counting replicas
    node.log.commit_to(q)
    while node.uncommitted and node.uncommitted[0][0] <= q:
        node.uncommitted_bytes -= node.uncommitted.popleft()[1]
    # Followers learn the new commit index with the next AppendEntries, or at the latest on
    # the next tick (``send_commit``): an immediate commit-only broadcast doubled the messages
    # per write at low load (one append and one commit round trip per follower per write).
    return True


def send_append(node: Participant, to: NodeId, *, send_if_empty: bool) -> bool:
    """Send one AppendEntries to ``to`` if its pipeline has room; returns whether it sent."""
    pr = node.progress[to]
    if pr.is_paused(node.config.max_inflight_msgs):
        return False
    last = node.log.last_index()
    prev = Index(pr.next - 1)
    if prev < node.log.first_index() - 1:
        _send_snapshot(node, to)
        return True
    entries = node.log.entries(pr.next, Index(last + 1), node.config.max_msg_bytes)
    if not entries and not send_if_empty:
        return False
    commit = node.log.committed
    node.send(
        AppendEntries(node.id, to, node.term, prev, node.log.term(prev), tuple(entries), commit)
    )
    pr.sent_entries(entries[-1].index if entries else None)
    pr.sent_commit = commit
    return True


def _send_snapshot(node: Participant, to: NodeId) -> None:
    """The follower needs entries this leader compacted: send the snapshot in their place
    (Raft §7). The progress waits for the answer; a lost one is resent on a heartbeat answer
    an election timeout later (etcd's ReportSnapshot, without a transport to report)."""
    snap = node.log.snapshot()
    node.send(InstallSnapshot(node.id, to, node.term, snap))
    node.progress[to].become_snapshot(snap.index, node.leader_ticks)


def fill_pipeline(node: Participant, to: NodeId, *, commit_only: bool = True) -> None:
    """Send as many AppendEntries as the window allows (fast catch-up of a follower behind);
    with ``commit_only``, an empty one too if the follower has not been told the commit."""
    pr = node.progress[to]
    sent = send_append(node, to, send_if_empty=commit_only and pr.sent_commit < node.log.committed)
    while sent and pr.state is ProgressState.REPLICATE:
        sent = send_append(node, to, send_if_empty=False)


def bcast_append(node: Participant) -> None:
    node.bcast_pending = False
    for p in node.peers:
        fill_pipeline(node, p)


def bcast_heartbeat(node: Participant) -> None:
    for p in node.peers:
        _heartbeat(node, p)


def _heartbeat(node: Participant, to: NodeId) -> None:
    pr = node.progress[to]
    commit = Index(min(pr.match, node.log.committed))
    node.send(Heartbeat(node.id, to, node.term, commit))
    pr.sent_commit = max(pr.sent_commit, commit)


def send_commit(node: Participant) -> None:
    """Tell each follower a commit index it has not been sent yet (a heartbeat carries it)."""
    for p in node.peers:
        pr = node.progress[p]
        if pr.sent_commit < min(pr.match, node.log.committed):
            _heartbeat(node, p)


def tick_leader(node: Participant) -> None:
    node.heartbeat_elapsed += 1
    node.election_elapsed += 1
    node.leader_ticks += 1
    if node.config.check_quorum and not quorum_active(node):
        # CheckQuorum (thesis §6.2): a leader that has not heard from a majority for an
        # election timeout steps down, so clients stop waiting on it. A sliding window (each
        # follower's last answer) makes this happen within one timeout, not up to two.
        node.become_follower(node.term, None)
        return
    if node.election_elapsed >= node.config.election_ticks:
        node.election_elapsed = 0
        if node.lead_transferee is not None:
            node.lead_transferee = None  # the transfer did not finish within an election timeout
    if node.heartbeat_elapsed >= node.config.heartbeat_ticks:
        node.heartbeat_elapsed = 0
        bcast_heartbeat(node)
    else:
        send_commit(node)


def is_active(node: Participant, pid: NodeId) -> bool:
    """Did ``pid`` answer within the last election timeout (always true for the leader)?"""
    window = node.leader_ticks - node.progress[pid].last_active
    return pid == node.id or window < node.config.election_ticks


def quorum_active(node: Participant) -> bool:
    return sum(1 for v in node.voters if is_active(node, v)) >= node.quorum


def start_transfer(node: Participant, to: NodeId) -> None:
    if to == node.id or node.lead_transferee == to:
        return
    node.lead_transferee = to
    node.election_elapsed = 0  # the transfer must finish within one election timeout
    if node.progress[to].match == node.log.last_index():
        node.send(TimeoutNow(node.id, to, node.term))
    else:
        send_append(node, to, send_if_empty=True)


def step_leader(node: Participant, m: Message) -> None:
    if isinstance(m, AppendEntriesResponse):
        _handle_append_response(node, m)
    elif isinstance(m, HeartbeatResponse):
        pr = node.progress[m.src]
        pr.last_active = node.leader_ticks
        pr.probe_sent = False
        if pr.state is ProgressState.SNAPSHOT:
            if node.leader_ticks - pr.snapshot_sent_at >= node.config.election_ticks:
                pr.become_probe()  # no answer to the snapshot: it or the answer was lost
            else:
                return
        if (
            pr.state is ProgressState.REPLICATE
            and pr.inflight
            and pr.is_paused(node.config.max_inflight_msgs)
        ):
            pr.inflight.popleft()  # a lost append must not stall the pipeline forever (etcd)
        if pr.match < node.log.last_index():
            send_append(node, m.src, send_if_empty=True)
    # Votes are handled centrally; appends or TimeoutNow at our own term cannot come from
    # another leader (election safety), so there is nothing else a leader acts on.


def _handle_append_response(node: Participant, m: AppendEntriesResponse) -> None:
    pr = node.progress[m.src]
    pr.last_active = node.leader_ticks
    if not m.success:
        probe = m.hint_index
        if m.hint_term > 0:
            probe = node.log.find_conflict_by_term(m.hint_index, m.hint_term)
        if pr.maybe_decr_to(m.index, probe):
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            send_append(node, m.src, send_if_empty=True)
        return
    if not pr.maybe_update(m.index):
        return
    if pr.state is ProgressState.PROBE or (
        pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot
    ):
        pr.become_replicate()
    maybe_commit(node)
    fill_pipeline(node, m.src, commit_only=False)
    if m.src == node.lead_transferee and pr.match == node.log.last_index():
        node.send(TimeoutNow(node.id, m.src, node.term))
