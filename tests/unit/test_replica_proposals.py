"""Proposals resolve in runs; every way of reading them back agrees per position."""

from __future__ import annotations

from p2plog.replica.proposals import AckRun, Proposal, RecordAck, SubmitResult
from p2plog.wire.client import add_to_runs


def rid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def acks_of(p: Proposal) -> list[RecordAck | None]:
    """One ack (or None) per position, from the proposal's outcome."""
    return [
        None if o is None else RecordAck(p.ids[k], *o) for k, o in enumerate(p.result().outcomes())
    ]


def proposal(n: int) -> Proposal:
    return Proposal.of([rid(k) for k in range(n)], [b"body"] * n, "quorum")


def test_a_run_resolves_a_slice_with_one_shared_object() -> None:
    p = proposal(5)
    p.resolve(4, RecordAck(rid(4), 3, 1, True))  # a duplicate, acked at once
    p.resolve_run(0, 4, 100, 2)
    assert p.done
    assert p.results[:4] == [AckRun(0, 4, 100, 2)] * 4
    assert acks_of(p) == [
        RecordAck(rid(0), 100, 2, False),
        RecordAck(rid(1), 101, 2, False),
        RecordAck(rid(2), 102, 2, False),
        RecordAck(rid(3), 103, 2, False),
        RecordAck(rid(4), 3, 1, True),
    ]
    res = p.result()
    assert res.runs == [[0, 4, 100, 2]]
    assert res.singles == {4: RecordAck(rid(4), 3, 1, True)}
    assert res.acked == 5
    assert res.outcomes() == [
        (100, 2, False),
        (101, 2, False),
        (102, 2, False),
        (103, 2, False),
        (3, 1, True),
    ]


def test_a_run_over_resolved_positions_fills_only_the_gaps() -> None:
    p = proposal(3)
    p.resolve(1, RecordAck(rid(1), 7, 1, False))  # ack=leader acked it on persist
    p.resolve_run(0, 3, 50, 1)
    assert acks_of(p) == [
        RecordAck(rid(0), 50, 1, False),
        RecordAck(rid(1), 7, 1, False),  # the first outcome stands
        RecordAck(rid(2), 52, 1, False),
    ]
    assert p.result().acked == 3


def test_runs_that_continue_each_other_merge() -> None:
    p = proposal(6)
    p.resolve_run(0, 2, 10, 1)
    p.resolve_run(2, 2, 12, 1)  # the same entry's next records (another slot)
    p.resolve_run(4, 2, 20, 1)  # the next entry, after a gap in indexes
    assert p.result().runs == [[0, 4, 10, 1], [4, 2, 20, 1]]


def test_unresolved_positions_are_not_acked() -> None:
    p = proposal(4)
    p.resolve_run(1, 2, 10, 1)
    assert not p.done
    res = p.result()
    assert res.acked == 2
    assert res.outcomes() == [None, (10, 1, False), (11, 1, False), None]


def test_a_failed_proposal_ignores_later_resolutions() -> None:
    p = proposal(2)
    p.fail("unavailable", "leadership changed")
    p.resolve_run(0, 2, 1, 1)
    assert p.error == ("unavailable", "leadership changed")
    assert p.results == [None, None]


def test_add_to_runs_and_failed_result() -> None:
    runs: list[list[int]] = []
    add_to_runs(runs, 0, 5, 1)
    add_to_runs(runs, 1, 6, 1)
    add_to_runs(runs, 2, 7, 2)  # a new term: a new run
    assert runs == [[0, 2, 5, 1], [2, 1, 7, 2]]
    assert SubmitResult.failed("timeout", "no commit").error == ("timeout", "no commit")
