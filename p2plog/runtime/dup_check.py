"""Retries versus reused ids: a duplicate is acked only if it holds the same record.

A record id is made by the client so that a retry is stored once. An id that comes again with
other content is not a retry but a client bug (ids reused across records), and acking it
``dup=true`` would tell the client that record was stored when it was not. So the leader reads
the original of every duplicate of a submission back from its log (they are all applied by the
time the submission resolves) and compares what the producer sent (``record.same_content``);
a mismatch becomes a per-record refusal naming the index the id is stored at.

Only submissions with duplicates pay for this: one bounded read per run of nearby originals,
in the storage worker thread, never on the Raft loop, and at most ``MAX_GROUPS`` such reads
per submission (a submission of ids whose originals lie scattered over the whole log would
otherwise cost a read per record, each taking its turn with the appends): duplicates of
originals further out are acked as duplicates unchecked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from p2plog.record import same_content
from p2plog.replica.proposals import SubmitResult
from p2plog.state.applier import Applier
from p2plog.state.event_feed import IsDup
from p2plog.state.scans import ScanLog, Span, bodies_at

GROUP_GAP = 4096  # originals further apart than this many records are read separately
MAX_GROUPS = 16  # reads per submission; duplicates of originals beyond them are not compared


R = TypeVar("R")
ReadLog = Callable[[Callable[[ScanLog, IsDup], R]], Awaitable[R]]


async def mark_conflicts(
    applied: Applier,
    read_log: Callable[[Callable[[ScanLog, IsDup], dict[int, bytes]]], Awaitable[dict[int, bytes]]],
    bodies: list[bytes],
    res: SubmitResult,
) -> None:
    """Move the duplicates in ``res`` whose original differs from ``bodies[k]`` into
    ``res.conflicts`` (``read_log`` runs a read in the storage worker thread)."""
    dups = {k: a.index for k, a in res.singles.items() if a.dup}
    if not dups:
        return
    wanted = sorted(set(dups.values()))
    groups: list[list[int]] = [[wanted[0]]]
    for i in wanted[1:]:
        if i - groups[-1][-1] > GROUP_GAP:
            groups.append([])
        groups[-1].append(i)
    originals: dict[int, bytes] = {}
    for g in groups[:MAX_GROUPS]:
        span = Span(g[0], g[-1] + 1, applied.locate(g[0]), applied.applied_index + 1)
        originals.update(await read_log(partial(_bodies_at, span, set(g))))
    for k, orig in dups.items():
        body = originals.get(orig)
        if body is not None and not same_content(body, bodies[k]):
            del res.singles[k]
            res.conflicts[k] = orig


def _bodies_at(span: Span, want: set[int], log: ScanLog, _dup: IsDup) -> dict[int, bytes]:
    return bodies_at(log, span, want)
