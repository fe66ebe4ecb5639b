"""Follower, pre-candidate and candidate behaviour, and vote granting (any role).

Invariants: a node grants at most one real vote per term, and only to a candidate whose log is
at least as up-to-date as its own (Raft §5.2, §5.4.1); a PreVote grant changes no state.
"""

from __future__ import annotations

from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from p2plog.raft.participant import Participant
from p2plog.raft.types import Index, Role


def handle_vote_request(node: Participant, m: RequestVote) -> None:
    can_vote = (
        node.vote == m.src
        or (node.vote is None and node.leader is None)
        or (m.pre_vote and m.term > node.term)
    )
    if can_vote and node.log.is_up_to_date(m.last_index, m.last_term):
        if not m.pre_vote:
            node.election_elapsed = 0
            node.vote = m.src
        # The grant carries the asked term so a pre-candidate can count it (etcd does the same).
        node.send(RequestVoteResponse(node.id, m.src, m.term, granted=True, pre_vote=m.pre_vote))
    else:
        node.send(
            RequestVoteResponse(node.id, m.src, node.term, granted=False, pre_vote=m.pre_vote)
        )


def step_follower(node: Participant, m: Message) -> None:
    if isinstance(m, AppendEntries):
        node.election_elapsed = 0
        node.leader = m.src
        handle_append(node, m)
    elif isinstance(m, Heartbeat):
        node.election_elapsed = 0
        node.leader = m.src
        # Safe: the leader sends min(our match, its commit), and our log matches up to match.
        node.log.commit_to(Index(min(m.commit, node.log.last_index())))
        node.send(HeartbeatResponse(node.id, m.src, node.term))
    elif isinstance(m, InstallSnapshot):
        node.election_elapsed = 0
        node.leader = m.src
        handle_snapshot(node, m)
    elif isinstance(m, TimeoutNow) and node.id in node.voters:
        node.campaign(pre_vote=False, transfer=True)


def step_candidate(node: Participant, m: Message) -> None:
    if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
        # Raft §5.2: a candidate that hears from a leader of its term returns to follower.
        node.become_follower(m.term, m.src)
        step_follower(node, m)
    elif isinstance(m, RequestVoteResponse) and m.pre_vote == (node.role is Role.PRE_CANDIDATE):
        node.record_vote(m.src, m.granted)


def handle_append(node: Participant, m: AppendEntries) -> None:
    lg = node.log
    if m.prev_index < lg.committed:
        # Everything up to our commit index already matches the leader (Log Matching).
        node.send(AppendEntriesResponse(node.id, m.src, node.term, True, lg.committed))
        return
    last_new = lg.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
    if last_new is not None:
        node.send(AppendEntriesResponse(node.id, m.src, node.term, True, last_new))
        return
    hint = lg.find_conflict_by_term(m.prev_index, m.prev_term)
    node.send(
        AppendEntriesResponse(node.id, m.src, node.term, False, m.prev_index, hint, lg.term(hint))
    )


def handle_snapshot(node: Participant, m: InstallSnapshot) -> None:
    """Raft §7 (etcd's handleSnapshot): a snapshot at or below the commit index says nothing
    new; one whose last entry we hold with its term only moves the commit index; any other
    replaces the log. The answer (after the persist) is the commit index it leaves."""
    s, lg = m.snapshot, node.log
    if s.index > lg.committed:
        if lg.match_term(s.index, s.term):
            lg.commit_to(s.index)
        else:
            lg.restore(s)
    node.send(AppendEntriesResponse(node.id, m.src, node.term, True, lg.committed))
