"""A simulated network: seeded delay, reordering, loss, duplication and partitions.

Reordering falls out of independent random delays; a ``fifo`` network keeps per-link order
instead, as the runtime's TCP websockets do (a run draws one or the other). A partition is a
set of blocked directed links; it applies both when a message is sent and when it would be
delivered, so a partition that starts while a message is in flight drops it, as a real cut
would.
"""

from __future__ import annotations

from random import Random

from p2plog.raft.types import NodeId


class SimNetwork:
    def __init__(
        self,
        rng: Random,
        *,
        delay_min: int,
        delay_max: int,
        drop_p: float,
        dup_p: float,
        fifo: bool,
    ) -> None:
        assert 1 <= delay_min <= delay_max
        self.rng = rng
        self.delay_min = delay_min
        self.delay_max = delay_max
        self.drop_p = drop_p
        self.dup_p = dup_p
        self.fifo = fifo
        self._last_arrival: dict[tuple[NodeId, NodeId], int] = {}
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.partition_desc = "none"

    def transit(self, src: NodeId, dst: NodeId, now: int) -> list[int]:
        """Delays of the copies of one message that will arrive (empty: lost)."""
        if (src, dst) in self.blocked:
            return []
        rng = self.rng
        if self.drop_p and rng.random() < self.drop_p:
            return []
        copies = 2 if self.dup_p and rng.random() < self.dup_p else 1
        delays = []
        for _ in range(copies):
            d = rng.randint(self.delay_min, self.delay_max)
            if rng.random() < 0.01:
                d *= 10  # a rare long stall (GC pause, retransmit)
            if self.fifo:
                # TCP-like link: a message never overtakes an earlier one on the same link.
                at = max(now + d, self._last_arrival.get((src, dst), 0))
                self._last_arrival[(src, dst)] = at
                d = at - now
            delays.append(d)
        return delays

    def can_deliver(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) not in self.blocked

    def heal(self) -> None:
        self.blocked.clear()
        self.partition_desc = "none"

    def partition(self, nodes: list[NodeId], rng: Random) -> None:
        """Cut the network in one of the classic shapes, chosen by ``rng``."""
        self.heal()
        kind = rng.choice(("isolate", "halves", "one_way", "ring", "bridge"))
        n = len(nodes)
        if kind == "isolate":
            x = rng.choice(nodes)
            self._cut([x], [y for y in nodes if y != x])
            self.partition_desc = f"isolate {x}"
        elif kind == "halves":
            shuffled = nodes[:]
            rng.shuffle(shuffled)
            k = rng.randint(1, n - 1)
            self._cut(shuffled[:k], shuffled[k:])
            self.partition_desc = f"halves {sorted(shuffled[:k])} | {sorted(shuffled[k:])}"
        elif kind == "one_way":
            a, b = rng.sample(nodes, 2)
            self.blocked.add((a, b))
            self.partition_desc = f"one-way {a} -> {b} cut"
        elif kind == "ring":
            # Every node reaches only its ring neighbours: with 5 nodes each sees a majority,
            # but no two of those majorities are the same set.
            for i, a in enumerate(nodes):
                for j, b in enumerate(nodes):
                    if a != b and (i - j) % n not in (1, n - 1):
                        self.blocked.add((a, b))
            self.partition_desc = "ring"
        else:
            # Two groups that can only talk through one bridge node.
            bridge = rng.choice(nodes)
            rest = [y for y in nodes if y != bridge]
            rng.shuffle(rest)
            k = len(rest) // 2
            self._cut(rest[:k], rest[k:])
            self.partition_desc = f"bridge {bridge} between {sorted(rest[:k])} | {sorted(rest[k:])}"

    def _cut(self, left: list[NodeId], right: list[NodeId]) -> None:
        for a in left:
            for b in right:
                self.blocked.add((a, b))
                self.blocked.add((b, a))
