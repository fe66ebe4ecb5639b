"""Resolving the proposals that wait on batch entries: when, and with what index.

``ack=quorum`` records resolve when their entry is applied (committed: on a majority's disk);
``ack=leader`` records when their entry is on the leader's own disk. A duplicate resolves with
the index its id was first stored at. Every function appends the proposals it finishes to
``finished``; the replica hands them out in its next Ready.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2plog.raft.types import Entry
from p2plog.replica.proposals import Proposal, RecordAck, Waiter
from p2plog.state.applier import Applied, Applier


def fail(w: Waiter, code: str, message: str, finished: list[Proposal]) -> None:
    for p, *_ in w.slots:
        if p.fail(code, message):
            finished.append(p)
    for p, _, _ in w.joiners:
        if p.fail(code, message):
            finished.append(p)


def ack_persisted(
    waiters: dict[int, Waiter], entries: Sequence[Entry], finished: list[Proposal]
) -> None:
    """``entries`` are on the leader's disk: resolve their ``ack=leader`` records."""
    for e in entries:
        w = waiters.get(e.index)
        if w is None or w.term != e.term:
            continue
        for p, pos0, k0, n in w.slots:
            if p.ack == "leader" and p.resolve_run(pos0, n, w.base + k0, e.term):
                finished.append(p)
        for p, pos, k in w.joiners:
            if p.ack == "leader" and p.resolve(pos, RecordAck(w.ids[k], w.base + k, e.term, True)):
                finished.append(p)


def ack_applied(w: Waiter, a: Applied, applier: Applier, finished: list[Proposal]) -> None:
    """The waiter's entry was applied as ``a``: every record is acked, with the index the
    applier decided (its own, or the original of a duplicate)."""
    ids, base, term, dups = w.ids, w.base, a.term, a.dups
    term_of = applier.term_of
    for p, pos0, k0, n in w.slots:
        if not dups:
            if p.resolve_run(pos0, n, base + k0, term):
                finished.append(p)
            continue
        for j in range(n):
            k = k0 + j
            orig = dups.get(k)
            if orig is None:
                ack = RecordAck(ids[k], base + k, term, False)
            else:
                ack = RecordAck(ids[k], orig, term_of(orig), True)
            if p.resolve(pos0 + j, ack):
                finished.append(p)
    for p, pos, k in w.joiners:
        # A joiner is a duplicate of the copy another position is storing: acked dup, so the
        # node compares the two (runtime.dup_check).
        orig = dups.get(k, base + k)
        if p.resolve(pos, RecordAck(ids[k], orig, term_of(orig), True)):
            finished.append(p)
