"""The Raft paper, sentence by sentence, on the hand-driven ``Cluster`` (after etcd-io/raft's
raft_paper_test.go): terms (§5.1), leader election (§5.2) and the election restriction (§5.4.1).
Each test checks one behaviour and its docstring names the section. Log replication, Figure 8,
the no-op and restarts are in test_paper_log.py; PreVote, CheckQuorum and friends in
test_features.py.

Most scenarios use ``NO_LEASE`` (PreVote and CheckQuorum off), the paper's plain protocol.
"""

from __future__ import annotations

from random import Random

import pytest

from p2plog.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    Index,
    Message,
    NodeId,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
    Term,
)
from p2plog.storage.memory import MemoryStore
from p2plog.testing.cluster import Cluster

from .helpers import NO_LEASE, elect_other_leader, log_of, pending_of, tick_until

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")


# --------------------------------------------------------------------------------------- §5.1


def _higher_term_messages(term: Term) -> dict[str, Message]:
    t = Term(term + 1)
    return {
        "append": AppendEntries(N2, N1, t, Index(0), Term(0), (), Index(0)),
        "heartbeat": Heartbeat(N2, N1, t, Index(0)),
        "vote": RequestVote(N2, N1, t, Index(0), Term(0)),
        "vote_response": RequestVoteResponse(N2, N1, t, granted=False),
        "append_response": AppendEntriesResponse(N2, N1, t, False, Index(0)),
        "heartbeat_response": HeartbeatResponse(N2, N1, t),
    }


def _make_role(role: Role) -> Cluster:
    c = Cluster(3, config=NO_LEASE)
    if role is Role.LEADER:
        c.elect("n1")
    elif role is Role.CANDIDATE:
        c.campaign("n1")
        c.take()
    else:
        c.elect("n3")
    assert c["n1"].role is role
    return c


@pytest.mark.parametrize("role", [Role.LEADER, Role.CANDIDATE, Role.FOLLOWER])
@pytest.mark.parametrize("kind", list(_higher_term_messages(Term(0))))
def test_higher_term_in_any_message_makes_follower(role: Role, kind: str) -> None:
    """Raft §5.1: if a server sees a larger term it updates its term; a candidate or leader that
    learns of a newer term reverts to follower."""
    c = _make_role(role)
    old = c["n1"].term
    c.step(_higher_term_messages(old)[kind])
    n1 = c["n1"]
    assert n1.term == old + 1
    assert n1.role is Role.FOLLOWER
    assert c.stores[N1].hard_state().term == old + 1
    # Only leader kinds name the new leader; a vote only tells us the term.
    assert n1.leader == (N2 if kind in ("append", "heartbeat") else None)


def test_stale_append_is_ignored() -> None:
    """Raft §5.1: a request with a stale term is rejected; the follower's log is untouched."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    c.elect("n2")  # term 2, no-op at index 2
    before = log_of(c, "n3")
    entry = Entry(Term(1), Index(2), b"x")
    c.step(AppendEntries(N1, N3, Term(1), Index(1), Term(1), (entry,), Index(2)))
    assert log_of(c, "n3") == before
    assert c["n3"].term == 2
    assert not c.pending  # the paper's plain protocol just drops it


def test_stale_vote_request_is_not_granted() -> None:
    """Raft §5.1: a RequestVote with a stale term is rejected; the vote is unchanged."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    c.elect("n2")
    c.step(RequestVote(N1, N3, Term(1), Index(10), Term(1)))
    assert c["n3"].vote == N2
    assert not pending_of(c, RequestVoteResponse, src="n3", dst="n1")


def test_stale_leader_is_told_newer_term_and_steps_down() -> None:
    """Raft §5.1 with CheckQuorum/PreVote: a follower answers a stale leader's heartbeat with its
    newer term (it would ignore the stale leader's votes), and the old leader steps down."""
    c = Cluster(3)
    c.elect("n1")
    new = elect_other_leader(c, "n1", ["n2", "n3"])
    c.heal()
    c.tick("n1")  # the old leader, never ticked meanwhile, still heartbeats at term 1
    beats = pending_of(c, Heartbeat, src="n1")
    assert beats
    assert all(m.term == 1 for m in beats)
    c.deliver()
    answers = pending_of(c, HeartbeatResponse, dst="n1")
    assert answers
    assert all(m.term == c[new].term for m in answers)
    c.stabilize()
    assert c["n1"].role is Role.FOLLOWER
    assert c["n1"].term == c[new].term
    assert c.leader() == new


# --------------------------------------------------------------------------------------- §5.2


def test_nodes_start_as_followers() -> None:
    """Raft §5.2: when servers start up, they begin as followers."""
    c = Cluster(3)
    for nid in c.ids:
        assert c[nid].role is Role.FOLLOWER
        assert c[nid].term == 0
        assert c[nid].leader is None
    assert not c.pending


def test_election_timeout_starts_election() -> None:
    """Raft §5.2: on election timeout a follower increments its term, becomes candidate, votes
    for itself and sends RequestVote to every other server."""
    c = Cluster(3, config=NO_LEASE)
    timeout = c["n1"].randomized_election_ticks
    c.tick("n1", timeout - 1)
    assert c["n1"].role is Role.FOLLOWER
    c.tick("n1")
    n1 = c["n1"]
    assert (n1.role, n1.term, n1.vote) == (Role.CANDIDATE, 1, N1)
    assert c.stores[N1].hard_state() == HardState(Term(1), N1)
    votes = pending_of(c, RequestVote, src="n1")
    assert sorted(m.dst for m in votes) == ["n2", "n3"]
    assert all((m.term, m.last_index, m.last_term, m.pre_vote) == (1, 0, 0, False) for m in votes)


def test_pre_vote_timeout_asks_without_bumping_term() -> None:
    """Raft §5.2 with PreVote (thesis §9.6): the timeout first makes a pre-candidate that asks
    for term+1 without changing its own term; with a majority it runs the real election."""
    c = Cluster(3)
    c.tick("n1", c["n1"].randomized_election_ticks)
    assert (c["n1"].role, c["n1"].term) == (Role.PRE_CANDIDATE, 0)
    asks = pending_of(c, RequestVote, src="n1")
    assert len(asks) == 2
    assert all(m.pre_vote and m.term == 1 for m in asks)
    c.deliver()  # pre-vote requests
    c.deliver()  # grants -> real campaign
    assert (c["n1"].role, c["n1"].term) == (Role.CANDIDATE, 1)
    c.stabilize()
    assert c.leader() == "n1"
    assert c["n1"].term == 1


def test_candidate_with_majority_becomes_leader_and_sends_appends() -> None:
    """Raft §5.2: a candidate that receives votes from a majority becomes leader and sends
    AppendEntries to every other server (its no-op now, heartbeats on each heartbeat tick)."""
    c = Cluster(5, config=NO_LEASE)
    c.isolate("n4")
    c.isolate("n5")
    c.campaign("n1")
    c.deliver()  # requests (n4, n5 unreachable)
    roles = [c["n1"].role]
    c.deliver()  # two grants + own vote = 3 of 5
    roles.append(c["n1"].role)
    assert roles == [Role.CANDIDATE, Role.LEADER]
    appends = pending_of(c, AppendEntries, src="n1")
    assert sorted(m.dst for m in appends) == ["n2", "n3", "n4", "n5"]
    c.take()
    c.tick("n1")
    beats = pending_of(c, Heartbeat, src="n1")
    assert sorted(m.dst for m in beats) == ["n2", "n3", "n4", "n5"]


def test_candidate_returns_to_follower_on_append_of_its_term() -> None:
    """Raft §5.2: a candidate that receives AppendEntries from a leader whose term is at least
    its own recognizes the leader and returns to follower."""
    c = Cluster(3, config=NO_LEASE)
    c.campaign("n1")
    c.campaign("n2")  # both candidates at term 1
    c.deliver(lambda m: m.dst == "n3" and m.src == "n1")  # n3 votes for n1 first
    c.deliver(lambda m: m.dst != "n2")  # the remaining requests, minus answers to n2
    c.take(lambda m: m.dst == "n2" and isinstance(m, RequestVoteResponse))
    c.deliver(lambda m: m.dst == "n1")  # n3's grant
    assert c["n1"].role is Role.LEADER
    assert (c["n2"].role, c["n2"].term) == (Role.CANDIDATE, 1)
    c.deliver(lambda m: isinstance(m, AppendEntries) and m.dst == "n2")
    assert (c["n2"].role, c["n2"].term, c["n2"].leader) == (Role.FOLLOWER, 1, N1)


def test_split_vote_times_out_into_higher_term() -> None:
    """Raft §5.2: if no candidate wins (split vote), each times out and starts a new election by
    incrementing its term; randomized timeouts make one of them win soon."""
    c = Cluster(4, config=NO_LEASE)
    c.campaign("n1")
    c.campaign("n2")
    c.deliver(lambda m: (m.src, m.dst) in {("n1", "n3"), ("n2", "n4")})  # 2 votes each
    c.stabilize()
    assert {c[i].role for i in ("n1", "n2")} == {Role.CANDIDATE}
    assert c.leader() is None
    tick_until(c, lambda: c.leader() is not None, [str(i) for i in c.ids])
    leader = c.leader()
    assert leader is not None
    assert c[leader].term >= 2


def test_election_timeouts_are_randomized() -> None:
    """Raft §5.2: election timeouts are chosen randomly from a fixed interval, here
    [election_ticks, 2 * election_ticks), from each node's own seeded RNG."""
    cfg = RaftConfig(election_ticks=10)
    seen: dict[int, list[int]] = {}
    for seed in range(8):
        node = RaftNode(cfg, N1, [N1, N2, N3], HardState(), MemoryStore(), Random(seed))
        draws = []
        for _ in range(50):
            node.reset_randomized_election_ticks()
            draws.append(node.randomized_election_ticks)
        assert all(10 <= d < 20 for d in draws)
        assert len(set(draws)) > 3
        seen[seed] = draws
    assert len({tuple(d) for d in seen.values()}) == len(seen)  # seeds draw differently
    c = Cluster(5)
    assert len({c[i].randomized_election_ticks for i in c.ids}) > 1


def test_one_vote_per_term_first_come() -> None:
    """Raft §5.2: each server votes for at most one candidate in a term, first-come-first-served
    (a repeated request from the same candidate is granted again)."""
    c = Cluster(3, config=NO_LEASE)
    c.step(RequestVote(N2, N1, Term(1), Index(0), Term(0)))
    c.step(RequestVote(N3, N1, Term(1), Index(0), Term(0)))
    c.step(RequestVote(N2, N1, Term(1), Index(0), Term(0)))
    answers = [(m.dst, m.granted) for m in pending_of(c, RequestVoteResponse, src="n1")]
    assert answers == [("n2", True), ("n3", False), ("n2", True)]
    assert c["n1"].vote == N2


def test_vote_is_persisted_before_grant_is_sent() -> None:
    """Raft §5.2 / Figure 2: votedFor is on stable storage before the server responds; the
    grant is a messages_after_persist of a Ready that must sync the vote."""
    c = Cluster(3, config=NO_LEASE)
    c.step(RequestVote(N2, N1, Term(1), Index(0), Term(0)))
    assert pending_of(c, RequestVoteResponse, src="n1")[0].granted
    assert c.stores[N1].hard_state() == HardState(Term(1), N2)

    node = RaftNode(NO_LEASE, N1, [N1, N2, N3], HardState(), MemoryStore(), Random(0))
    node.step(RequestVote(N2, N1, Term(1), Index(0), Term(0)))
    rd = node.ready()
    assert rd.hard_state == HardState(Term(1), N2)
    assert rd.must_sync
    assert not rd.messages
    assert rd.messages_after_persist == (RequestVoteResponse(N1, N2, Term(1), granted=True),)


def test_candidate_counts_each_voter_once() -> None:
    """Raft §5.2: a candidate wins with votes from a majority of the servers; a repeated grant
    from one server is still one vote."""
    c = Cluster(5, config=NO_LEASE)
    c.campaign("n1")
    c.take()
    for _ in range(3):
        c.step(RequestVoteResponse(N2, N1, Term(1), granted=True))
    roles = [c["n1"].role]
    c.step(RequestVoteResponse(N3, N1, Term(1), granted=True))
    roles.append(c["n1"].role)
    assert roles == [Role.CANDIDATE, Role.LEADER]


def test_candidate_ignores_votes_from_non_members() -> None:
    """Raft §5.2: the majority is of the servers in the full cluster; a grant from an id that
    is not a voter (a misconfigured or foreign peer) must not count."""
    c = Cluster(3, config=NO_LEASE)
    c.campaign("n1")
    c.take()
    c.step(RequestVoteResponse(NodeId("n9"), N1, Term(1), granted=True))
    assert c["n1"].role is Role.CANDIDATE


# ------------------------------------------------------------------------------------- §5.4.1


def test_voter_rejects_candidate_with_older_last_term() -> None:
    """Raft §5.4.1: if the logs have last entries with different terms, the later term is more
    up-to-date, whatever the lengths; the voter denies its vote to a less up-to-date log."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    c.elect("n2")  # n3's last entry: index 2, term 2
    t = Term(c["n3"].term + 1)
    c.step(RequestVote(N1, N3, t, Index(100), Term(1)))  # longer, but older last term
    (resp,) = pending_of(c, RequestVoteResponse, src="n3")
    assert not resp.granted
    assert c["n3"].vote is None
    assert c["n3"].term == t  # the term is still adopted (§5.1)


def test_voter_rejects_candidate_with_shorter_log_of_same_term() -> None:
    """Raft §5.4.1: if the logs end with the same term, the longer log is more up-to-date."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize()  # last entry index 2, term 1 everywhere
    c.step(RequestVote(N1, N3, Term(2), Index(1), Term(1)))
    c.step(RequestVote(N2, N3, Term(2), Index(2), Term(1)))
    answers = [(m.dst, m.granted) for m in pending_of(c, RequestVoteResponse, src="n3")]
    assert answers == [("n1", False), ("n2", True)]


def test_node_with_stale_log_cannot_win() -> None:
    """Raft §5.4.1: a candidate must contact a majority to be elected, and every voter whose log
    is more up-to-date refuses; a node that missed committed entries cannot become leader."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize(drop=["n3"])  # committed on n1, n2; n3 lags
    assert c["n1"].log.committed == 2
    c.campaign("n3")
    c.stabilize()
    assert c["n3"].role is not Role.LEADER
    assert c["n3"].log.last_index() == 1
    assert c.leader() is None or c.leader() == "n1"
