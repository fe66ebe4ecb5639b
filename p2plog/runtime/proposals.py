"""Waiters for submitted records: one ``Proposal`` per submit, resolved record by record.

A record resolves when its entry is applied (``ack=quorum``), or persisted on the leader
(``ack=leader``), or at once when its id is already committed (a duplicate). When the node
stops leading, every unresolved record fails with ``unavailable``: the entry may still commit
under the next leader, and the client's retry with the same id is then acked as a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from p2plog.record import PER_RECORD_OVERHEAD


@dataclass(slots=True)
class RecordAck:
    id: bytes
    index: int
    term: int
    dup: bool


@dataclass(slots=True)
class Proposal:
    recs: list[tuple[bytes, bytes]]
    ack: str  # "quorum" | "leader"
    results: list[RecordAck | None] = field(default_factory=list)
    error: tuple[str, str] | None = None  # (code, message) for the whole proposal
    remaining: int = 0
    size: int = 0
    done: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.recs)
        self.remaining = len(self.recs)
        self.size = sum(len(b) + PER_RECORD_OVERHEAD for _, b in self.recs)
        if not self.recs:
            self.done.set()

    def resolve(self, pos: int, ack: RecordAck) -> None:
        if self.results[pos] is None and not self.done.is_set():
            self.results[pos] = ack
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()

    def fail(self, code: str, message: str) -> None:
        if not self.done.is_set():
            self.error = (code, message)
            self.done.set()


@dataclass(slots=True)
class Waiter:
    """The proposals waiting on one batch entry: ``slots[k]`` is the submission of the
    record at position ``k``; ``joiners`` are retries of a record already in the batch
    (proposal, position in it, position ``k`` in the batch)."""

    term: int
    base: int
    ids: list[bytes]
    slots: list[tuple[Proposal, int]]
    joiners: list[tuple[Proposal, int, int]]
