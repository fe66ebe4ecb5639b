"""Waiters for submitted records: one ``Proposal`` per submit, resolved in runs.

A record resolves when its entry is applied (``ack=quorum``), or persisted on the leader
(``ack=leader``), or at once when its id is already committed (a duplicate). When the node
stops leading, every unresolved record fails with ``unavailable``: the entry may still commit
under the next leader, and the client's retry with the same id is then acked as a duplicate.

Acks are kept as runs, not an object per record: the records of one submission mostly land
side by side in one entry, so "positions ``pos0 .. pos0 + n - 1`` stored at ``index0 ..`` in
``term``" is one ``AckRun`` (the client wire's compact form: ``wire.client.add_to_runs``).
Duplicates and other one-off outcomes are a ``RecordAck`` each.

Pure: a proposal only records its outcome (``done``); the replica hands finished proposals out
in its Ready, and the runtime calls ``wake`` for each (to set the event its submitter waits on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from p2plog.record import PER_RECORD_OVERHEAD
from p2plog.wire.client import add_to_runs


@dataclass(slots=True)
class RecordAck:
    id: bytes
    index: int
    term: int
    dup: bool


@dataclass(frozen=True, slots=True)
class AckRun:
    """Positions ``pos0 .. pos0 + n - 1`` stored fresh at ``index0 ..`` in ``term``."""

    pos0: int
    n: int
    index0: int
    term: int


Outcome = RecordAck | AckRun | None


@dataclass(slots=True)
class SubmitResult:
    """How a submission of ``n`` records went: ``runs`` ([pos0, count, index0, term]) of
    fresh records, ``singles`` (position -> ack) for the rest that were acked, or one
    ``error`` (code, message) for the whole submission. A position in neither: not acked.
    ``conflicts`` (position -> record index): the id is stored already, with other content
    (not stored; the client reused an id)."""

    n: int
    runs: list[list[int]] = field(default_factory=list)
    singles: dict[int, RecordAck] = field(default_factory=dict)
    error: tuple[str, str] | None = None
    conflicts: dict[int, int] = field(default_factory=dict)

    @classmethod
    def failed(cls, code: str, message: str) -> SubmitResult:
        return cls(0, error=(code, message))

    @property
    def acked(self) -> int:
        return sum(r[1] for r in self.runs) + len(self.singles)

    def outcomes(self) -> list[tuple[int, int, bool] | None]:
        """(index, term, dup) per position, or None: one object per record, for the paths
        that need them (per-record replies, forwards)."""
        out: list[tuple[int, int, bool] | None] = [None] * self.n
        for p0, m, index0, term in self.runs:
            out[p0 : p0 + m] = [(index0 + j, term, False) for j in range(m)]
        for k, a in self.singles.items():
            out[k] = (a.index, a.term, a.dup)
        return out


def _no_wake() -> None:
    pass


class Proposal:
    """One submission's records (``ids[k]``, ``bodies[k]``) on their way through the leader.

    ``resolve``, ``resolve_run`` and ``fail`` return True when that call finished the proposal,
    so the replica hands each finished proposal out exactly once."""

    __slots__ = ("ack", "bodies", "done", "error", "ids", "remaining", "results", "size", "wake")

    def __init__(
        self, recs: list[tuple[bytes, bytes]], ack: str, wake: Callable[[], None] = _no_wake
    ) -> None:
        self._init([r for r, _ in recs], [b for _, b in recs], ack, wake)

    @classmethod
    def of(
        cls, ids: list[bytes], bodies: list[bytes], ack: str, wake: Callable[[], None] = _no_wake
    ) -> Proposal:
        p = cls.__new__(cls)
        p._init(ids, bodies, ack, wake)
        return p

    def _init(
        self, ids: list[bytes], bodies: list[bytes], ack: str, wake: Callable[[], None]
    ) -> None:
        assert len(ids) == len(bodies)
        self.ids = ids
        self.bodies = bodies
        self.ack = ack  # "quorum" | "leader"
        self.results: list[Outcome] = [None] * len(ids)
        self.error: tuple[str, str] | None = None  # (code, message) for the whole proposal
        self.remaining = len(ids)
        self.size = sum(map(len, bodies)) + PER_RECORD_OVERHEAD * len(ids)
        self.done = not ids
        self.wake = wake  # called by the runtime once the replica hands the proposal out

    def resolve(self, pos: int, ack: RecordAck) -> bool:
        if self.results[pos] is None and not self.done:
            self.results[pos] = ack
            self.remaining -= 1
            if self.remaining == 0:
                self.done = True
                return True
        return False

    def resolve_run(self, pos0: int, n: int, index0: int, term: int) -> bool:
        """Positions ``pos0 ..`` stored fresh at ``index0 ..``: one slice assignment when none
        of them has resolved yet (the usual case), else one by one."""
        if self.done:
            return False
        results = self.results
        if results[pos0 : pos0 + n].count(None) == n:
            results[pos0 : pos0 + n] = [AckRun(pos0, n, index0, term)] * n
            self.remaining -= n
        else:
            ids = self.ids
            for j in range(n):
                if results[pos0 + j] is None:
                    results[pos0 + j] = RecordAck(ids[pos0 + j], index0 + j, term, False)
                    self.remaining -= 1
        if self.remaining == 0:
            self.done = True
            return True
        return False

    def fail(self, code: str, message: str) -> bool:
        if self.done:
            return False
        self.error = (code, message)
        self.done = True
        return True

    def result(self) -> SubmitResult:
        """The outcome as runs and singles, walking the results a run at a time."""
        res = SubmitResult(len(self.results))
        results, k, n = self.results, 0, len(self.results)
        while k < n:
            r = results[k]
            if isinstance(r, AckRun):
                add_to_runs(res.runs, k, r.index0, r.term, r.n)  # an AckRun starts at its pos0
                k += r.n
                continue
            if r is not None:
                res.singles[k] = r
            k += 1
        return res


@dataclass(slots=True)
class Waiter:
    """The proposals waiting on one batch entry: ``slots`` are runs ``(proposal, pos0, k0,
    n)``: the proposal's positions ``pos0 ..`` are the batch's positions ``k0 ..``;
    ``joiners`` are retries of a record already in the batch (proposal, position in it,
    position ``k`` in the batch)."""

    term: int
    base: int
    ids: list[bytes]
    slots: list[tuple[Proposal, int, int, int]]
    joiners: list[tuple[Proposal, int, int]]
    positions: dict[bytes, int] = field(default_factory=dict)  # see position_of

    def position(self, rid: bytes) -> int:
        return position_of(self.ids, self.positions, rid)


def position_of(ids: list[bytes], pos: dict[bytes, int], rid: bytes) -> int:
    """The position of ``rid`` in ``ids`` (distinct ids, possibly still growing), from the map
    ``pos`` that is built, and brought up to date, only when a retry joins a batch: rare, and
    a retried 65k-record submission must not scan the list per record."""
    for k in range(len(pos), len(ids)):
        pos[ids[k]] = k
    return pos[rid]
