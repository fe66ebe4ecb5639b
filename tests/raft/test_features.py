"""Beyond the paper: PreVote, the leader lease, CheckQuorum, leadership transfer, single-node
clusters, restart, ``status()`` and messages from non-members. Each docstring names the thesis
section or the etcd-io/raft feature it checks. Flow control is in test_flow_control.py.
"""

from __future__ import annotations

from random import Random

import pytest

from p2plog.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    HeartbeatResponse,
    Index,
    NodeId,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
    Term,
    TimeoutNow,
)
from p2plog.raft.progress import ProgressState
from p2plog.storage.memory import MemoryStore
from p2plog.testing.cluster import Cluster

from .helpers import NO_LEASE, pending_of, tick_until

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")
E = RaftConfig().election_ticks

# ------------------------------------------------------------------------------------- PreVote


def test_prevote_isolated_follower_keeps_its_term() -> None:
    """Thesis §9.6 (PreVote): a partitioned follower that times out again and again asks for
    pre-votes it never gets, so its term stays the leader's."""
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    asks = 0
    for _ in range(5 * E):
        c.tick_all()
        asks += len(pending_of(c, RequestVote, src="n3"))
        c.stabilize()
    assert asks >= 2 * 2  # at least two pre-elections, to two peers each
    assert c["n3"].term == 1
    assert c.stores[N3].hard_state().term == 1
    assert c["n3"].role in (Role.FOLLOWER, Role.PRE_CANDIDATE)


def test_prevote_rejoining_follower_does_not_depose_leader() -> None:
    """Thesis §9.6 (PreVote): after the partition heals the follower rejoins; the leader keeps
    its term and role."""
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n3")
    c.propose("n1", b"while away")
    c.run_ticks(5 * E)
    c.heal()
    c.run_ticks(5 * E)
    assert c.leader() == "n1"
    assert c["n1"].term == 1
    assert (c["n3"].role, c["n3"].term, c["n3"].leader) == (Role.FOLLOWER, 1, N1)
    assert c.data("n3") == [b"while away"]


def test_without_prevote_rejoining_follower_disrupts_leader() -> None:
    """Thesis §9.6, the problem PreVote solves: without it (and without CheckQuorum) an isolated
    follower bumps its term on every timeout, and on rejoining it forces the leader down."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    c.isolate("n3")
    c.run_ticks(5 * E)
    assert c["n3"].term > 2
    assert c["n1"].term == 1
    assert c.leader() == "n1"
    c.heal()
    tick_until(c, lambda: c["n1"].term > 1, [str(i) for i in c.ids])
    assert c["n1"].role is Role.FOLLOWER  # deposed by the higher term
    c.run_ticks(3 * E)
    leader = c.leader()
    assert leader is not None
    assert c[leader].term > 2


# --------------------------------------------------------------------------------------- Lease


def test_follower_in_lease_ignores_higher_term_vote() -> None:
    """Thesis §4.2.3 (leader lease): a follower that heard from its leader within the minimum
    election timeout disregards a RequestVote, even of a higher term."""
    c = Cluster(3)
    c.elect("n1")
    c.tick("n2", E - 1)  # no heartbeat delivered, but still within the lease
    c.take()
    c.step(RequestVote(N3, N2, Term(5), Index(9), Term(1)))
    assert (c["n2"].term, c["n2"].vote, c["n2"].leader) == (1, N1, N1)
    assert not c.pending
    c.tick("n2")  # E ticks without hearing from the leader: the lease has run out
    c.take()
    c.step(RequestVote(N3, N2, Term(5), Index(9), Term(1)))
    assert (c["n2"].term, c["n2"].vote) == (5, N3)


def test_transfer_vote_overrides_lease() -> None:
    """Thesis §3.10: a RequestVote caused by TimeoutNow is not subject to the lease."""
    c = Cluster(3)
    c.elect("n1")
    c.step(RequestVote(N3, N2, Term(2), Index(1), Term(1), transfer=True))
    assert (c["n2"].term, c["n2"].vote) == (2, N3)


# --------------------------------------------------------------------------------- CheckQuorum


def test_check_quorum_isolated_leader_steps_down() -> None:
    """Thesis §6.2 (CheckQuorum): a leader that cannot reach a majority steps down within one
    election timeout of its last contact with a majority (a sliding window per follower);
    proposals to the deposed leader are then refused."""
    c = Cluster(3)
    c.elect("n1")
    c.run_ticks(7)  # some heartbeat rounds, so the isolation lands mid-window
    c.isolate("n1")
    ticks = tick_until(c, lambda: c["n1"].role is not Role.LEADER, ["n1"], limit=10 * E)
    assert E - 1 <= ticks <= E + 1
    assert c["n1"].role is Role.FOLLOWER
    assert c["n1"].term == 1
    assert c.propose("n1", b"x") is None


def test_without_check_quorum_isolated_leader_stays_leader() -> None:
    """Thesis §6.2, contrast: with check_quorum=False an isolated leader keeps leading."""
    c = Cluster(3, config=RaftConfig(check_quorum=False))
    c.elect("n1")
    c.isolate("n1")
    c.tick("n1", 10 * E)
    assert c["n1"].role is Role.LEADER
    assert c.propose("n1", b"x") == 2


# ---------------------------------------------------------------------------------- Transfer


def test_transfer_to_up_to_date_follower() -> None:
    """Thesis §3.10: the leader sends TimeoutNow to an up-to-date target, which campaigns at
    term+1 at once and wins; the old leader becomes a follower."""
    c = Cluster(3)
    c.elect("n1")
    assert c["n1"].transfer_leadership(N2) is True
    c.process(N1)
    assert c.pending == [TimeoutNow(N1, N2, Term(1))]
    c.stabilize()
    assert c.leader() == "n2"
    assert c["n2"].term == 2
    assert (c["n1"].role, c["n1"].leader) == (Role.FOLLOWER, N2)


def _lagging_n2() -> Cluster:
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n2")
    for i in range(5):
        c.propose("n1", f"e{i}".encode())
    c.stabilize()
    c.heal()
    assert c["n2"].log.last_index() == 1
    return c


def test_transfer_to_lagging_follower_catches_it_up_first() -> None:
    """Thesis §3.10: if the target lags, the leader first replicates to it and sends TimeoutNow
    only once its log matches."""
    c = _lagging_n2()
    assert c["n1"].transfer_leadership(N2)
    c.process(N1)
    assert not pending_of(c, TimeoutNow)
    assert pending_of(c, AppendEntries, dst="n2")
    while not pending_of(c, TimeoutNow):
        c.deliver()
    assert c["n2"].log.last_index() == c["n1"].log.last_index() == 6
    c.stabilize()
    assert c.leader() == "n2"
    assert c["n2"].term == 2
    assert c.data("n2") == [f"e{i}".encode() for i in range(5)]


def test_proposals_refused_while_transfer_pending() -> None:
    """Thesis §3.10: the leader stops accepting client requests during a transfer."""
    c = _lagging_n2()
    assert c["n1"].transfer_leadership(N2)
    c.process(N1)
    assert c["n1"].status().lead_transferee == N2
    assert c.propose("n1", b"during transfer") is None


def test_transfer_abandoned_after_election_timeout() -> None:
    """Thesis §3.10: a transfer that does not complete within an election timeout is aborted
    and the leader takes client requests again."""
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize(drop=["n2"])
    c.isolate("n2")
    assert c["n1"].transfer_leadership(N2)
    c.process(N1)
    assert c.propose("n1", b"y") is None
    c.run_ticks(E)
    assert c["n1"].role is Role.LEADER
    assert c["n1"].status().lead_transferee is None
    assert c.propose("n1", b"y") is not None


def test_transfer_argument_checks() -> None:
    """Thesis §3.10: only a leader transfers (a follower answers False); the target must be a
    voter (ValueError, a client input error)."""
    c = Cluster(3)
    c.elect("n1")
    with pytest.raises(ValueError, match="not a voter"):
        c["n1"].transfer_leadership(NodeId("n9"))
    assert c["n2"].transfer_leadership(N3) is False


# -------------------------------------------------------------------------------- Non-members


@pytest.mark.parametrize("kind", ["append_response", "heartbeat_response"])
def test_leader_survives_responses_from_non_members(kind: str) -> None:
    """STYLE.md rule 5: a message from an id outside the configuration is dropped, it does not
    crash the leader."""
    c = Cluster(3)
    c.elect("n1")
    stranger = NodeId("n9")
    if kind == "append_response":
        c.step(AppendEntriesResponse(stranger, N1, Term(1), True, Index(1)))
    else:
        c.step(HeartbeatResponse(stranger, N1, Term(1)))
    assert c["n1"].role is Role.LEADER
    assert set(c["n1"].progress) == {N1, N2, N3}


# ------------------------------------------------------------------------------ Single node


def test_single_node_elects_itself_and_commits_on_own_persist() -> None:
    """Raft §5.2 with one voter: the node is its own majority; it elects itself on timeout and
    commits each proposal as soon as it is persisted."""
    c = Cluster(1)
    tick_until(c, lambda: c["n1"].role is Role.LEADER, ["n1"], limit=2 * E)
    assert c["n1"].term == 1
    assert c.propose("n1", b"solo") == 2
    assert c["n1"].log.committed == 2
    assert c.data("n1") == [b"solo"]
    assert not c.pending


# ----------------------------------------------------------------------------------- Restart


def test_restart_recovers_term_and_vote() -> None:
    """Raft Figure 2: currentTerm and votedFor survive a restart, so a restarted node cannot
    vote twice in one term."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    c.crash("n2")
    c.restart("n2")
    assert (c["n2"].term, c["n2"].vote, c["n2"].role) == (1, N1, Role.FOLLOWER)
    c.step(RequestVote(N3, N2, Term(1), Index(5), Term(1)))
    (resp,) = pending_of(c, RequestVoteResponse, src="n2")
    assert not resp.granted


def test_restart_with_log_newer_than_hard_state_adopts_term_without_vote() -> None:
    """Raft Figure 2 with separate log and meta files: if a crash kept an entry of a term newer
    than the persisted term, the node adopts that term with no vote (it never voted in it)."""
    store = MemoryStore()
    entries = [Entry(Term(3), Index(1), b""), Entry(Term(5), Index(2), b"x")]
    store.append_batch(entries, HardState(Term(3), N2), sync=True)
    node = RaftNode(RaftConfig(), N1, [N1, N2, N3], store.hard_state(), store, Random(0))
    assert (node.term, node.vote) == (5, None)
    rd = node.ready()
    assert rd.hard_state == HardState(Term(5), None)
    assert rd.must_sync


# ------------------------------------------------------------------------------------ Status


def test_status_reports_leader_view() -> None:
    """etcd-io/raft Status: role, term, leader, commit/applied/last index and, on the leader,
    the progress of every voter."""
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize(drop=["n3"])
    c.tell_commit("n1", drop=["n3"])
    st = c["n1"].status()
    assert (st.id, st.role, st.term, st.vote, st.leader) == (N1, Role.LEADER, 1, N1, N1)
    assert (st.commit_index, st.applied_index, st.last_index) == (2, 2, 2)
    assert st.lead_transferee is None
    assert set(st.progress) == {N1, N2, N3}
    assert st.progress[N2].match == 2
    assert st.progress[N2].next == 3
    assert st.progress[N2].state is ProgressState.REPLICATE
    assert st.progress[N3].match == 1
    assert st.progress[N3].inflight == 1
    follower = c["n2"].status()
    assert (follower.role, follower.leader, follower.progress) == (Role.FOLLOWER, N1, {})
    assert (follower.commit_index, follower.last_index) == (2, 2)


def test_append_ack_of_old_term_is_dropped_when_a_new_leader_truncates() -> None:
    """An append ack waits for its entries' fsync. If a newer leader's append truncates those
    (still unsynced) entries first, the old ack must not go out after that fsync: it would tell
    the old leader that this node holds entries it no longer has (found by sim seed
    95805616584147)."""
    store = MemoryStore()
    node = RaftNode(RaftConfig(), N2, [N1, N2, N3], store.hard_state(), store, Random(0))
    old = tuple(Entry(Term(1), Index(i), b"old") for i in (1, 2, 3))
    node.step(AppendEntries(N1, N2, Term(1), Index(0), Term(0), old, Index(0)))
    node.step(AppendEntries(N1, N2, Term(1), Index(3), Term(1), (), Index(0)))  # ack: 3
    new = (Entry(Term(2), Index(1), b"new"),)
    node.step(AppendEntries(N3, N2, Term(2), Index(0), Term(0), new, Index(0)))
    rd = node.ready()
    assert [e.index for e in rd.entries] == [1]  # the truncation of 1..3, then the new entry
    acks = [m for m in rd.messages_after_persist if isinstance(m, AppendEntriesResponse)]
    assert [(m.dst, m.term, m.index) for m in acks] == [(N3, 2, 1)]
