"""The replica: everything a node does with the replicated log, as one sans-I/O state machine.

``Replica`` wraps the ``RaftNode`` with what p2plog adds around Raft: intake on the leader
(gatekeeping ids against the dedup window and the entries in flight, packing batches, record
numbering, HLC ingest time), the waiters that turn commits into acks, the applier (dedup,
identical on every node), the leader's time ticks and the event-time stream. Like the Raft
node it does no I/O and reads no clock: input comes through ``tick``, ``step``, ``submit`` and
``transfer`` (and the ``wall_ns`` it is given, the runtime's corrected clock or the simulator's
virtual one); output comes out of ``ready``. The runtime (``runtime.raft_loop``) and the
simulator (``testing.sim_cluster``) drive it the same way::

    rd = replica.ready()
    send rd.messages; persist rd.entries / rd.hard_state (fsync when rd.must_sync);
    send rd.messages_after_persist; hand out rd.finished, rd.applied, rd.emitted
    replica.advance(rd)

``rd.finished`` may be handed out at once, even before ``rd.entries`` are persisted: an
``ack=quorum`` record is finished when its entry is applied (it is committed, so on a
majority's disk), an ``ack=leader`` record only in the Ready after the one that persisted its
entry (``advance`` resolves it). ``rd.applied`` and ``rd.emitted`` are the entries applied and
the event-time records emitted, in order; every node emits the same ones.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from random import Random
from typing import Any, Protocol

from p2plog.clock.hlc import HLC
from p2plog.order.reorder import Emitted, ReorderBuffer
from p2plog.raft.config import RaftConfig
from p2plog.raft.membership import ConfChange
from p2plog.raft.messages import InstallSnapshot, Message
from p2plog.raft.node import RaftNode, Ready
from p2plog.raft.status import Status
from p2plog.raft.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    LogReader,
    NodeId,
    Role,
    Snapshot,
    Term,
)
from p2plog.replica import acks, snapshot
from p2plog.replica.intake import Draft, pack
from p2plog.replica.proposals import Proposal, Waiter
from p2plog.state.applier import Applied, Applier
from p2plog.state.entry import BatchRef, batch_data_of, entry_ingest_ts, parse_batch, tick_data
from p2plog.state.event_feed import feed_applied

log = logging.getLogger("p2plog.replica")

AppliedItems = list[tuple[Entry, Applied | None]]
LEADER_CHANGED = "the leader changed before the record committed"


@dataclass(frozen=True, slots=True)
class ReplicaReady:
    """Raft's Ready plus what the replica decided: see the module docstring."""

    raft: Ready
    finished: list[Proposal]
    applied: AppliedItems
    emitted: list[Emitted[BatchRef]]

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self.raft.entries

    @property
    def hard_state(self) -> HardState | None:
        return self.raft.hard_state

    @property
    def must_sync(self) -> bool:
        return self.raft.must_sync

    @property
    def messages(self) -> tuple[Message, ...]:
        return self.raft.messages

    @property
    def messages_after_persist(self) -> tuple[Message, ...]:
        return self.raft.messages_after_persist


class Store(LogReader, Protocol):
    """What the replica reads of the node's storage (``SegmentedLog``, ``MemoryStore``)."""

    def hard_state(self) -> HardState: ...


class Replica:
    def __init__(
        self,
        *,
        node_id: NodeId,
        voters: Sequence[NodeId] | ConfState,
        config: RaftConfig,
        store: Store,
        applier: Applier,
        events: ReorderBuffer[BatchRef],
        rng: Random,
        wall_ns: Callable[[], int],
        time_tick_ns: int,
    ) -> None:
        self.id = node_id
        self.raft = RaftNode(config, node_id, voters, store.hard_state(), store, rng)
        self.applier = applier
        self.events = events
        self.wall_ns = wall_ns
        self.time_tick_ns = time_tick_ns
        self.hlc = HLC()
        self.waiters: dict[int, Waiter] = {}  # Raft index -> the batch proposed there
        self.pending_ids: dict[bytes, int] = {}  # id -> Raft index of the entry carrying it
        self.want_events = True  # False: the stream's state moves, but nothing is emitted
        self.disk_full = False  # the driver says so; the leader then refuses new records
        self.failed: str | None = None  # the driver's storage failed: no more writes
        self._finished: list[Proposal] = []
        self._next_record = 0
        self._next_record_term = -1
        self._last_leader_ns = 0
        self._incoming: tuple[Snapshot, snapshot.ReplicaState] | None = None
        if self.raft.log.applied:  # the log starts after a snapshot: start from its state
            self._restore(store.snapshot())
        self._observe_ingest(self._log_tail())

    # ----------------------------------------------------------------- input

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def leader(self) -> NodeId | None:
        return self.raft.leader

    def status(self) -> Status:
        return self.raft.status()

    def tick(self) -> None:
        self.raft.tick()
        self._maybe_time_tick()

    def step(self, m: Message) -> None:
        """Take one message from a peer. A snapshot is decoded (and checked) here, before
        Raft may persist it: ``snapshot.SnapshotError`` refuses it and changes nothing."""
        s = m.snapshot if isinstance(m, InstallSnapshot) else None
        if s is not None and m.term >= self.raft.term and s.index > self.raft.log.committed:
            # Only one that may be taken is decoded (a large one costs the loop time).
            state = snapshot.decode(s.data)
            if state.applier["applied_index"] != s.index:
                raise snapshot.SnapshotError(
                    f"a snapshot at {s.index} holds the state at {state.applier['applied_index']}"
                )
            self._incoming = (s, state)
        self.raft.step(m)
        if self._incoming is not None and self.raft.log.pending_snapshot is not self._incoming[0]:
            self._incoming = None  # not taken (stale, or only moved the commit index)

    def snapshot(self) -> Snapshot:
        """This replica's state at its applied index, for the driver to keep in place of the
        entries up to there (``compact``). Not between ``ready`` and ``advance``."""
        index, term, conf, captured = self.capture()
        return Snapshot(index, term, snapshot.dumps(captured), conf)

    def capture(self) -> tuple[Index, Term, ConfState, dict[str, Any]]:
        """``snapshot`` before the encoding (which the driver may do in another thread)."""
        index = self.raft.log.applied
        assert self.applier.applied_index == index, "snapshot() between ready() and advance()"
        captured = snapshot.capture(self.applier, self.events, self.hlc.last_ns)
        return index, self.raft.log.term(index), self.raft.conf_at(index), captured

    def _restore(self, snap: Snapshot) -> None:
        inc = self._incoming
        state = inc[1] if inc is not None and inc[0] is snap else snapshot.decode(snap.data)
        self._incoming = None
        snapshot.restore(state, self.applier, self.events)
        self.hlc.update(state.hlc_ns, self.wall_ns())
        log.info("%s: restored the state at index %d from a snapshot", self.id, snap.index)

    def propose_conf_change(self, change: ConfChange) -> Index:
        """Propose a membership change (``raft.membership``); the index of its entry. The
        change is in force on this node at once; the caller waits for that index to apply
        to know it committed. ``ConfChangeRefused`` says why not now."""
        return self.raft.propose_conf_change(change)

    def transfer(self, to: NodeId | None) -> None:
        """Hand leadership to ``to`` (None: the most up-to-date follower)."""
        st = self.raft.status()
        if st.role is not Role.LEADER:
            return
        if to is None:
            voters = st.conf.voters
            followers = {k: v for k, v in st.progress.items() if k != self.id and k in voters}
            if not followers:
                return
            to = max(followers, key=lambda k: (followers[k].match, k))
        log.info("%s term=%d: transferring leadership to %s", self.id, st.term, to)
        self.raft.transfer_leadership(to)

    def submit(self, props: list[Proposal]) -> None:
        """One round's submissions: every record is gatekept, the fresh ones are proposed as
        one batch entry (several when over the entry bounds). Refusals finish at once."""
        code = self._refusal()
        if code is not None:
            for p in props:
                self._fail(p, *code)
            return
        drafts = pack(props, self.applier, self.pending_ids, self.waiters, self._finished)
        if drafts:
            self._propose(drafts, props)

    def stop(self, reason: str) -> list[Proposal]:
        """The driver's storage failed: no more writes. Fails what waits; returns it."""
        self.failed = reason
        self._fail_all("storage_failed", reason)
        out, self._finished = self._finished, []
        return out

    def _refusal(self) -> tuple[str, str] | None:
        if self.failed is not None:
            return ("storage_failed", self.failed)
        if self.raft.role is not Role.LEADER:
            return ("not_leader", self.raft.leader or "")
        if self.disk_full:
            return ("disk_full", "the leader's disk is full; retry when space returns")
        return None

    def _propose(self, drafts: list[Draft], props: list[Proposal]) -> None:
        ts = self._ingest_ts()
        self._last_leader_ns = self.wall_ns()
        nxt = self._next_record_index()
        datas = []
        for d in drafts:
            d.base = nxt
            datas.append(batch_data_of(ts, nxt, d.ids, d.bodies))
            nxt += len(d.ids)
        first = self.raft.propose_many(datas)
        if first is None:
            for p in props:
                self._fail(p, "overloaded", "too many uncommitted records on the leader; retry")
            return
        self._next_record = nxt
        term = self.raft.term
        for k, d in enumerate(drafts):
            self.waiters[first + k] = d.waiter(term)
            self.pending_ids.update(zip(d.ids, repeat(first + k)))

    def _next_record_index(self) -> int:
        """One past the last record in this leader's log: the base of its next batch. Found
        once per term by reading back from the end of the log to the applied index (past
        no-ops and ticks); the applier knows the applied part."""
        if self._next_record_term == self.raft.term:
            return self._next_record
        nxt = self.applier.record_index + 1
        e = self._last_entry(lambda e: parse_batch(e.data) is not None, self.applier.applied_index)
        last = parse_batch(e.data) if e is not None else None  # past what the applier knows
        if last is not None:
            nxt = last.base + last.n
        self._next_record, self._next_record_term = nxt, self.raft.term
        return nxt

    def _maybe_time_tick(self) -> None:
        """While the event-time buffer holds records and no new ones come, the leader commits
        its time now and then, so every node's watermark moves and the buffer drains."""
        if self.raft.role is not Role.LEADER or self.events.depth == 0:
            return
        now = self.wall_ns()
        if now - self._last_leader_ns < self.time_tick_ns or self._refusal() is not None:
            return
        self.raft.propose(tick_data(self._ingest_ts()))
        self._last_leader_ns = now

    def _ingest_ts(self) -> int:
        """Leader ingest time from the hybrid logical clock: unique, increasing across leaders
        (every appended entry's ingest time advanced the HLC), close to corrected time."""
        return self.hlc.now(self.wall_ns())

    # ---------------------------------------------------------------- output

    def has_ready(self) -> bool:
        return bool(self._finished) or self.raft.has_ready()

    def ready(self) -> ReplicaReady:
        rd = self.raft.ready()
        self._observe_ingest(rd.entries)
        applied = self._apply(rd.committed_entries) if rd.committed_entries else []
        emitted = self._feed(applied) if applied else []
        if rd.soft_state is not None:
            log.info(
                "%s term=%d index=%d: role %s, leader %s",
                self.id,
                self.raft.term,
                self.raft.log.last_index(),
                rd.soft_state.role.value,
                rd.soft_state.leader,
            )
            if rd.soft_state.role is not Role.LEADER and self.waiters:
                self._fail_all("unavailable", "leadership changed; retry (the same ids dedup)")
        finished, self._finished = self._finished, []
        return ReplicaReady(rd, finished, applied, emitted)

    def advance(self, rd: ReplicaReady) -> None:
        """The driver persisted ``rd.entries`` and sent everything in ``rd``."""
        if rd.raft.snapshot is not None:
            self._restore(rd.raft.snapshot)
        if rd.entries and self.raft.role is Role.LEADER:
            acks.ack_persisted(self.waiters, rd.entries, self._finished)
        self.raft.advance(rd.raft)

    def _last_entry(self, want: Callable[[Entry], bool], after: int) -> Entry | None:
        """The last entry of the log past index ``after`` for which ``want`` holds, read back
        from the end a few entries at a time (one read of a long tail could be large)."""
        after = max(after, self.raft.log.first_index() - 1)
        hi = self.raft.log.last_index() + 1
        while hi > after + 1:
            lo = max(after + 1, hi - 16)
            for e in reversed(self.raft.log.entries(Index(lo), Index(hi), 1 << 62)):
                if want(e):
                    return e
            hi = lo
        return None

    def _log_tail(self) -> list[Entry]:
        """The last entry of the stored log that carries an ingest time (looking back at most
        64): after a restart the HLC must start past the newest ingest time in the log, or a
        leader with a slow clock would stamp times that go back (ingest time grows with the
        record index: ``state.time_index`` seeks by it)."""
        after = max(0, self.raft.log.last_index() - 64)
        e = self._last_entry(lambda e: entry_ingest_ts(e.data) is not None, after)
        return [] if e is None else [e]

    def _observe_ingest(self, entries: Sequence[Entry]) -> None:
        for e in reversed(entries):
            ts = entry_ingest_ts(e.data)
            if ts is not None:
                self.hlc.update(ts, self.wall_ns())
                return

    def _apply(self, entries: Sequence[Entry]) -> AppliedItems:
        out: AppliedItems = []
        pending, finished = self.pending_ids, self._finished
        for e in entries:
            a = self.applier.apply(e)
            out.append((e, a))
            w = self.waiters.pop(e.index, None)
            if w is None:
                continue
            deque(map(pending.pop, w.ids, repeat(None)), maxlen=0)
            if a is None or e.term != w.term:
                acks.fail(w, "unavailable", LEADER_CHANGED, finished)
            else:
                acks.ack_applied(w, a, self.applier, finished)
        return out

    def _feed(self, items: AppliedItems) -> list[Emitted[BatchRef]]:
        buf = self.events
        buf.discard_output = not self.want_events
        out: list[Emitted[BatchRef]] = []
        for e, a in items:
            out += feed_applied(buf, e, a)
        return out

    def _fail(self, p: Proposal, code: str, message: str) -> None:
        if p.fail(code, message):
            self._finished.append(p)

    def _fail_all(self, code: str, message: str) -> None:
        for w in self.waiters.values():
            acks.fail(w, code, message, self._finished)
        self.waiters.clear()
        self.pending_ids.clear()
