"""What p2plog promises on top of Raft, checked after every simulator step.

The Raft checker (``checker.Checker``) keeps the canonical committed sequence of entries. This
checker reads the records out of it into a model with no dedup window bound (the simulator's
window never evicts), and holds every node's output against it:

- hand-out: every submission a node finishes is handed out exactly once (a node that goes idle
  holding a finished one would leave its submitter waiting for a timeout);
- quorum acks: an ``ack=quorum`` ack is handed out only for a record that is committed (in
  the canonical sequence, which the Raft checker keeps synced on a majority), at the index and
  term the model gives its id: a retried id is answered with its original index;
- leader acks: an ``ack=leader`` ack is handed out only once the acking leader synced the
  entry; once the model covers its index, the record is there, or a later term's leader
  replaced it (the documented loss window: unreplicated tails of a deposed leader);
- dedup: every node's applier marks exactly the duplicates the model does (each id stored once);
- event time: every node emits the same records in the same order with the same flags (the
  first node to emit position k fixes it; a restarted node replays from the start, or from
  the position of the snapshot it starts from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from p2plog.raft.types import Entry, Index, NodeId
from p2plog.replica.proposals import Proposal
from p2plog.replica.replica import ReplicaReady
from p2plog.state.entry import parse_batch
from p2plog.storage.memory import MemoryStore

REPLICA_CHECKS = frozenset({"handout", "quorum_acks", "leader_acks", "dedup", "event_order"})
LOOKBACK_ENTRIES = 256  # how far back from a leader's last entry an acked record may sit


class AckedNode(Protocol):
    @property
    def id(self) -> NodeId: ...
    @property
    def store(self) -> MemoryStore: ...


@dataclass
class ReplicaStats:
    quorum_acks: int = 0
    leader_acks: int = 0
    leader_acks_lost: int = 0
    leader_acks_dup_slot: int = 0  # acked at a copy the applier later found a duplicate
    dup_acks: int = 0
    emitted: int = 0
    flagged: int = 0


@dataclass
class _LeaderAck:
    rid: bytes
    index: int
    term: int
    entry: int  # the Raft index of the entry the leader synced it in


@dataclass
class _Model:
    """The records of the canonical committed entries, read in order."""

    upto: int = 0  # canonical entries read so far
    first: dict[bytes, int] = field(default_factory=dict)  # id -> record index it is stored at
    ids: dict[int, bytes] = field(default_factory=dict)  # record index -> id
    terms: dict[int, int] = field(default_factory=dict)  # record index -> term of its entry
    dups: dict[int, dict[int, int]] = field(default_factory=dict)  # Raft index -> dups
    last_record: int = 0

    def read(self, entries: list[Entry]) -> None:
        while self.upto < len(entries):
            e = entries[self.upto]
            self.upto += 1
            b = parse_batch(e.data)
            if b is None:
                continue
            dups: dict[int, int] = {}
            for k, rid in enumerate(b.ids()):
                i = b.base + k
                self.ids[i] = rid
                self.terms[i] = e.term
                orig = self.first.setdefault(rid, i)
                if orig != i:
                    dups[k] = orig
            self.dups[e.index] = dups
            self.last_record = b.base + b.n - 1


class ReplicaChecker:
    def __init__(
        self,
        canonical: Callable[[], list[Entry]],
        fail: Callable[[str, str], None],
        checks: frozenset[str] = REPLICA_CHECKS,
    ) -> None:
        self.canonical = canonical
        self.fail = fail
        self.checks = checks
        self.model = _Model()
        self.stats = ReplicaStats()
        self.stream: list[tuple[int, bool, bool, bool]] = []  # the first emission of each slot
        self.emitted: dict[NodeId, int] = {}  # node -> how far into ``stream`` it emitted
        self.leader_acks: list[_LeaderAck] = []  # waiting for the model to cover them
        self.outstanding: dict[NodeId, dict[int, Proposal]] = {}  # submitted, not handed out

    def _fail(self, kind: str, detail: str) -> None:
        if kind in self.checks:
            self.fail(kind, detail)

    def on_restart(self, nid: NodeId, emitted: int = 0) -> None:
        """``nid`` started again; its stream goes on from position ``emitted`` (0, or where
        the snapshot it started from had got to)."""
        self.emitted[nid] = emitted
        self.outstanding[nid] = {}  # what the crashed process held is gone with it

    def on_snapshot(self, nid: NodeId, emitted: int) -> None:
        """``nid`` restored a snapshot: its stream goes on from the snapshot's position."""
        self.emitted[nid] = emitted

    def on_submit(self, nid: NodeId, p: Proposal) -> None:
        self.outstanding.setdefault(nid, {})[id(p)] = p

    def on_idle(self, nid: NodeId) -> None:
        """``nid`` has no Ready left and waits for no fsync: nothing finished may stay."""
        for p in self.outstanding.get(nid, {}).values():
            if p.done:
                self._fail(
                    "handout",
                    f"{nid} finished a submission of {len(p.ids)} records (error {p.error}) "
                    f"but never handed it out",
                )

    def on_ready(self, n: AckedNode, rd: ReplicaReady) -> None:
        """``rd`` was just taken from ``n``: check what it applied, emitted and acked."""
        self.model.read(self.canonical())
        for e, a in rd.applied:
            want = self.model.dups.get(e.index)
            if a is not None and want is not None and a.dups != want:
                self._fail(
                    "dedup",
                    f"{n.id} applied entry {e.index} with duplicates {a.dups}, the committed "
                    f"log says {want} (position -> original record index)",
                )
        self._check_stream(n.id, rd)
        held = self.outstanding.setdefault(n.id, {})
        for p in rd.finished:
            if held.pop(id(p), None) is None:
                self._fail(
                    "handout",
                    f"{n.id} handed out a submission it was not holding (twice, or another's)",
                )
            if p.error is None:
                self._check_acks(n, p)
        self._check_leader_acks()

    def _check_stream(self, nid: NodeId, rd: ReplicaReady) -> None:
        pos = self.emitted.get(nid, 0)
        for em in rd.emitted:
            got = (em.index, em.late, em.early, em.absurd)
            if pos < len(self.stream):
                if self.stream[pos] != got:
                    self._fail(
                        "event_order",
                        f"{nid} emitted (index, late, early, absurd) {got} as event-time "
                        f"record {pos}; another node emitted {self.stream[pos]} there",
                    )
            else:
                self.stream.append(got)
                self.stats.emitted += 1
                self.stats.flagged += em.late or em.early or em.absurd
            pos += 1
        self.emitted[nid] = pos

    def _check_acks(self, n: AckedNode, p: Proposal) -> None:
        model = self.model
        for k, out in enumerate(p.result().outcomes()):
            if out is None:
                continue
            index, term, dup = out
            rid = p.ids[k]
            self.stats.dup_acks += dup
            if p.ack == "leader":
                self.stats.leader_acks += 1
                entry = self._leader_synced(n, rid, index, term)
                if entry is not None:
                    self.leader_acks.append(_LeaderAck(rid, index, term, entry))
                continue
            self.stats.quorum_acks += 1
            stored = model.first.get(rid)
            if stored is None:
                self._fail(
                    "quorum_acks",
                    f"{n.id} acked record {rid.hex()} (index {index}, term {term}, ack=quorum) "
                    f"before it was committed",
                )
            elif stored != index or model.terms[index] != term:
                self._fail(
                    "quorum_acks",
                    f"{n.id} acked record {rid.hex()} at index {index} term {term} (dup={dup});"
                    f" it is stored at {stored} term {model.terms[stored]}",
                )

    def _leader_synced(self, n: AckedNode, rid: bytes, index: int, term: int) -> int | None:
        """The acking node must hold, synced, an entry of ``term`` with ``rid`` at ``index``
        (for a duplicate ack: the original, which is committed, or held the same way). Returns
        that entry's Raft index (None: committed already, nothing to follow)."""
        if self.model.first.get(rid) == index:
            return None
        store = n.store
        hi = store.synced_last_index()
        for i in range(hi, max(store.first_index() - 1, hi - LOOKBACK_ENTRIES), -1):
            at = Index(i)
            b = parse_batch(store.entries(at, Index(i + 1), 1 << 30)[0].data)
            if b is not None and b.base <= index < b.base + b.n:
                if store.synced_term(at) == term and b.ids()[index - b.base] == rid:
                    return i
                break
        self._fail(
            "leader_acks",
            f"{n.id} acked record {rid.hex()} at index {index} term {term} (ack=leader) without "
            f"that entry synced on its disk",
        )
        return None

    def _check_leader_acks(self) -> None:
        """Leader acks whose entry the canonical sequence now covers: that entry committed
        (the record must be there), or another one did (a deposed leader's unreplicated tail:
        the documented loss window of ``ack=leader``)."""
        canonical, keep = self.canonical(), []
        for a in self.leader_acks:
            if a.entry > len(canonical):
                keep.append(a)
                continue
            if canonical[a.entry - 1].term != a.term:
                self.stats.leader_acks_lost += 1
                continue
            held = self.model.ids.get(a.index)
            if held == a.rid and self.model.first[a.rid] != a.index:
                self.stats.leader_acks_dup_slot += 1  # stored, first at another index
            if held != a.rid:
                self._fail(
                    "leader_acks",
                    f"record {a.rid.hex()} acked at index {a.index} term {a.term} (ack=leader) "
                    f"in entry {a.entry}, which committed; index {a.index} holds "
                    f"{held.hex() if held else 'nothing'}",
                )
        self.leader_acks = keep
