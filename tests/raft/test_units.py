"""Unit tests of the Raft core's pure parts: RaftLog, quorum arithmetic, Progress, RaftConfig
validation and the per-node invariant checker."""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2plog.raft import Entry, HardState, Index, NodeId, RaftConfig, RaftNode, Role, Term
from p2plog.raft.invariants import InvariantViolation, check_node
from p2plog.raft.log import RaftLog
from p2plog.raft.progress import Progress, ProgressState
from p2plog.raft.quorum import committed_index, quorum_size, vote_result
from p2plog.storage.memory import MemoryStore
from p2plog.testing.cluster import Cluster

N1, N2, N3 = NodeId("n1"), NodeId("n2"), NodeId("n3")


def ents(first: int, terms: Sequence[int], size: int = 10) -> list[Entry]:
    return [
        Entry(Term(t), Index(first + i), bytes([97 + (first + i) % 26]) * size)
        for i, t in enumerate(terms)
    ]


def make_log(stable: Sequence[int], unstable: Sequence[int] = ()) -> RaftLog:
    """A RaftLog over a MemoryStore holding ``stable`` terms, plus ``unstable`` terms after."""
    store = MemoryStore()
    if stable:
        store.append_batch(ents(1, stable), None, sync=True)
    lg = RaftLog(store)
    lg.append(ents(len(stable) + 1, unstable))
    return lg


def terms_of(lg: RaftLog) -> list[int]:
    return [lg.term(Index(i)) for i in range(1, lg.last_index() + 1)]


def indexes(es: list[Entry]) -> list[int]:
    return [e.index for e in es]


# -------------------------------------------------------------------------------- RaftLog


def test_log_terms_across_stable_and_unstable() -> None:
    lg = make_log([1, 1, 2, 2, 3], [3, 4])
    assert (lg.last_index(), lg.stable_last_index(), lg.offset) == (7, 5, 6)
    assert lg.term(Index(0)) == 0
    assert terms_of(lg) == [1, 1, 2, 2, 3, 3, 4]
    assert lg.last_term() == 4
    assert make_log([]).last_term() == 0


def test_log_match_term() -> None:
    """Raft §5.3: the consistency check holds only for an existing entry of that term."""
    lg = make_log([1, 1, 2], [3])
    assert lg.match_term(Index(0), Term(0))
    assert lg.match_term(Index(3), Term(2))
    assert lg.match_term(Index(4), Term(3))
    assert not lg.match_term(Index(3), Term(1))
    assert not lg.match_term(Index(5), Term(3))  # beyond the end


@pytest.mark.parametrize(
    ("last_index", "last_term", "ok"),
    [
        (5, 3, True),  # identical
        (9, 3, True),  # same term, longer
        (4, 3, False),  # same term, shorter
        (1, 4, True),  # later term wins whatever the length
        (99, 2, False),  # earlier term loses whatever the length
    ],
)
def test_log_is_up_to_date(last_index: int, last_term: int, ok: bool) -> None:
    """Raft §5.4.1: compare last terms first, then lengths."""
    lg = make_log([1, 1, 2, 2, 3])
    assert lg.is_up_to_date(Index(last_index), Term(last_term)) is ok


def test_log_entries_byte_cap_across_stable_and_unstable() -> None:
    lg = make_log([1, 1, 2, 2, 3], [3, 4])  # 10 bytes each
    assert indexes(lg.entries(Index(1), Index(8), 1 << 20)) == [1, 2, 3, 4, 5, 6, 7]
    assert indexes(lg.entries(Index(1), Index(8), 25)) == [1, 2]  # cut in the stable part
    assert indexes(lg.entries(Index(4), Index(8), 25)) == [4, 5]  # cut at the boundary
    assert indexes(lg.entries(Index(5), Index(8), 25)) == [5, 6]  # cut in the unstable part
    assert indexes(lg.entries(Index(4), Index(8), 30)) == [4, 5, 6]
    assert indexes(lg.entries(Index(6), Index(8), 1)) == [6]  # always at least one
    assert indexes(lg.entries(Index(3), Index(8), 1)) == [3]
    assert indexes(lg.entries(Index(6), Index(99), 1 << 20)) == [6, 7]  # hi clipped
    assert lg.entries(Index(8), Index(9), 1 << 20) == []
    assert lg.entries(Index(3), Index(3), 1 << 20) == []


def test_log_maybe_append_rejects_mismatched_prev() -> None:
    lg = make_log([1, 1, 2])
    assert lg.maybe_append(Index(3), Term(1), Index(3), ents(4, [2])) is None
    assert lg.maybe_append(Index(4), Term(2), Index(3), ents(5, [2])) is None
    assert terms_of(lg) == [1, 1, 2]
    assert lg.committed == 0


def test_log_maybe_append_keeps_matching_entries_and_longer_log() -> None:
    """Raft §5.3: only a *conflicting* entry truncates; a stale, shorter append changes nothing
    and the ack covers only what the message proved."""
    lg = make_log([1, 1, 2, 2])
    before = lg.entries(Index(1), Index(5), 1 << 20)
    assert lg.maybe_append(Index(1), Term(1), Index(2), ents(2, [1, 2])) == 3
    assert lg.entries(Index(1), Index(5), 1 << 20) == before
    assert not lg.unstable
    assert lg.committed == 2


def test_log_maybe_append_truncates_conflict_in_stable_part() -> None:
    lg = make_log([1, 1, 1, 1, 1])
    new = ents(3, [2, 2], size=3)
    assert lg.maybe_append(Index(2), Term(1), Index(9), new) == 4
    assert terms_of(lg) == [1, 1, 2, 2]
    assert lg.offset == 3  # reader entries 3..5 are logically gone
    assert lg.unstable == new
    assert lg.committed == 4  # min(leader commit, last new index)
    lg.reader.append_batch(lg.unstable, None, sync=True)  # type: ignore[attr-defined]
    lg.stable_to(Index(4))
    assert (lg.offset, lg.unstable, lg.reader.last_index()) == (5, [], 4)
    assert terms_of(lg) == [1, 1, 2, 2]


def test_log_maybe_append_truncates_conflict_in_unstable_part() -> None:
    lg = make_log([1, 1], [1, 1, 1])
    assert lg.maybe_append(Index(3), Term(1), Index(0), ents(4, [3])) == 4
    assert terms_of(lg) == [1, 1, 1, 3]
    assert lg.offset == 3


def test_log_maybe_append_extends() -> None:
    lg = make_log([1, 1])
    assert lg.maybe_append(Index(2), Term(1), Index(1), ents(3, [2, 2])) == 4
    assert terms_of(lg) == [1, 1, 2, 2]
    assert lg.committed == 1


def test_log_conflict_at_committed_index_is_a_programmer_error() -> None:
    lg = make_log([1, 1, 1])
    lg.commit_to(Index(3))
    with pytest.raises(AssertionError, match="committed"):
        lg.maybe_append(Index(1), Term(1), Index(3), ents(2, [2]))


@pytest.mark.parametrize(
    ("index", "term", "expect"),
    [(7, 2, 4), (7, 4, 7), (7, 3, 6), (3, 5, 3), (100, 1, 2), (7, 0, 0), (0, 5, 0)],
)
def test_log_find_conflict_by_term(index: int, term: int, expect: int) -> None:
    """etcd findConflictByTerm: the largest i <= index whose term is <= term."""
    lg = make_log([1, 1, 2, 2], [3, 3, 4])
    assert lg.find_conflict_by_term(Index(index), Term(term)) == expect


def test_log_commit_to_never_lowers() -> None:
    lg = make_log([1, 1, 2, 2, 3])
    assert lg.commit_to(Index(4))
    assert not lg.commit_to(Index(2))
    assert not lg.commit_to(Index(4))
    assert lg.committed == 4
    with pytest.raises(AssertionError, match="beyond last index"):
        lg.commit_to(Index(6))


def test_log_next_committed_respects_apply_cap() -> None:
    lg = make_log([1, 1, 1, 1])
    assert not lg.has_next_committed()
    lg.commit_to(Index(3))
    assert lg.has_next_committed()
    assert indexes(lg.next_committed(15)) == [1]
    assert indexes(lg.next_committed(1 << 20)) == [1, 2, 3]
    lg.applied = Index(3)
    assert not lg.has_next_committed()


# --------------------------------------------------------------------------------- quorum


@pytest.mark.parametrize(("voters", "q"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4)])
def test_quorum_size(voters: int, q: int) -> None:
    assert quorum_size(voters) == q


def test_committed_index_examples() -> None:
    assert committed_index([7]) == 7
    assert committed_index([5, 3, 1]) == 3
    assert committed_index([1, 5, 3]) == 3
    assert committed_index([5, 4, 3, 1]) == 3
    assert committed_index([9, 9, 0, 0, 0]) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=9))
def test_committed_index_is_highest_index_on_a_majority(matches: list[int]) -> None:
    q = committed_index(matches)
    need = quorum_size(len(matches))
    assert sum(m >= q for m in matches) >= need
    assert sum(m >= q + 1 for m in matches) < need


def test_vote_result() -> None:
    assert vote_result({"n1": True}, 3) is None
    assert vote_result({"n1": True, "n2": True}, 3) is True
    assert vote_result({"n1": True, "n2": False}, 3) is None
    assert vote_result({"n1": True, "n2": False, "n3": False}, 3) is False
    assert vote_result({"n1": True, "n2": False}, 4) is None
    assert vote_result({"n1": True, "n2": True, "n3": False, "n4": False}, 4) is None
    assert vote_result({"n1": True}, 1) is True


# ------------------------------------------------------------------------------- Progress


def test_progress_probe_sends_one_at_a_time() -> None:
    pr = Progress(Index(5))
    assert (pr.state, pr.match, pr.next) == (ProgressState.PROBE, 0, 5)
    assert not pr.is_paused(4)
    pr.sent_entries(Index(7))
    assert pr.is_paused(4)
    assert pr.next == 5  # a probe does not advance next
    assert not pr.inflight


def test_progress_probe_to_replicate_and_inflight_window() -> None:
    pr = Progress(Index(5))
    pr.sent_entries(Index(7))
    assert pr.maybe_update(Index(7))
    assert (pr.match, pr.next, pr.probe_sent) == (7, 8, False)
    pr.become_replicate()
    assert (pr.state, pr.next) == (ProgressState.REPLICATE, 8)
    pr.sent_entries(Index(10))
    pr.sent_entries(None)  # an empty append takes no slot
    pr.sent_entries(Index(12))
    assert (pr.next, list(pr.inflight)) == (13, [10, 12])
    assert pr.is_paused(2)
    assert not pr.is_paused(3)
    assert pr.maybe_update(Index(10))
    assert list(pr.inflight) == [12]
    assert not pr.maybe_update(Index(9))  # stale ack
    assert pr.match == 10


def test_progress_replicate_rejection() -> None:
    pr = Progress(Index(1))
    pr.maybe_update(Index(4))
    pr.become_replicate()
    pr.sent_entries(Index(8))
    assert not pr.maybe_decr_to(Index(3), Index(0))  # stale: below match
    assert not pr.maybe_decr_to(Index(4), Index(0))
    assert pr.next == 9
    assert pr.maybe_decr_to(Index(6), Index(0))
    assert pr.next == 5
    pr.become_probe()
    assert (pr.state, pr.next, list(pr.inflight)) == (ProgressState.PROBE, 5, [])


def test_progress_probe_rejection_uses_hint_but_not_below_match() -> None:
    pr = Progress(Index(11))
    pr.sent_entries(None)
    assert not pr.maybe_decr_to(Index(7), Index(2))  # stale: not the probe's prev index
    assert pr.probe_sent
    assert pr.maybe_decr_to(Index(10), Index(4))
    assert (pr.next, pr.probe_sent) == (5, False)
    assert pr.maybe_decr_to(Index(4), Index(99))  # hint above the rejected index: step by one
    assert pr.next == 4
    pr.maybe_update(Index(2))
    pr.next = Index(4)
    assert pr.maybe_decr_to(Index(3), Index(0))
    assert pr.next == 3  # never below match + 1


# --------------------------------------------------------------------------------- config


def test_config_defaults_are_valid() -> None:
    cfg = RaftConfig()
    assert cfg.election_ticks > cfg.heartbeat_ticks >= 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"heartbeat_ticks": 0}, "heartbeat_ticks"),
        ({"election_ticks": 3, "heartbeat_ticks": 3}, "election_ticks"),
        ({"election_ticks": 1}, "election_ticks"),
        ({"max_inflight_msgs": 0}, "max_inflight_msgs"),
        ({"max_msg_bytes": 0}, "max_msg_bytes"),
        ({"max_uncommitted_bytes": -1}, "max_uncommitted_bytes"),
        ({"max_apply_bytes": 0}, "max_apply_bytes"),
    ],
)
def test_config_rejects_invalid_values(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RaftConfig(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- invariants


def _healthy() -> Cluster:
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize()
    for nid in c.ids:
        check_node(c[nid])
    return c


def test_invariants_catch_commit_beyond_last_index() -> None:
    c = _healthy()
    node = c["n2"]
    node.log.committed = Index(node.log.last_index() + 1)
    with pytest.raises(InvariantViolation, match=r"n2 term=1: .*commit 3 <= last index 2"):
        check_node(node)


def test_invariants_catch_applied_beyond_commit() -> None:
    c = _healthy()
    c["n3"].log.applied = Index(c["n3"].log.committed + 1)
    with pytest.raises(InvariantViolation, match="applied"):
        check_node(c["n3"])


def test_invariants_catch_bad_leader_progress() -> None:
    c = _healthy()
    c["n1"].progress[N2].next = c["n1"].progress[N2].match
    with pytest.raises(InvariantViolation, match="progress n2"):
        check_node(c["n1"])


def test_invariants_catch_leader_counting_unpersisted_entries() -> None:
    c = _healthy()
    c["n1"].progress[N1].match = Index(5)
    c["n1"].progress[N1].next = Index(6)
    c["n1"].log.append([Entry(Term(1), Index(i), b"y") for i in (3, 4, 5)])
    with pytest.raises(InvariantViolation, match="unpersisted"):
        check_node(c["n1"])


def test_invariants_catch_role_inconsistencies() -> None:
    c = _healthy()
    c["n2"].progress = dict(c["n1"].progress)
    with pytest.raises(InvariantViolation, match="keeps leader progress"):
        check_node(c["n2"])
    node = RaftNode(RaftConfig(), N1, [N1, N2, N3], HardState(), MemoryStore(), Random(0))
    node.role = Role.CANDIDATE
    with pytest.raises(InvariantViolation, match="voted for itself"):
        check_node(node)


def test_invariant_violation_is_an_assertion_error() -> None:
    """Programmer errors are assertions (STYLE.md rule 5): they crash tests and the simulator."""
    assert issubclass(InvariantViolation, AssertionError)
