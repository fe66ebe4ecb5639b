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

from functools import partial
from typing import TYPE_CHECKING

import trio

from p2plog.record import same_content
from p2plog.runtime.proposals import SubmitResult
from p2plog.runtime.reads import Span, bodies_at

if TYPE_CHECKING:
    from p2plog.runtime.node import Node

GROUP_GAP = 4096  # originals further apart than this many records are read separately
MAX_GROUPS = 16  # reads per submission; duplicates of originals beyond them are not compared


async def mark_conflicts(node: Node, bodies: list[bytes], res: SubmitResult) -> None:
    """Move the duplicates in ``res`` whose original differs from ``bodies[k]`` into
    ``res.conflicts``."""
    dups = {k: a.index for k, a in res.singles.items() if a.dup}
    loop, storage = node.loop, node.storage
    if not dups or loop is None or storage is None:
        return
    applier = loop.applier
    wanted = sorted(set(dups.values()))
    groups: list[list[int]] = [[wanted[0]]]
    for i in wanted[1:]:
        if i - groups[-1][-1] > GROUP_GAP:
            groups.append([])
        groups[-1].append(i)
    originals: dict[int, bytes] = {}
    for g in groups[:MAX_GROUPS]:
        span = Span(g[0], g[-1] + 1, applier.locate(g[0]), applier.applied_index + 1)
        got = await trio.to_thread.run_sync(
            partial(bodies_at, storage, span, set(g)), limiter=node.limiter
        )
        originals.update(got)
    for k, orig in dups.items():
        body = originals.get(orig)
        if body is not None and not same_content(body, bodies[k]):
            del res.singles[k]
            res.conflicts[k] = orig
