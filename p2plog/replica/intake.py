"""Intake on the leader: one round's submissions, gatekept and packed into batch entries.

Every record id is checked, in this order, against the dedup window (committed already: acked
at once as a duplicate with its original index), the ids of entries still in flight (the
retry joins that entry's waiter and is acked when it commits) and the batches of this round
(joins that batch). What is left is fresh, and goes into batches of at most
``MAX_ENTRY_BYTES`` / ``MAX_ENTRY_RECORDS``: one Raft entry each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat

from p2plog.record import PER_RECORD_OVERHEAD
from p2plog.replica.proposals import Proposal, RecordAck, Waiter, position_of
from p2plog.state.applier import Applier
from p2plog.state.entry import MAX_ENTRY_RECORDS

MAX_ENTRY_BYTES = 1 << 20  # a round's submissions are split into entries of about this size


@dataclass(slots=True)
class Draft:
    """A batch entry being assembled from one round's proposals."""

    ids: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    slots: list[tuple[Proposal, int, int, int]] = field(default_factory=list)
    joiners: list[tuple[Proposal, int, int]] = field(default_factory=list)
    size: int = 0
    base: int = 0
    positions: dict[bytes, int] = field(default_factory=dict)  # see position_of

    def position(self, rid: bytes) -> int:
        return position_of(self.ids, self.positions, rid)

    def add_one(self, p: Proposal, pos: int) -> None:
        k = len(self.ids)
        body = p.bodies[pos]
        self.ids.append(p.ids[pos])
        self.bodies.append(body)
        self.size += len(body) + PER_RECORD_OVERHEAD
        last = self.slots[-1] if self.slots else None
        if (
            last is not None
            and last[0] is p
            and last[1] + last[3] == pos
            and last[2] + last[3] == k
        ):
            self.slots[-1] = (p, last[1], last[2], last[3] + 1)
        else:
            self.slots.append((p, pos, k, 1))

    def add_all(self, p: Proposal) -> None:
        self.slots.append((p, 0, len(self.ids), len(p.ids)))
        self.ids += p.ids
        self.bodies += p.bodies
        self.size += p.size

    def waiter(self, term: int) -> Waiter:
        return Waiter(term, self.base, self.ids, self.slots, self.joiners, self.positions)


def pack(
    props: list[Proposal],
    applier: Applier,
    pending: Mapping[bytes, int],
    waiters: Mapping[int, Waiter],
    finished: list[Proposal],
) -> list[Draft]:
    """The fresh records of ``props`` as drafts (none empty); duplicates of committed ids are
    acked here (a proposal they finish goes to ``finished``), retries of ids in flight join
    the waiter or draft that carries them."""
    window = applier.window
    drafts: list[Draft] = [Draft()]
    here: dict[bytes, int] = {}  # id -> number of the draft (this round) that carries it
    for p in props:
        cur = drafts[-1]
        if cur.ids and (
            cur.size + p.size > MAX_ENTRY_BYTES or len(cur.ids) + len(p.ids) > MAX_ENTRY_RECORDS
        ):
            cur = Draft()
            drafts.append(cur)
        ids = p.ids
        if (
            window.isdisjoint(ids)
            and pending.keys().isdisjoint(ids)
            and here.keys().isdisjoint(ids)
            and len(set(ids)) == len(ids)
        ):  # all fresh, the usual case: the whole submission in a few C-level passes
            here.update(zip(ids, repeat(len(drafts) - 1)))
            cur.add_all(p)
            continue
        for pos, rid in enumerate(ids):
            orig = window.get(rid)
            if orig is not None:
                applier.dedup_hits += 1
                if p.resolve(pos, RecordAck(rid, orig, applier.term_of(orig), True)):
                    finished.append(p)
                continue
            pend = pending.get(rid)
            if pend is not None:
                w = waiters[pend]
                w.joiners.append((p, pos, w.position(rid)))
                continue
            same = here.get(rid)
            if same is not None:
                d = drafts[same]
                d.joiners.append((p, pos, d.position(rid)))
                continue
            here[rid] = len(drafts) - 1
            cur.add_one(p, pos)
    return [d for d in drafts if d.ids]
