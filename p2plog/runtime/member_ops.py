"""The ``member`` commands on a node (``wire.client.Member``): list the configuration, or make
one change through the Raft loop and answer once it committed.

A request is answered by the leader only (``not_leader`` elsewhere: the client tries the
next node). Retrying a change is safe: one already in effect (the learner already added at
that address, the node already a voter, already gone) is answered as done, not refused.
``add`` without ``learner`` adds a learner, waits until it holds what is committed, then
promotes it: a voter that must first catch up would stall commits meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from p2plog.config import split_address
from p2plog.errors import MemberError
from p2plog.raft.membership import PROMOTE_MAX_LAG, ConfChange, ConfOp
from p2plog.raft.status import Status
from p2plog.raft.types import ConfState, NodeId, Role
from p2plog.runtime.raft_loop import ConfRequest, RaftLoop
from p2plog.wire.client import Member

COMMIT_TIMEOUT_S = 10.0  # a change a majority does not take by then: answered "timeout"
CATCH_UP_TIMEOUT_S = 120.0  # add (not --learner): how long the new node may take to catch up
_OPS = {"add": ConfOp.ADD_LEARNER, "promote": ConfOp.PROMOTE, "remove": ConfOp.REMOVE}


def describe(st: Status, address_of: Callable[[str], str | None]) -> list[dict[str, Any]]:
    """Every member with its role, address and (on the leader) how far it is."""
    out = []
    for m in st.conf.members():
        pr = st.progress.get(m)
        row: dict[str, Any] = {
            "id": m,
            "role": "voter" if m in st.conf.voters else "learner",
            "address": address_of(m) or "",
            "leader": m == st.leader,
        }
        if pr is not None:
            row.update(match_index=pr.match, lag=st.last_index - pr.match, active=pr.recent_active)
        out.append(row)
    return out


def _in_effect(conf: ConfState, req: Member) -> bool:
    n = NodeId(req.node or "")
    if req.op == "add":
        placed = n in conf.voters or (n in conf.learners and req.learner)
        return placed and conf.address_of(n) == req.address
    if req.op == "promote":
        return n in conf.voters
    return n not in conf.members()


async def member_command(
    loop: RaftLoop, req: Member, applied: trio.lowlevel.ParkingLot, me: str
) -> dict[str, Any]:
    """Answer one ``member`` request (``MemberError`` with a client error code)."""
    st = loop.status()
    if st.role is not Role.LEADER:
        # Also for list: a removed node, still running, would show a configuration long gone,
        # and only the leader knows how far each member is.
        raise MemberError(
            "not_leader", f"{me} is not the leader (the leader is {st.leader or 'unknown'})"
        )
    if req.op == "list":
        return {"done": True}
    if req.op == "add":
        try:
            split_address(req.address or "")
        except ValueError as e:
            raise MemberError("refused", str(e)) from None
    if _in_effect(st.conf, req):
        return {"done": True, "already": True}
    n = NodeId(req.node or "")
    if req.op == "add" and n in st.conf.learners and not req.learner:
        return await _promote_when_caught_up(loop, n, applied)
    index = await _change(loop, ConfChange(_OPS[req.op], n, req.address or ""), applied)
    if req.op == "add" and not req.learner:
        return await _promote_when_caught_up(loop, n, applied)
    return {"done": True, "index": index}


async def _change(loop: RaftLoop, ch: ConfChange, applied: trio.lowlevel.ParkingLot) -> int:
    r = ConfRequest(ch)
    if not loop.request_conf_change(r):
        raise MemberError("overloaded", "the Raft loop's inbox is full: try again")
    with trio.fail_after(COMMIT_TIMEOUT_S):
        await r.done.wait()
    if r.refused is not None:
        raise MemberError("refused", r.refused)
    with trio.move_on_after(COMMIT_TIMEOUT_S) as scope:
        while loop.applier.applied_index < r.index:
            await applied.park()
    if scope.cancelled_caught:
        raise MemberError(
            "timeout",
            f"the change at index {r.index} did not commit within {COMMIT_TIMEOUT_S:.0f} s "
            f"(is a majority of the voters up?); `p2plog member list` shows whether it did",
        )
    return r.index


async def _promote_when_caught_up(
    loop: RaftLoop, n: NodeId, applied: trio.lowlevel.ParkingLot
) -> dict[str, Any]:
    with trio.move_on_after(CATCH_UP_TIMEOUT_S):
        while True:
            st = loop.status()
            if st.role is not Role.LEADER:
                raise MemberError("not_leader", "leadership moved while the new node caught up")
            pr = st.progress.get(n)
            if (
                pr is not None
                and pr.recent_active
                and pr.match + PROMOTE_MAX_LAG >= st.commit_index
            ):
                break
            with trio.move_on_after(0.2):
                await applied.park()
        index = await _change(loop, ConfChange(ConfOp.PROMOTE, n), applied)
        return {"done": True, "index": index}
    raise MemberError(
        "timeout",
        f"{n} was added as a learner but did not catch up within {CATCH_UP_TIMEOUT_S:.0f} s: "
        f"is it running at its address? promote it later with `p2plog member promote {n}`",
    )
