"""Raft safety properties, checked incrementally after every simulator step.

The checker watches every store write, every message sent and every applied entry, and keeps
just enough history to make each check O(nodes) per step:

- election safety: at most one leader per term over the whole run (Raft §5.2);
- persistence: a vote grant, a candidate's vote request and an append ack leave only after the
  state they promise is synced; no node grants two votes in one term, and no synced vote is
  forgotten or changed, across restarts;
- log matching: every (index, term) written anywhere, once synced or sent, names one payload
  and one previous term, which by induction makes logs that share an (index, term) identical
  up to it (§5.3; a write a crash took before either had no effect anywhere);
- leader completeness: a leader of term T holds every entry committed in terms before T (§5.4);
- state-machine safety: every commit index, every applied entry and every snapshot (its last
  entry's index and term) agrees with one canonical committed sequence that only grows
  (§5.4.3), also over logs compacted behind a snapshot;
- durability: the last committed entry is in the synced image of enough voters to meet every
  majority of the configuration committed there or of one a node's log or disk holds past it
  (as an entry, or inside a synced snapshot), so every future election hears one of them;
- the node's own invariants (``p2plog.raft.invariants``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Protocol

from p2plog.raft.invariants import InvariantViolation, check_node
from p2plog.raft.membership import ConfLog, bootstrap_conf, decode_conf, is_conf
from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from p2plog.raft.node import RaftNode
from p2plog.raft.quorum import quorum_size
from p2plog.raft.types import (
    NO_SNAPSHOT,
    ConfState,
    Entry,
    Index,
    NodeId,
    Role,
    Snapshot,
    Term,
)
from p2plog.storage.memory import MemoryStore

ALL_CHECKS = frozenset(
    {
        "election_safety",
        "persistence",
        "log_matching",
        "leader_completeness",
        "state_machine_safety",
        "durability",
        "invariants",
        "membership",
    }
)


class Violation(AssertionError):
    """A safety or liveness property failed; ``kind`` names which."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class CheckedNode(Protocol):
    @property
    def id(self) -> NodeId: ...
    @property
    def store(self) -> MemoryStore: ...
    @property
    def raft(self) -> RaftNode | None: ...


class Checker:
    def __init__(self, voters: Iterable[NodeId], checks: frozenset[str] = ALL_CHECKS) -> None:
        unknown = checks - ALL_CHECKS
        assert not unknown, f"unknown checks {sorted(unknown)}"
        self.voters = tuple(voters)
        self.quorum = quorum_size(len(self.voters))
        self.checks = checks
        self.leaders_by_term: dict[Term, NodeId] = {}
        self.votes: dict[tuple[Term, NodeId], NodeId] = {}
        self.durable_votes: dict[tuple[Term, NodeId], NodeId] = {}
        self.idents: dict[tuple[Index, Term], tuple[bytes, Term]] = {}
        self.unconfirmed: dict[NodeId, dict[tuple[Index, Term], tuple[bytes, Term]]] = {}
        self.canonical: list[Entry] = []
        self.commit_by_term: dict[Term, Index] = {}
        self.leaders_seen: set[tuple[NodeId, Term]] = set()
        self.checked_commit: dict[NodeId, Index] = defaultdict(lambda: Index(0))
        self.applied: dict[NodeId, Index] = defaultdict(lambda: Index(0))
        # The configuration entries of the canonical log (index, conf), after the bootstrap.
        self.bootstrap = bootstrap_conf(self.voters)
        self.confs = ConfLog(self.bootstrap)

    def fail(self, kind: str, detail: str) -> None:
        """Raise a ``Violation`` (when ``kind`` is checked); other checkers report here too."""
        raise Violation(kind, detail)

    def _fail(self, kind: str, detail: str) -> None:
        if kind in self.checks:
            raise Violation(kind, detail)

    # ------------------------------------------------------------- event hooks

    def on_write(self, node_id: NodeId, store: MemoryStore, entries: Iterable[Entry]) -> None:
        """Log matching: call after ``store.append_batch`` with the entries written. A write
        counts once it can have an effect: synced (``on_sync``) or sent (``on_send``). One
        that a crash took before either never existed for anybody else (a sole voter may
        then win the same term again, its first try unknown to all)."""
        mine = self.unconfirmed.setdefault(node_id, {})
        for e in entries:
            prev = store.term(Index(e.index - 1)) if e.index > 1 else Term(0)
            ident = (e.data, prev)
            self._match(node_id, e.index, e.term, ident)
            mine[(e.index, e.term)] = ident

    def _match(self, nid: NodeId, index: Index, term: Term, ident: tuple[bytes, Term]) -> None:
        seen = self.idents.get((index, term))
        if seen is not None and seen != ident:
            self._fail(
                "log_matching",
                f"{nid} wrote index {index} term {term} as {ident!r}, elsewhere it is {seen!r}",
            )

    def _confirm(self, nid: NodeId, index: Index, term: Term, ident: tuple[bytes, Term]) -> None:
        self._match(nid, index, term, ident)
        self.idents[(index, term)] = ident

    def on_send(self, node: CheckedNode, m: Message) -> None:
        if isinstance(m, AppendEntries):
            prev = m.prev_term
            for e in m.entries:
                self._confirm(node.id, e.index, e.term, (e.data, prev))
                prev = e.term
        hs = node.store.synced_hard_state()
        if isinstance(m, RequestVoteResponse) and m.granted and not m.pre_vote:
            prior = self.votes.setdefault((m.term, m.src), m.dst)
            if prior != m.dst:
                self._fail(
                    "persistence",
                    f"{m.src} granted two votes in term {m.term}: {prior} and {m.dst}",
                )
            if hs.term < m.term or (hs.term == m.term and hs.vote != m.dst):
                self._fail(
                    "persistence",
                    f"{m.src} granted its term {m.term} vote to {m.dst} before syncing it "
                    f"(synced {hs})",
                )
        elif isinstance(m, RequestVote) and not m.pre_vote:
            if hs.term < m.term or (hs.term == m.term and hs.vote != m.src):
                self._fail(
                    "persistence",
                    f"{m.src} asked for votes in term {m.term} before syncing its own vote "
                    f"(synced {hs})",
                )
        elif isinstance(m, AppendEntriesResponse) and m.success:
            synced = node.store.synced_last_index()
            if synced < m.index:
                self._fail(
                    "persistence",
                    f"{m.src} acked index {m.index} to {m.dst} with only {synced} synced",
                )

    def on_apply(self, node_id: NodeId, entries: Iterable[Entry]) -> None:
        for e in entries:
            expected = self.applied[node_id] + 1
            if e.index != expected:
                self._fail(
                    "state_machine_safety", f"{node_id} applied {e.index}, expected {expected}"
                )
            self._learn(node_id, e, "applied")
            self.applied[node_id] = e.index

    def on_sync(self, node_id: NodeId, store: MemoryStore) -> None:
        """A synced vote must survive every later crash (checked in ``after_step``)."""
        hs = store.synced_hard_state()
        if hs.vote is not None:
            self.durable_votes.setdefault((hs.term, node_id), hs.vote)
        for (index, term), ident in self.unconfirmed.pop(node_id, {}).items():
            self._confirm(node_id, index, term, ident)

    def on_restart(self, node_id: NodeId, snapshot: Snapshot = NO_SNAPSHOT) -> None:
        """``node_id`` started again, from ``snapshot`` (its own, kept in place of its log's
        prefix): what the snapshot stands for must be committed."""
        self.checked_commit[node_id] = Index(0)
        self.applied[node_id] = Index(0)
        self.unconfirmed.pop(node_id, None)  # what a crash kept is confirmed when synced or sent
        if snapshot.index:
            self.on_snapshot(node_id, snapshot)

    def on_snapshot(self, node_id: NodeId, s: Snapshot) -> None:
        """``node_id`` restored its state machine from ``s`` (state-machine safety over a
        compacted log: the snapshot's last entry is the committed one at its index)."""
        self._check_snapshot(node_id, s.index, s.term)
        self.applied[node_id] = s.index
        self.checked_commit[node_id] = max(self.checked_commit[node_id], s.index)

    def _check_snapshot(self, nid: NodeId, index: Index, term: Term) -> None:
        if index == 0:
            return
        if index > len(self.canonical):
            self._fail("state_machine_safety", f"{nid} holds a snapshot at {index}, past commit")
        elif self.canonical[index - 1].term != term:
            self._fail(
                "state_machine_safety",
                f"{nid} holds a snapshot at {index} term {term}, but "
                f"{self.canonical[index - 1]} was committed",
            )

    # --------------------------------------------------------- after each step

    def after_step(self, touched: CheckedNode | None, nodes: Mapping[NodeId, CheckedNode]) -> None:
        if touched is not None and touched.raft is not None:
            self._check_node(touched.id, touched.raft, nodes)
        self._check_durability(nodes)

    def _check_node(self, nid: NodeId, raft: RaftNode, nodes: Mapping[NodeId, CheckedNode]) -> None:
        if "invariants" in self.checks:
            try:
                check_node(raft)
            except InvariantViolation as e:
                raise Violation("invariants", str(e)) from e
        durable = self.durable_votes.get((raft.term, nid))
        if durable is not None and raft.vote != durable:
            self._fail(
                "persistence",
                f"{nid} is at term {raft.term} with vote {raft.vote} but had synced its vote for "
                f"{durable} in that term",
            )
        if raft.role is Role.LEADER:
            holder = self.leaders_by_term.setdefault(raft.term, nid)
            if holder != nid:
                self._fail("election_safety", f"{holder} and {nid} both lead term {raft.term}")
            if (nid, raft.term) not in self.leaders_seen:
                self.leaders_seen.add((nid, raft.term))
                older = [c for t, c in self.commit_by_term.items() if t < raft.term]
                self._require_prefix(nid, raft, Index(max(older, default=0)))
        self._learn_commit(nid, raft)
        if raft.role is Role.LEADER and raft.log.committed > self.commit_by_term.get(raft.term, 0):
            self.commit_by_term[raft.term] = raft.log.committed
            for other in nodes.values():
                r = other.raft
                if r is not None and r.role is Role.LEADER and r.term > raft.term:
                    self._require_prefix(other.id, r, raft.log.committed)

    def _require_prefix(self, nid: NodeId, raft: RaftNode, upto: Index) -> None:
        """Leader completeness: ``raft`` must hold canonical entries ``1..upto``."""
        if upto < raft.log.first_index() - 1:
            return  # a snapshot stands in for it (checked against the canonical log)
        if upto == 0:
            return
        want = self.canonical[upto - 1]
        if raft.log.last_index() < upto or raft.log.term(upto) != want.term:
            self._fail(
                "leader_completeness",
                f"{nid} leads term {raft.term} without committed entry {upto} (term {want.term})",
            )

    def _learn_commit(self, nid: NodeId, raft: RaftNode) -> None:
        done = self.checked_commit[nid]
        commit = raft.log.committed
        if commit <= done:
            return
        floor = Index(raft.log.first_index() - 1)
        if done < floor:  # compacted (or replaced by a snapshot) past what was checked
            self._check_snapshot(nid, floor, raft.log.term(floor))
            done = floor
        for e in _entries(raft, Index(done + 1), Index(commit + 1)):
            self._learn(nid, e, "committed")
        self.checked_commit[nid] = commit

    def _learn(self, nid: NodeId, e: Entry, how: str) -> None:
        n = len(self.canonical)
        if e.index <= n:
            if self.canonical[e.index - 1] != e:
                self._fail(
                    "state_machine_safety",
                    f"{nid} {how} {e} but {self.canonical[e.index - 1]} was committed",
                )
        elif e.index == n + 1:
            self.canonical.append(e)
            if is_conf(e.data):
                self._learn_conf(nid, e)
        else:
            self._fail("state_machine_safety", f"{nid} {how} {e.index} past commit {n}")

    def _learn_conf(self, nid: NodeId, e: Entry) -> None:
        """Membership: each committed configuration is one server away from the one before
        (single-server changes, thesis §4.1); two changes at once may not overlap."""
        old = self.confs.current()  # (the canonical log grows one entry at a time)
        self.confs.appended([e])
        new = self.confs.current()
        if len(set(new.voters) ^ set(old.voters)) > 1:
            self._fail(
                "membership",
                f"{nid} committed configuration {new.voters} at {e.index} after {old.voters}: "
                f"more than one voter changed",
            )

    def _check_durability(self, nodes: Mapping[NodeId, CheckedNode]) -> None:
        if not self.canonical or "durability" not in self.checks:
            return
        last = self.canonical[-1]
        holders = {n.id for n in nodes.values() if n.store.synced_covers(last.index, last.term)}
        # A majority of the configuration committed there, or of one that a node's log holds
        # past it (the pending change a leader counts by, rule 1 of raft.membership: one
        # server apart, so its majorities meet the committed one's) must hold it.
        confs = [self.confs.at(last.index)]
        confs += [n.raft.conf for n in nodes.values() if n.raft is not None]
        if any(_majority(holders, c) for c in confs):
            return
        for n in nodes.values():  # (down nodes too: a pending change on a leader's disk)
            pending = n.store.conf_entries()  # (a scan of the log: only when it matters)
            if pending:
                confs.append(decode_conf(pending[-1].data))
        if not any(_majority(holders, c) for c in confs):
            self._fail(
                "durability",
                f"committed index {last.index} (term {last.term}) is synced on only "
                f"{sorted(holders)}, not a majority of the voters {[c.voters for c in confs]}",
            )


def _majority(holders: set[NodeId], conf: ConfState) -> bool:
    """Do ``holders`` meet every majority of ``conf``'s voters (so every future election
    hears one of them)? For an odd count that is a majority; for four voters, two: a commit
    made by two of three stays safe when a fourth voter is added."""
    n = len(conf.voters)
    return len(holders & set(conf.voters)) > n - quorum_size(n)


def _entries(raft: RaftNode, lo: Index, hi: Index) -> list[Entry]:
    out: list[Entry] = []
    while lo < hi:
        batch = raft.log.entries(lo, hi, 1 << 30)
        out.extend(batch)
        lo = Index(batch[-1].index + 1)
    return out
