"""Peer RPC: what this node asks of its peers besides Raft, and how it answers them.

- Forwards: a follower sends a submit's records to the leader (``fwd``) and relays the outcome
  (``fwda``); the leader checks them as it checks a client's (``serve_forward``) and submits them.
- The read barrier: a follower asks the leader's commit index (``ci`` -> ``cia``) and waits until
  it has applied that far.
- Time probes: every second a four-timestamp probe to each peer (``tp`` -> ``tpr``, RFC 5905
  on-wire) feeds ``PeerSkew``.

A request waits for its reply under a fresh random id (``replies.Replies``), and every wait is
bounded; a reply that comes after its request gave up is dropped. What a peer sends arrives
through ``runtime.peer_server``, which calls the answering half of this class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from p2plog.clock.peer_skew import PeerSkew
from p2plog.net.peer_link import PeerLink
from p2plog.raft.types import NodeId, Role
from p2plog.ratelog import RateLimitedLog
from p2plog.record import RecordError, revalidate
from p2plog.replica.proposals import RecordAck, SubmitResult
from p2plog.runtime.raft_loop import RaftLoop
from p2plog.runtime.replies import Replies
from p2plog.wire import peer as wp
from p2plog.wire.client import RETRY_AFTER_MS, add_to_runs
from p2plog.wire.envelope import ProtocolError, encode

log = logging.getLogger("p2plog.node")

FORWARD_TIMEOUT_S = 10.0  # as long as a submit on the leader waits for its commit
PEER_PROBE_INTERVAL_S = 1.0
READ_BARRIER_S = 1.0
PEER_STATUS_TIMEOUT_S = 0.4  # the console's cluster view waits no longer for a peer
REVALIDATE_STEP = 512

Submit = Callable[[list[bytes], list[bytes], str], Awaitable[SubmitResult]]


class PeerRpc:
    def __init__(
        self,
        me: NodeId,
        loop: RaftLoop,
        links: Mapping[NodeId, PeerLink],
        *,
        now_ns: Callable[[], int],
        skew: PeerSkew,
        applied: trio.lowlevel.ParkingLot,
        submit: Submit,
        status: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        """``applied`` is woken after every applied round; ``submit`` stores what a follower
        forwarded (``Node.submit``, as for a client)."""
        self.me = me
        self.loop = loop
        self.links = links
        self.now_ns = now_ns
        self.skew = skew
        self.applied = applied
        self.submit = submit
        self.status = status
        self.replies = Replies()
        self._bad_forwards = RateLimitedLog(log, interval_s=10.0)

    def send_to(self, peer: NodeId, frame: bytes) -> bool:
        """Queue ``frame`` on the link to ``peer``; False if there is none or it is full."""
        link = self.links.get(peer)
        return link is not None and link.send_nowait(frame)

    # ------------------------------------------------------------ asking

    async def forward(
        self, leader: NodeId, ids: list[bytes], bodies: list[bytes], ack: str
    ) -> SubmitResult:
        """Submit through ``leader``: its outcome, or why there is none (retryable)."""
        fail = SubmitResult.failed
        link = self.links.get(leader)
        if link is None or not link.connected:
            return fail("unavailable", f"no link to the leader {leader} yet")
        with self.replies.expect(leader, wp.Fwda) as w:
            if not link.send_nowait(wp.encode_forward(w.id, ack, ids, bodies)):
                return fail("overloaded", f"link to the leader {leader} is full")
            with trio.move_on_after(FORWARD_TIMEOUT_S):
                await self._wait_reply_or_leader_change(w.done, leader)
        reply = w.reply
        if reply is None:
            if self.loop.replica.leader != leader:
                return fail("unavailable", f"leader {leader} changed while forwarding; retry")
            return fail("timeout", f"leader {leader} did not answer in time")
        if reply.code is not None:
            return fail(reply.code, reply.msg)
        try:
            got = reply.outcomes(len(ids))
        except ProtocolError as e:
            log.warning("%s: malformed forward reply from %s: %s", self.me, leader, e)
            return fail("unavailable", f"bad reply from the leader {leader}; retry")
        res = SubmitResult(len(ids))
        res.conflicts = dict(reply.conflicts)  # checked by ``outcomes``
        for k, a in enumerate(got):
            if a is None:
                continue
            index, term, dup = a
            if dup:
                res.singles[k] = RecordAck(ids[k], index, term, True)
            else:
                add_to_runs(res.runs, k, index, term)
        return res

    async def _wait_reply_or_leader_change(self, done: trio.Event, leader: NodeId) -> None:
        """Return once the reply came or ``leader`` stopped being our leader (a dead leader is
        noticed within an election timeout; the client then retries via the new one)."""
        loop = self.loop
        while not done.is_set() and loop.replica.leader == leader:
            changed = loop.role_changed
            async with trio.open_nursery() as nursery:

                async def wait_then_stop(ev: trio.Event) -> None:
                    await ev.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wait_then_stop, done)
                nursery.start_soon(wait_then_stop, changed)

    async def read_barrier(self) -> None:
        """Before a read on a follower: ask the leader for its commit index and wait until this
        node has applied that far, so a record acked through any node (the leader acks once
        it has applied it) shows in a read here. Followers learn a new commit index lazily
        (with the next append, or on the leader's next tick: that saves two messages per
        follower per write), so without this a read could miss a just-acked record for a tick.
        Best effort, bounded by ``READ_BARRIER_S``: with no leader, no link, or no answer,
        the read goes ahead on what is applied (a partitioned follower still serves reads)."""
        replica = self.loop.replica
        leader = replica.leader
        link = self.links.get(leader) if leader is not None else None
        if leader is None or link is None or not link.connected:
            return
        with self.replies.expect(leader, wp.Cia) as w:
            if not link.send_nowait(encode("ci", {"rid": w.id})):
                return
            with trio.move_on_after(READ_BARRIER_S) as scope:
                await w.done.wait()
                target = w.reply.c if w.reply is not None else None
                while target is not None and replica.applier.applied_index < target:
                    await self.applied.park()
            if scope.cancelled_caught:
                log.debug(
                    "%s: read barrier via %s timed out; reading what is applied", self.me, leader
                )

    async def probe_peers(self) -> None:
        """Send every peer a time probe each second; its reply (``tpr``) gives the offset."""
        while True:
            for link in self.links.values():
                if link.connected:
                    link.send_nowait(encode("tp", {"t1": self.now_ns()}))
            await trio.sleep(PEER_PROBE_INTERVAL_S)

    # ---------------------------------------------------------- answering

    async def serve_forward(self, src: NodeId, m: wp.Fwd) -> None:
        """Store records a follower forwarded, checked exactly as a client's submit would be
        (``record.revalidate``: a body that does not come out of ``validate`` unchanged, or
        that names another taker than ``src``, refuses the whole forward)."""
        ids, bodies = m.records()
        k = 0
        try:
            for k, (rid, body) in enumerate(zip(ids, bodies, strict=True)):
                revalidate(body, rid, src)
                if k % REVALIDATE_STEP == REVALIDATE_STEP - 1:
                    # ~12 us a record: let the Raft loop in between, or a 10,000-record
                    # forward would hold the event loop for over 100 ms.
                    await trio.lowlevel.checkpoint()
        except RecordError as e:
            self._bad_forwards.warning(
                "%s: refused a forward from %s: record %d: %s", self.me, src, k, e
            )
            text = f"record {k} of the forward is malformed: {e}"
            self.send_to(src, wp.encode_forward_error(m.fid, "bad_request", text, 0))
            return
        res = await self.submit(ids, bodies, m.ack)
        if res.error is not None:
            code, text = res.error
            frame = wp.encode_forward_error(m.fid, code, text, RETRY_AFTER_MS)
        else:
            frame = wp.encode_forward_acks(m.fid, res.outcomes(), res.conflicts)
        self.send_to(src, frame)

    def answer_commit_index(self, src: NodeId, m: wp.Ci) -> None:
        """A follower's read barrier: what has this leader committed? (None: not the leader.)"""
        replica = self.loop.replica
        c = int(replica.raft.log.committed) if replica.role is Role.LEADER else None
        self.send_to(src, encode("cia", {"rid": m.rid, "c": c}))

    def answer_status(self, src: NodeId, m: wp.St) -> None:
        data = json.dumps(self.status(), default=str).encode()
        if len(data) > wp.MAX_STATUS_BYTES:
            data = json.dumps({"error": f"status of {len(data)} bytes is too large"}).encode()
        self.send_to(src, encode("sta", {"rid": m.rid, "s": data}))

    async def peer_status(self, peer: NodeId) -> dict[str, Any]:
        """``peer``'s full status over the peer link (for the console), or why not."""
        link = self.links.get(peer)
        if link is None or not link.connected:
            return {"id": peer, "reachable": False, "error": "no link"}
        with self.replies.expect(peer, wp.Sta) as w:
            if not link.send_nowait(encode("st", {"rid": w.id})):
                return {"id": peer, "reachable": False, "error": "link queue full"}
            with trio.move_on_after(PEER_STATUS_TIMEOUT_S):
                await w.done.wait()
            if w.reply is None:
                return {"id": peer, "reachable": False, "error": "no answer in time"}
            try:
                got = json.loads(w.reply.s)
            except ValueError:
                return {"id": peer, "reachable": False, "error": "a malformed answer"}
        return {**got, "reachable": True} if isinstance(got, dict) else {"id": peer}

    def answer_probe(self, src: NodeId, m: wp.Tp) -> None:
        t2 = self.now_ns()
        self.send_to(src, encode("tpr", {"t1": m.t1, "t2": t2, "t3": self.now_ns()}))

    def probe_answered(self, src: NodeId, m: wp.Tpr) -> None:
        self.skew.add(src, m.t1, m.t2, m.t3, self.now_ns())

    def reply_received(self, src: NodeId, rid: int, m: wp.Cia | wp.Fwda | wp.Sta) -> None:
        self.replies.deliver(src, rid, m)
