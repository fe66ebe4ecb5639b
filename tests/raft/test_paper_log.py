"""The Raft paper on the hand-driven ``Cluster``, continued: log replication (§5.3), committing
entries from previous terms (§5.4.2, Figure 8), the leader's no-op (§8) and crashed followers and
idempotent RPCs (§5.5). Each docstring names the section it checks.
"""

from __future__ import annotations

import dataclasses
import itertools

from p2plog.raft import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Index,
    NodeId,
    Role,
    Term,
)
from p2plog.testing.cluster import Cluster

from .helpers import NO_LEASE, elect_other_leader, log_of, pending_of, tick_until

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")


# --------------------------------------------------------------------------------------- §5.3


def test_leader_appends_proposal_and_replicates() -> None:
    """Raft §5.3: the leader appends the command to its log as a new entry, then issues
    AppendEntries to each of the other servers to replicate it."""
    c = Cluster(3)
    c.elect("n1")
    index = c.propose("n1", b"x")
    assert index == 2
    assert log_of(c, "n1")[-1] == (1, b"x")
    appends = pending_of(c, AppendEntries, src="n1")
    assert sorted(m.dst for m in appends) == ["n2", "n3"]
    for m in appends:
        assert (m.prev_index, m.prev_term) == (1, 1)
        assert m.entries == (Entry(Term(1), Index(2), b"x"),)


def test_entry_committed_on_majority_and_followers_learn_commit() -> None:
    """Raft §5.3: an entry is committed once the leader has replicated it on a majority; the
    leader sends the commit index in later AppendEntries so followers learn it."""
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"x")
    c.deliver(drop=["n3"])  # only n2 gets the entry
    assert c["n1"].log.committed == 1
    c.deliver(drop=["n3"])  # n2's ack: a majority (n1, n2) holds index 2
    assert c["n1"].log.committed == 2
    assert c.data("n1") == [b"x"]
    assert c["n2"].log.committed == 1
    c.stabilize(drop=["n3"])
    assert c["n2"].log.committed == 1  # no message of its own for the commit index
    c.tell_commit("n1", drop=["n3"])  # the next tick's heartbeat carries it
    assert c["n2"].log.committed == 2
    assert c.data("n2") == [b"x"]
    assert c["n3"].log.last_index() == 1
    c.tick("n1")  # a heartbeat reveals the gap to n3, which then catches up
    c.stabilize()
    assert c["n3"].log.committed == 2
    assert c.data("n3") == [b"x"]


def test_followers_apply_committed_entries_in_log_order() -> None:
    """Raft §5.3: once a follower learns an entry is committed it applies it, in log order."""
    c = Cluster(3)
    c.elect("n1")
    datas = [f"cmd{i}".encode() for i in range(20)]
    for d in datas[:10]:
        c.propose("n1", d)
    c.stabilize()
    for d in datas[10:]:
        c.propose("n1", d)
        c.deliver()
    c.stabilize()
    c.tell_commit("n1")
    for nid in c.ids:
        assert c.data(nid) == datas
        indexes = [e.index for e in c.applied[nid]]
        assert indexes == list(range(1, len(indexes) + 1))


def test_consistency_check_rejects_mismatched_prev_term() -> None:
    """Raft §5.3: if the follower does not find an entry with the same index and term as
    prevLogIndex/prevLogTerm, it refuses the new entries."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize()
    c.elect("n2")  # term 2; every log is [no-op t1, a t1, no-op t2]
    before = log_of(c, "n3")
    entry = Entry(Term(2), Index(4), b"b")
    c.step(AppendEntries(N2, N3, Term(2), Index(3), Term(1), (entry,), Index(0)))
    assert log_of(c, "n3") == before
    (resp,) = pending_of(c, AppendEntriesResponse, src="n3")
    assert (resp.success, resp.index) == (False, 3)


def test_conflicting_follower_entries_are_replaced_by_leaders() -> None:
    """Raft §5.3: the leader forces followers' logs to duplicate its own: conflicting entries in
    a follower's log are deleted and overwritten with entries from the leader's log."""
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    for d in (b"lost1", b"lost2", b"lost3"):
        c.propose("n1", d)  # on n1 only, term 1
    new = elect_other_leader(c, "n1", ["n2", "n3"])
    c.propose(new, b"kept")
    c.stabilize()
    assert log_of(c, "n1")[1:] == [(1, b"lost1"), (1, b"lost2"), (1, b"lost3")]
    c.heal()
    tick_until(c, lambda: log_of(c, "n1") == log_of(c, new), [new])
    assert c["n1"].role is Role.FOLLOWER
    assert c.data("n1") == [b"kept"]
    assert all(d != b"lost1" for _, d in log_of(c, "n1"))
    assert c.stores[N1].last_index() == c[new].log.last_index()


def test_leader_never_overwrites_or_deletes_its_own_entries() -> None:
    """Raft §5.3 (Leader Append-Only): a leader never overwrites or deletes entries in its log;
    an AppendEntries of its own term (impossible from a correct peer) changes nothing."""
    c = Cluster(3)
    c.elect("n1")
    c.isolate("n1")
    c.propose("n1", b"mine")
    before = log_of(c, "n1")
    forged = (Entry(Term(1), Index(2), b"theirs"),)
    c.step(AppendEntries(N2, N1, Term(1), Index(1), Term(1), forged, Index(2)))
    assert log_of(c, "n1") == before
    assert c["n1"].role is Role.LEADER
    c.heal()
    history = [log_of(c, "n1")]
    for d in (b"p1", b"p2", b"p3"):
        c.propose("n1", d)
        while c.pending:
            c.deliver()
            history.append(log_of(c, "n1"))
    for earlier, later in itertools.pairwise(history):
        assert later[: len(earlier)] == earlier


# ------------------------------------------------------------------------------------- §5.4.2


def _figure8_c() -> Cluster:
    """Figure 8 (c) on 5 nodes: n1 leads term 3; index 2 holds x of term 1 on n1, n2, n3 (a
    majority, acknowledged to n1 in term 3); n1's own no-op (index 3, term 3) is on n1 only;
    n5 (down) holds a term-2 no-op at index 2."""
    c = Cluster(5, config=NO_LEASE)
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize(drop=["n3", "n4", "n5"])  # x(t1) on n1, n2: not committed
    c.crash("n1")
    c.campaign("n5")
    c.deliver(drop=["n2"])
    c.deliver(drop=["n2"])  # n3, n4 elect n5 at term 2
    assert (c["n5"].role, c["n5"].term) == (Role.LEADER, 2)
    c.crash("n5")  # its no-op (index 2, term 2) never left it
    c.restart("n1")
    c.campaign("n1")
    c.stabilize(drop=["n4", "n5"])  # term 2: n3 already voted for n5
    c.campaign("n1")
    c.deliver(drop=["n4", "n5"])
    c.deliver(drop=["n4", "n5"])
    assert (c["n1"].role, c["n1"].term) == (Role.LEADER, 3)
    assert log_of(c, "n1") == [(1, b""), (1, b"x"), (3, b"")]
    # A network that loses every term-3 entry: x still reaches n3, and n2 and n3 both ack
    # index 2 to n1, so n1 *knows* x is on a majority.
    while c.pending:
        for m in c.take():
            if {m.src, m.dst} & {"n4", "n5"}:
                continue
            if isinstance(m, AppendEntries):
                m = dataclasses.replace(m, entries=tuple(e for e in m.entries if e.term != 3))
            c.step(m)
    for nid in ("n1", "n2", "n3"):
        assert log_of(c, nid)[1] == (1, b"x")
    assert c["n1"].progress[N2].match == 2
    assert c["n1"].progress[N3].match == 2
    return c


def test_leader_does_not_commit_previous_term_entry_by_counting_replicas() -> None:
    """Raft §5.4.2 (Figure 8): a leader never commits an entry from a previous term by counting
    replicas; it commits only once an entry of its current term (the no-op) is on a majority,
    and then the older entry is committed indirectly."""
    c = _figure8_c()
    # x is on 3 of 5 and n1 knows it, but x is of term 1 (n1 restarted, so it does not even
    # know that index 1 is committed: the commit index is relearned, never persisted).
    assert c["n1"].log.committed == 0
    assert c.data("n1") == []
    c.tick("n1")  # the heartbeat reveals that n2, n3 lack the no-op; now it gets through
    c.stabilize(drop=["n4", "n5"])
    c.tell_commit("n1", drop=["n4", "n5"])
    assert c["n1"].log.committed == 3
    for nid in ("n1", "n2", "n3"):
        assert log_of(c, nid) == [(1, b""), (1, b"x"), (3, b"")]
        assert c[nid].log.committed == 3
        assert c.data(nid) == [b"x"]


def test_figure8_old_term_entry_on_majority_can_still_be_overwritten() -> None:
    """Raft §5.4.2 (Figure 8 d): why the rule exists. An old-term entry on a majority, with no
    current-term entry above it, is replaced by a leader whose last term is later."""
    c = _figure8_c()
    c.crash("n1")
    c.restart("n5")
    c.campaign("n5")
    c.stabilize()  # term 3: n2 and n3 already voted for n1
    assert c["n5"].role is Role.CANDIDATE
    c.campaign("n5")
    c.stabilize()  # term 4: last term 2 beats the last term 1 of n2, n3, n4
    assert (c["n5"].role, c["n5"].term) == (Role.LEADER, 4)
    for nid in ("n2", "n3", "n4"):
        assert log_of(c, nid) == [(1, b""), (2, b""), (4, b"")]
        assert c.data(nid) == []


# ----------------------------------------------------------------------------------------- §8


def test_new_leader_appends_noop_of_its_term() -> None:
    """Raft §8: each leader commits a blank no-op entry at the start of its term."""
    c = Cluster(3, config=NO_LEASE)
    c.elect("n1")
    assert log_of(c, "n1") == [(1, b"")]
    c.propose("n1", b"x")
    c.stabilize()
    c.elect("n2")
    c.tell_commit("n2")
    term = c["n2"].term
    assert log_of(c, "n2") == [(1, b""), (1, b"x"), (term, b"")]
    for nid in c.ids:
        assert c[nid].log.committed == 3
        assert [e.data for e in c.applied[nid]][-1] == b""


# ----------------------------------------------------------------------------------------- §5.5


def test_restarted_follower_catches_up() -> None:
    """Raft §5.5: if a follower crashes, the leader retries AppendEntries indefinitely; once it
    restarts it catches up and applies everything committed meanwhile."""
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"before")
    c.stabilize()
    c.crash("n3")
    for i in range(5):
        c.propose("n1", f"during{i}".encode())
        c.stabilize()
    c.restart("n3")
    assert c["n3"].term == 1  # term restored from its store
    c.run_ticks(3)
    assert c.data("n3") == [b"before"] + [f"during{i}".encode() for i in range(5)]
    assert log_of(c, "n3") == log_of(c, "n1")


def test_duplicate_append_entries_is_idempotent() -> None:
    """Raft §5.5: Raft RPCs are idempotent; a repeated AppendEntries changes nothing."""
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"a")
    c.propose("n1", b"b")
    appends = c.take(lambda m: isinstance(m, AppendEntries))
    for m in appends:
        c.step(m)
    c.stabilize()
    logs = {nid: log_of(c, nid) for nid in c.ids}
    for m in appends + appends:  # replay the same requests twice, after the fact
        c.step(m)
    c.stabilize()
    c.tell_commit("n1")
    assert {nid: log_of(c, nid) for nid in c.ids} == logs
    for nid in c.ids:
        assert c.data(nid) == [b"a", b"b"]
    assert c.leader() == "n1"
    assert c["n1"].log.committed == 3
