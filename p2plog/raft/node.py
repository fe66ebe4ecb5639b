"""RaftNode: the whole Raft protocol as a deterministic value-in/value-out state machine.

Theory of operation (etcd-io/raft's RawNode contract):

1. Input: ``tick()`` (logical time), ``step(msg)`` (a message from a peer), ``propose(data)`` and
   ``transfer_leadership(to)`` (local requests). None of these does I/O; they only queue effects.
2. Output: when ``has_ready()``, ``ready()`` returns a ``Ready``. The driver must
   a. send ``messages`` whenever it likes (they depend on nothing unpersisted: a leader's appends
      may overlap its own fsync, Raft thesis §10.2.1, and PreVote changes no state),
   b. persist ``hard_state``, ``snapshot`` (it replaces the whole log) and then ``entries``
      (``entries[0].index`` at or below the stored last index means "truncate from there
      first"), fsync'd when ``must_sync``,
   c. only then send ``messages_after_persist`` (vote grants, append acks, candidate votes),
   d. restore the state machine from ``snapshot``, apply ``committed_entries`` in order (a
      Ready with a snapshot has none),
   e. call ``advance(ready)``. Nothing else may be called on the node between ``ready()`` and
      ``advance()``.
3. Terms are handled centrally in ``step`` (Raft §5.1) before a role handler sees a message;
   roles are plain functions in ``leader.py`` and ``follower.py``, selected like etcd's ``step``
   function pointer.

The node never reads a clock or global randomness: the election timeout is drawn from the
``random.Random`` it is given, so a seed reproduces every decision.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from random import Random

from p2plog.raft import follower, leader, reconfig
from p2plog.raft.config import RaftConfig
from p2plog.raft.log import RaftLog
from p2plog.raft.membership import ConfChange, bootstrap_conf, is_conf
from p2plog.raft.messages import (
    AppendEntries,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from p2plog.raft.progress import Progress, ProgressState
from p2plog.raft.quorum import vote_result
from p2plog.raft.status import Status, status_of
from p2plog.raft.types import (
    ConfState,
    Entry,
    HardState,
    Index,
    LogReader,
    NodeId,
    Role,
    Snapshot,
    SoftState,
    Term,
)

log = logging.getLogger("p2plog.raft")

_LEADER_KINDS = reconfig.LEADER_KINDS


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of effects; see the module docstring for the order the driver must follow."""

    soft_state: SoftState | None
    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    must_sync: bool
    messages: tuple[Message, ...]
    messages_after_persist: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]


class RaftNode:
    """One Raft participant. See the module docstring for the driving contract."""

    def __init__(
        self,
        config: RaftConfig,
        node_id: NodeId,
        bootstrap: ConfState | Sequence[NodeId],
        hard_state: HardState,
        log_reader: LogReader,
        rng: Random,
    ) -> None:
        if not isinstance(bootstrap, ConfState):
            assert len(set(bootstrap)) == len(bootstrap), f"duplicate voters in {bootstrap}"
            bootstrap = bootstrap_conf(bootstrap)
        self.config = config
        self.id = node_id
        self.rng = rng
        self.log = RaftLog(log_reader, bootstrap)
        self.conf = self.log.confs.current()
        self.voters: tuple[NodeId, ...] = ()
        self.peers: tuple[NodeId, ...] = ()
        self.quorum = 1
        reconfig.set_conf(self, self.conf)
        self.term = hard_state.term
        self.vote = hard_state.vote
        if self.log.last_term() > self.term:
            # The log and the meta file are synced separately, so a crash can keep an entry of
            # a term whose meta write was lost. We never voted in that term (a grant leaves only
            # after its meta is synced), so adopting it with no vote is safe.
            self.term = self.log.last_term()
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.leader_ticks = 0
        self.randomized_election_ticks = 0
        self.votes: dict[str, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        self.lead_transferee: NodeId | None = None
        self.uncommitted: deque[tuple[Index, int]] = deque()
        self.uncommitted_bytes = 0
        self.bcast_pending = False
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self._step_role: Callable[[RaftNode, Message], None] = follower.step_follower
        self._prev_soft = SoftState(self.role, self.leader)
        self._prev_hard = hard_state
        self._outstanding: Ready | None = None
        self.reset_randomized_election_ticks()

    # ----------------------------------------------------------------- inputs

    def tick(self) -> None:
        """Advance logical time by one tick."""
        assert self._outstanding is None, "tick() between ready() and advance()"
        if self.role is Role.LEADER:
            leader.tick_leader(self)
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_election_ticks and self.may_campaign():
                self.election_elapsed = 0
                self.campaign(pre_vote=self.config.pre_vote, transfer=False)

    def propose(self, data: bytes) -> Index | None:
        """Append ``data`` as a new entry; its index, or None when this node can't take it
        now (not leader, transferring leadership, or too many uncommitted bytes)."""
        return self.propose_many((data,))

    def propose_many(self, datas: Sequence[bytes]) -> Index | None:
        """Append several entries at once; the index of the first, or None (none appended)."""
        assert self._outstanding is None, "propose() between ready() and advance()"
        if not datas or not all(datas):
            raise ValueError("proposals must be non-empty bytes (empty data is the leader no-op)")
        if self.role is not Role.LEADER or self.lead_transferee is not None:
            return None
        size = sum(len(d) for d in datas)
        limit = self.config.max_uncommitted_bytes
        if self.uncommitted_bytes and self.uncommitted_bytes + size > limit:
            return None
        if any(is_conf(d) for d in datas):
            raise ValueError("configuration entries go through propose_conf_change()")
        first = Index(self.log.last_index() + 1)
        entries = [Entry(self.term, Index(first + i), d) for i, d in enumerate(datas)]
        leader.append_entries(self, entries)
        return first

    def propose_conf_change(self, change: ConfChange) -> Index:
        """Append the configuration ``change`` makes (``membership.py`` says why it is safe);
        its index. ``ConfChangeRefused`` says why not now and what to do."""
        assert self._outstanding is None, "propose_conf_change() between ready() and advance()"
        return reconfig.propose(self, change)

    def conf_at(self, index: Index) -> ConfState:
        """The configuration in force at ``index`` (what a snapshot taken there carries)."""
        return self.log.confs.at(index)

    def is_voter(self) -> bool:
        return self.id in self.voters

    def may_campaign(self) -> bool:
        return reconfig.may_campaign(self)

    def transfer_leadership(self, to: NodeId) -> bool:
        """Hand leadership to ``to`` (Raft thesis §3.10); False if this node is not leader."""
        assert self._outstanding is None, "transfer_leadership() between ready() and advance()"
        if to not in self.voters:
            raise ValueError(f"cannot transfer leadership to {to!r}: not a voter of {self.voters}")
        if self.role is not Role.LEADER:
            return False
        leader.start_transfer(self, to)
        return True

    def step(self, m: Message) -> None:
        """Handle one message from a peer: terms first (Raft §5.1), then the role."""
        assert self._outstanding is None, "step() between ready() and advance()"
        assert m.dst == self.id, f"{self.id} got a message for {m.dst}"
        if not reconfig.accepts(self, m):
            # Routine once membership changes: a removed server keeps asking for votes.
            log.debug(
                "%s term=%d: dropped %s from non-member %s",
                self.id,
                self.term,
                type(m).__name__,
                m.src,
            )
            return
        if m.term > self.term:
            if isinstance(m, RequestVote) and not m.transfer and self.in_lease():
                # Thesis §4.2.3: a server that heard from a leader within the minimum election
                # timeout disregards votes, so a rejoining node can't depose a healthy leader.
                return
            if isinstance(m, RequestVote) and m.pre_vote:
                follower.handle_vote_request(self, m)  # PreVote never changes our term
                return
            if not (isinstance(m, RequestVoteResponse) and m.pre_vote and m.granted):
                # (A PreVote grant carries the term we would campaign at, not a newer term.)
                self.become_follower(m.term, m.src if isinstance(m, _LEADER_KINDS) else None)
        elif m.term < self.term:
            self._handle_stale(m)
            return
        if isinstance(m, RequestVote):
            follower.handle_vote_request(self, m)
        else:
            self._step_role(self, m)
        reconfig.follow(self)

    def _handle_stale(self, m: Message) -> None:
        if isinstance(m, (AppendEntries, Heartbeat)) and (
            self.config.check_quorum or self.config.pre_vote
        ):
            # A leader of an older term may be stuck: we won't bump our term on its votes (lease),
            # so tell it our term directly (etcd does the same with an empty MsgAppResp).
            self.send(HeartbeatResponse(self.id, m.src, self.term))
        elif isinstance(m, RequestVote) and m.pre_vote:
            self.send(RequestVoteResponse(self.id, m.src, self.term, granted=False, pre_vote=True))

    # ------------------------------------------------------------- role changes

    def in_lease(self) -> bool:
        lease = self.config.check_quorum or self.config.pre_vote
        return (
            lease and self.leader is not None and self.election_elapsed < self.config.election_ticks
        )

    def reset_randomized_election_ticks(self) -> None:
        e = self.config.election_ticks
        self.randomized_election_ticks = self.rng.randrange(e, 2 * e)

    def _reset(self, term: Term) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
            # Answers still waiting for a persist were made in the old term. An append ack
            # among them may claim unstable entries that a newer leader's appends are about
            # to truncate; sent after that truncation's fsync it would tell the old leader
            # "I hold index i" about entries this node no longer has. Dropping is loss, which
            # Raft tolerates.
            self.msgs_after_persist = [m for m in self.msgs_after_persist if m.term >= term]
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_ticks()
        self.votes = {}
        self.progress = {}
        self.lead_transferee = None
        self.uncommitted.clear()
        self.uncommitted_bytes = 0
        self.bcast_pending = False

    def become_follower(self, term: Term, leader_id: NodeId | None) -> None:
        if self.role is not Role.FOLLOWER or term != self.term:
            log.debug("%s term=%d: become follower at term %d", self.id, self.term, term)
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader_id
        self._step_role = follower.step_follower

    def campaign(self, *, pre_vote: bool, transfer: bool) -> None:
        """Start a (pre-)election (Raft §5.2); PreVote first asks without bumping the term."""
        if pre_vote:
            self._reset(self.term)
            self.role = Role.PRE_CANDIDATE
            ask_term = Term(self.term + 1)
            self._step_role = follower.step_candidate
        else:
            self._reset(Term(self.term + 1))
            self.role = Role.CANDIDATE
            self.vote = self.id
            ask_term = self.term
            self._step_role = follower.step_candidate
        log.debug("%s term=%d: campaign (pre_vote=%s)", self.id, self.term, pre_vote)
        self.record_vote(self.id, True)
        if self.role is not Role.LEADER and self.role is not Role.FOLLOWER:
            last = self.log.last_index()
            last_term = self.log.last_term()
            for p in self.voters:
                if p == self.id:
                    continue
                self.send(RequestVote(self.id, p, ask_term, last, last_term, pre_vote, transfer))

    def record_vote(self, voter: NodeId, granted: bool) -> None:
        if voter not in self.voters:
            return
        self.votes[voter] = granted
        result = vote_result(self.votes, len(self.voters))
        if result is True:
            if self.role is Role.PRE_CANDIDATE:
                self.campaign(pre_vote=False, transfer=False)
            else:
                self.become_leader()
        elif result is False:
            self.become_follower(self.term, None)

    def become_leader(self) -> None:
        assert self.role is Role.CANDIDATE
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        self._step_role = leader.step_leader
        nxt = Index(self.log.last_index() + 1)
        self.progress = {v: Progress(nxt) for v in (self.id, *self.peers)}
        me = self.progress[self.id]
        me.match = self.log.stable_last_index()
        me.next = Index(me.match + 1)
        me.state = ProgressState.REPLICATE
        self.leader_ticks = 0  # every voter counts as active for the first election timeout
        log.info("%s term=%d index=%d: became leader", self.id, self.term, self.log.last_index())
        # Raft §8: a new leader commits a no-op of its own term to learn what is committed.
        leader.append_entries(self, [Entry(self.term, nxt, b"")])

    # ----------------------------------------------------------------- output

    def send(self, m: Message) -> None:
        if isinstance(m, _LEADER_KINDS) or (
            isinstance(m, (RequestVote, RequestVoteResponse)) and m.pre_vote
        ):
            self.msgs.append(m)
        else:
            self.msgs_after_persist.append(m)

    def soft_state(self) -> SoftState:
        return SoftState(self.role, self.leader)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote)

    def has_ready(self) -> bool:
        return bool(
            self.msgs
            or self.msgs_after_persist
            or self.log.unstable
            or self.log.pending_snapshot is not None
            or self.log.has_next_committed()
            or self.soft_state() != self._prev_soft
            or self.hard_state() != self._prev_hard
        )

    def ready(self) -> Ready:
        assert self._outstanding is None, "ready() called twice without advance()"
        if self.role is Role.LEADER and self.bcast_pending:
            leader.bcast_append(self)
        soft = self.soft_state()
        hard = self.hard_state()
        hard_changed = hard != self._prev_hard
        entries = tuple(self.log.unstable)
        snap = self.log.pending_snapshot
        early, late = tuple(self.msgs), tuple(self.msgs_after_persist)
        if hard_changed and self.role is Role.LEADER:
            # A leader elected in this very Ready (a sole voter wins its own election at
            # once): its appends must wait for its term and vote to be durable, or a crash
            # could let it win the same term again and send other entries at the same
            # indexes (two entries with one index and term: Log Matching broken).
            early, late = (), early + late
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard_changed else None,
            snapshot=snap,
            entries=entries,
            must_sync=hard_changed or bool(entries) or snap is not None,
            messages=early,
            messages_after_persist=late,
            committed_entries=tuple(self.log.next_committed(self.config.max_apply_bytes))
            if self.log.has_next_committed()
            else (),
        )
        self.msgs = []
        self.msgs_after_persist = []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything in ``rd``."""
        assert rd is self._outstanding, "advance() with a Ready that is not the outstanding one"
        self._outstanding = None
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            self.log.stable_snapshot_to(rd.snapshot)
        if rd.entries:
            self.log.stable_to(rd.entries[-1].index)
        if rd.committed_entries:
            self.log.applied = rd.committed_entries[-1].index
        if self.role is Role.LEADER and rd.entries:
            # The leader's own vote for its entries counts only once they are on its disk.
            leader.self_persisted(self, self.log.stable_last_index())
            reconfig.follow(self)

    # ----------------------------------------------------------------- status

    def status(self) -> Status:
        return status_of(self)
