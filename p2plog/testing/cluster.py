"""A small hand-driven cluster for Raft scenario tests (etcd's raft_paper_test.go style).

Nothing happens unless the test says so: ``tick``, ``campaign``, ``propose`` queue messages in
``pending``; ``deliver``/``stabilize`` hand them over (in order, optionally filtered or dropped).
Every Ready is persisted and synced at once, so a ``crash`` followed by ``restart`` loses only
process state. ``applied[id]`` records what each node applied, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from random import Random

from p2plog.raft.config import RaftConfig
from p2plog.raft.invariants import check_node
from p2plog.raft.messages import Message
from p2plog.raft.node import RaftNode
from p2plog.raft.types import Entry, Index, NodeId, Role, Snapshot
from p2plog.storage.memory import MemoryStore

MessageFilter = Callable[[Message], bool]


class Cluster:
    def __init__(
        self,
        n: int = 3,
        *,
        config: RaftConfig | None = None,
        seed: int = 0,
        ids: Sequence[str] | None = None,
    ) -> None:
        self.ids = [NodeId(i) for i in ids] if ids else [NodeId(f"n{i + 1}") for i in range(n)]
        self.bootstrap = tuple(self.ids)  # peers.toml: what every node, even a new one, starts from
        self.config = config or RaftConfig()
        self.rng = Random(seed)
        self.stores = {i: MemoryStore() for i in self.ids}
        self.nodes: dict[NodeId, RaftNode] = {}
        self.down: set[NodeId] = set()
        self.isolated: set[NodeId] = set()
        self.pending: list[Message] = []
        self.applied: dict[NodeId, list[Entry]] = {i: [] for i in self.ids}
        self.restored: dict[NodeId, list[Snapshot]] = {i: [] for i in self.ids}
        for i in self.ids:
            self.restart(i)

    # ----------------------------------------------------------------- access

    def __getitem__(self, nid: str) -> RaftNode:
        return self.nodes[NodeId(nid)]

    def leader(self) -> NodeId | None:
        """The live leader with the highest term, if any."""
        leaders = [r for i, r in self.nodes.items() if i not in self.down and r.role is Role.LEADER]
        return max(leaders, key=lambda r: r.term).id if leaders else None

    def data(self, nid: str) -> list[bytes]:
        """Payloads a node applied, without the leader no-ops."""
        return [e.data for e in self.applied[NodeId(nid)] if e.data]

    # ---------------------------------------------------------------- driving

    def process(self, nid: NodeId) -> None:
        """Run the node's Ready loop: persist+sync, queue messages, apply, advance."""
        node = self.nodes[nid]
        store = self.stores[nid]
        while node.has_ready():
            rd = node.ready()
            if rd.snapshot is not None:
                store.install_snapshot(rd.snapshot)
                self.restored[nid].append(rd.snapshot)
            store.append_batch(rd.entries, rd.hard_state, sync=rd.must_sync)
            self.pending.extend(rd.messages)
            self.pending.extend(rd.messages_after_persist)
            self.applied[nid].extend(rd.committed_entries)
            node.advance(rd)
        check_node(node)

    def compact(self, nid: str, data: bytes = b"state") -> Snapshot:
        """Keep a snapshot in place of the node's applied prefix (as a driver does)."""
        node = self.nodes[NodeId(nid)]
        index = node.log.applied
        snap = Snapshot(index, node.log.term(index), data, node.conf_at(index))
        self.stores[NodeId(nid)].compact(snap)
        return snap

    def tick(self, nid: str, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[NodeId(nid)].tick()
            self.process(NodeId(nid))

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for i in self.ids:
                if i not in self.down:
                    self.tick(i)

    def run_ticks(self, times: int, *, drop: Iterable[str] = ()) -> None:
        """Tick every live node once and deliver until quiet, ``times`` times."""
        drop = list(drop)
        for _ in range(times):
            self.tick_all()
            self.stabilize(drop=drop)

    def campaign(self, nid: str, *, pre_vote: bool | None = None) -> None:
        """Make ``nid`` start an election now (etcd's MsgHup); messages stay pending."""
        node = self.nodes[NodeId(nid)]
        use_pre_vote = self.config.pre_vote if pre_vote is None else pre_vote
        node.campaign(pre_vote=use_pre_vote, transfer=False)
        self.process(node.id)

    def elect(self, nid: str) -> None:
        self.campaign(nid)
        self.stabilize()
        assert self.nodes[NodeId(nid)].role is Role.LEADER, f"{nid} failed to become leader"

    def propose(self, nid: str, data: bytes) -> Index | None:
        index = self.nodes[NodeId(nid)].propose(data)
        self.process(NodeId(nid))
        return index

    def step(self, m: Message) -> None:
        """Hand one (possibly crafted) message to its destination."""
        if m.dst in self.down:
            return
        self.nodes[m.dst].step(m)
        self.process(m.dst)

    def take(self, match: MessageFilter | None = None) -> list[Message]:
        """Remove and return the pending messages that ``match`` (all if None)."""
        taken = [m for m in self.pending if match is None or match(m)]
        self.pending = [m for m in self.pending if not (match is None or match(m))]
        return taken

    def deliver(self, match: MessageFilter | None = None, *, drop: Iterable[str] = ()) -> int:
        """Deliver the currently pending messages (one round); messages from or to ``drop``,
        isolated or crashed nodes are lost. Returns how many were delivered."""
        dropped = {NodeId(d) for d in drop} | self.isolated | self.down
        count = 0
        for m in self.take(match):
            if m.src in dropped or m.dst in dropped:
                continue
            self.step(m)
            count += 1
        return count

    def stabilize(self, *, drop: Iterable[str] = (), max_rounds: int = 1000) -> int:
        """Deliver rounds until no message is pending; returns the rounds it took."""
        drop = list(drop)
        for rounds in range(1, max_rounds + 1):
            if not self.pending:
                return rounds - 1
            self.deliver(drop=drop)
        raise AssertionError(f"cluster did not go quiet within {max_rounds} rounds")

    def tell_commit(self, nid: str, *, drop: Iterable[str] = ()) -> None:
        """One leader tick, then deliver until quiet: the leader sends followers a commit index
        they lack on its next tick (or with its next append), not in a message of its own."""
        self.tick(nid)
        self.stabilize(drop=drop)

    # ----------------------------------------------------------------- faults

    def crash(self, nid: str) -> None:
        self.down.add(NodeId(nid))
        self.pending = [m for m in self.pending if m.src != nid]

    def restart(self, nid: str) -> None:
        i = NodeId(nid)
        self.down.discard(i)
        store = self.stores[i]
        self.nodes[i] = RaftNode(
            self.config,
            i,
            self.bootstrap,
            store.hard_state(),
            store,
            Random(self.rng.getrandbits(64)),
        )
        self.applied[i] = []
        self.process(i)

    def add_host(self, nid: str) -> RaftNode:
        """A new host with an empty disk, started (it is not a member until a change adds it)."""
        i = NodeId(nid)
        self.ids.append(i)
        self.stores[i] = MemoryStore()
        self.applied[i], self.restored[i] = [], []
        self.restart(i)
        return self.nodes[i]

    def isolate(self, nid: str) -> None:
        self.isolated.add(NodeId(nid))

    def heal(self) -> None:
        self.isolated.clear()
