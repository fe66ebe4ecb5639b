"""A client's ``submit``: its records checked as the frame is read (``prepare``), and the node's
outcome turned into the ``ack`` reply (``ack_reply``).

Positions in a reply are the client's: ``i`` counts every record it sent, the ones refused by
validation included, while the node submits only the accepted ones. Every accepted record ends
in exactly one of: an ack (in a run, or one-off for a duplicate), a conflict (its id is stored
with other content), or "not acknowledged; retry".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2plog.record import RecordError, uuid_text, validate
from p2plog.replica.proposals import SubmitResult
from p2plog.service.api import NodeApi
from p2plog.wire.client import Submit, add_to_runs


@dataclass(slots=True)
class Prepared:
    """A submit after validation: what stays in memory while it waits for its commit."""

    req: int
    ack: str
    compact: bool
    n: int
    ids: list[bytes]
    bodies: list[bytes]
    errors: list[dict[str, Any]]


def prepare(node: NodeApi, req: Submit, may_submit: bool) -> Prepared:
    """Validate a submit's records as it is read (``record.validate``); none without the right
    to submit (the request is then refused as a whole)."""
    received = node.corrected_now()
    uncertain = node.clock_uncertain()
    p = Prepared(req.req, req.ack, req.compact, len(req.records), [], [], [])
    if not may_submit:
        return p
    for i, r in enumerate(req.records):
        try:
            a = validate(
                r,
                node=node.id,
                clock_offset_ns=req.clock_offset_ns,
                received_ns=received,
                clock_uncertain=uncertain,
            )
        except RecordError as e:
            p.errors.append({"i": i, "error": f"record {i}: {e}"})
            continue
        p.ids.append(a.id)
        p.bodies.append(a.body)
    return p


def ack_reply(p: Prepared, ids: list[bytes], res: SubmitResult) -> dict[str, Any]:
    """The ``ack`` for the accepted records ``ids`` of ``p`` and what the node made of them."""
    acks: list[dict[str, Any]] = []
    errors = p.errors
    # Positions in the submission of the accepted records (identity when none was bad).
    bad = {e["i"] for e in errors}
    where = [i for i in range(p.n) if i not in bad] if bad else range(len(ids))
    runs: list[list[int]] = []
    for p0, m, index0, term in res.runs:
        if p.compact and not bad:
            runs.append([p0, m, index0, term])
            continue
        for j in range(m):
            if p.compact:
                add_to_runs(runs, where[p0 + j], index0 + j, term)
            else:
                acks.append(_ack_json(where[p0 + j], ids[p0 + j], index0 + j, term, False))
    for k, got in res.singles.items():
        acks.append(_ack_json(where[k], got.id, got.index, got.term, got.dup))
    for k, orig in res.conflicts.items():
        i = where[k]
        errors.append(
            {
                "i": i,
                "error": f"record {i}: its id {uuid_text(ids[k])} is stored already, at index "
                f"{orig}, with other content; a retry must resend the same record, and a new "
                f"record needs a new id",
            }
        )
    if res.acked + len(res.conflicts) < len(ids):
        done = set(res.singles) | set(res.conflicts)
        for p0, m, _, _ in res.runs:
            done.update(range(p0, p0 + m))
        for k in range(len(ids)):
            if k not in done:
                i = where[k]
                errors.append({"i": i, "error": f"record {i}: not acknowledged; retry"})
    acks.sort(key=lambda a: int(a["i"]))
    errors.sort(key=lambda e: int(e["i"]))
    reply: dict[str, Any] = {"req": p.req, "acks": acks, "errors": errors}
    if p.compact:
        reply["runs"] = runs
    return reply


def _ack_json(i: int, rid: bytes, index: int, term: int, dup: bool) -> dict[str, Any]:
    return {"i": i, "id": uuid_text(rid), "index": index, "term": term, "dup": dup}
