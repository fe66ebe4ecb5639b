"""A submit's way to the leader's Raft loop, from whichever node took it.

Every submit on this node goes through ``Submits.submit``, a client's and a follower's forward
alike (``Node.submit`` refuses with ``shutting_down`` once shutdown began). It is refused with
``storage_failed`` after a fatal storage error and ``overloaded`` past ``max_inflight_records``
in flight on this node.
Then the leader proposes the records to its own loop and waits (bounded) for their acks; a
follower forwards them (``PeerRpc.forward``); with no leader known the answer is
``unavailable``, which a client retries after ``retry_after_ms``. On the leader a duplicate is
acked only if it holds the same record (``runtime.dup_check``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from p2plog.raft.types import NodeId
from p2plog.replica.proposals import Proposal, SubmitResult
from p2plog.runtime.peer_rpc import FORWARD_TIMEOUT_S
from p2plog.runtime.raft_loop import RaftLoop

SUBMIT_TIMEOUT_S = FORWARD_TIMEOUT_S  # the leader's own wait for a commit, as for a forward

Forward = Callable[[NodeId, list[bytes], list[bytes], str], Awaitable[SubmitResult]]
CheckConflicts = Callable[[list[bytes], SubmitResult], Awaitable[None]]


class Submits:
    def __init__(
        self,
        me: NodeId,
        loop: RaftLoop,
        max_inflight: int,
        *,
        forward: Forward,
        check_conflicts: CheckConflicts,
    ) -> None:
        self.me = me
        self.loop = loop
        self.max_inflight = max_inflight
        self.forward = forward
        self.check_conflicts = check_conflicts
        self.inflight = 0  # records in flight on this node

    async def submit(self, ids: list[bytes], bodies: list[bytes], ack: str) -> SubmitResult:
        """Store records (``ids[k]``, ``bodies[k]``) through the leader: acks in runs, or one
        error for the batch."""
        fail = SubmitResult.failed
        loop = self.loop
        if loop.failed is not None:
            return fail("storage_failed", loop.failed)
        if self.inflight + len(ids) > self.max_inflight:
            return fail("overloaded", f"{self.me} has {self.inflight} records in flight")
        self.inflight += len(ids)
        try:
            leader = loop.replica.leader
            if leader == self.me:
                return await self._submit_local(ids, bodies, ack)
            if leader is None:
                return fail("unavailable", "no leader elected yet; retry shortly")
            return await self.forward(leader, ids, bodies, ack)
        finally:
            self.inflight -= len(ids)

    async def _submit_local(self, ids: list[bytes], bodies: list[bytes], ack: str) -> SubmitResult:
        woken = trio.Event()
        p = Proposal.of(ids, bodies, ack, wake=woken.set)
        if not p.done:  # an empty submission is done at once
            if not self.loop.submit_nowait(p):
                return SubmitResult.failed("overloaded", "the leader's proposal queue is full")
            with trio.move_on_after(SUBMIT_TIMEOUT_S):
                await woken.wait()
        if not woken.is_set() and not p.done:
            return SubmitResult.failed("timeout", f"no commit within {SUBMIT_TIMEOUT_S:.0f} s")
        if p.error is not None:
            code, msg = p.error
            if code == "not_leader":
                return SubmitResult.failed("unavailable", "leadership moved; retry")
            return SubmitResult.failed(code, msg)
        res = p.result()
        await self.check_conflicts(bodies, res)
        return res
