"""A p2plog node: storage, the Raft loop, peer links and the websocket listener in one nursery.

``submit`` is accepted on any node: the leader proposes; a follower forwards the batch to the
leader over its peer link and relays the outcome; with no leader known it answers
``unavailable`` with ``retry_after_ms``. In-flight records are bounded per node and per
connection (``overloaded``). Shutdown stops intake, hands leadership to the most up-to-date
follower, lets the current batch finish its fsync, and closes the storage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from p2plog.clock.estimator import ClockEstimator
from p2plog.clock.ntp_poller import NtpPoller, steady_wall_clock
from p2plog.clock.peer_skew import PeerSkew
from p2plog.config import Config, NodeConfig
from p2plog.entry import Rec
from p2plog.errors import P2PLogError, StorageError
from p2plog.net.peer_link import LinkAuth, PeerLink
from p2plog.net.server import connection_cap, raise_open_files_limit
from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import Message
from p2plog.raft.types import Entry, NodeId, Role
from p2plog.ratelog import RateLimitedLog
from p2plog.record import RecordError, revalidate
from p2plog.runtime.dup_check import mark_conflicts
from p2plog.runtime.event_stream import EventStream
from p2plog.runtime.listener import Listener
from p2plog.runtime.proposals import Proposal, RecordAck, SubmitResult
from p2plog.runtime.raft_loop import RaftLoop
from p2plog.runtime.replies import Replies
from p2plog.runtime.tail_hub import TailHub
from p2plog.security.policy import NodeSecurity, describe, load_node_security
from p2plog.state.applier import Applied, Applier
from p2plog.storage.segmented_log import SegmentedLog
from p2plog.wire import peer as wp
from p2plog.wire.client import add_to_runs
from p2plog.wire.envelope import ProtocolError, encode

log = logging.getLogger("p2plog.node")

SUBMIT_TIMEOUT_S = 10.0
PEER_PROBE_INTERVAL_S = 1.0
FIRST_NTP_ROUND_S = 5.0
RETRY_AFTER_MS = 100
READ_BARRIER_S = 1.0
REVALIDATE_STEP = 512
# Descriptors kept out of max_connections: storage (open segment, meta files, reads), peer
# links both ways, the handshakes the TCP listener holds, logs and the NTP socket.
FD_RESERVE = 256


class Node:
    def __init__(
        self,
        config: Config,
        me: NodeConfig,
        data_dir: Path | None = None,
        security: NodeSecurity | None = None,
    ) -> None:
        self.config = config
        self.me = me
        self.security = security or load_node_security(config, me)
        self.data_dir = data_dir or me.data_dir
        self.peers = [n for n in config.nodes if n.id != me.id]
        c = config.cluster
        self.raft_config = RaftConfig(
            election_ticks=c.election_ticks,
            heartbeat_ticks=c.heartbeat_ticks,
            max_apply_bytes=1 << 20,  # bounded work per Ready keeps the event loop responsive
        )
        self.tail_hub: TailHub[Rec] = TailHub()
        self.events = EventStream(
            reorder_window_ms=c.reorder_window_ms,
            max_records=c.reorder_max_records,
            max_bytes=c.reorder_max_bytes,
        )
        self.limiter = trio.CapacityLimiter(1)
        self.accepting = True
        self.inflight = 0
        self.started_at = time.time()
        self.links: dict[NodeId, PeerLink] = {}
        self.storage: SegmentedLog | None = None
        self.loop: RaftLoop | None = None
        self._applied = trio.lowlevel.ParkingLot()  # woken after every applied round
        self.replies = Replies()
        self.tails_open = 0  # client tails on this node (client_session bounds them)
        self.public_status_cache: tuple[float, dict[str, Any]] | None = None
        self.listener: Listener | None = None
        self._bad_forwards = RateLimitedLog(log, interval_s=10.0)
        self.port = me.port
        self._cancel = trio.CancelScope()
        # Time: one steady local clock (never steps), NTP-corrected by the estimator; peers'
        # offsets measured with four-timestamp probes on the peer links.
        self.local_ns = steady_wall_clock()
        self.estimator = ClockEstimator()
        self.skew = PeerSkew(me.id)
        self.poller = NtpPoller(
            config.ntp.servers,
            self.estimator,
            poll_interval_s=config.ntp.poll_interval_s,
            local_ns=self.local_ns,
            node=me.id,
        )

    def corrected_now(self) -> int:
        """This node's best estimate of true time, ns since the epoch; never steps back."""
        return self.estimator.corrected_now(self.local_ns())

    def clock_uncertain(self) -> bool:
        """True while this node's clock is off from its peers' median by > max_offset_ms."""
        return self.skew.clock_uncertain(self.config.cluster.max_offset_ms, self.corrected_now())

    # -------------------------------------------------------------- running

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        c = self.config.cluster
        storage = await trio.to_thread.run_sync(self._open_storage)
        self.storage = storage
        applier = Applier(c.dedup_window_records, c.dedup_window_s * 1_000_000_000)
        self.loop = RaftLoop(
            node_id=self.me.id,
            voters=[n.id for n in self.config.nodes],
            raft_config=self.raft_config,
            storage=storage,
            applier=applier,
            send=self._send_raft,
            on_applied=self._on_applied,
            tick_s=c.tick_ms / 1000,
            limiter=self.limiter,
            wall_ns=self.corrected_now,
            wants_time_tick=self.events.wants_time_tick,
            time_tick_s=max(0.05, c.reorder_window_ms / 4000),
        )
        auth = LinkAuth(c.name, self.security.secret, self.security.client_ssl)
        for p in self.peers:
            self.links[p.id] = PeerLink(self.me.id, p.id, p.host, p.port, auth)
        cap = connection_cap(c.max_connections, raise_open_files_limit(), FD_RESERVE, self.me.id)
        self.listener = Listener(self, cap)
        for warning in self.security.warnings:
            log.warning("%s: %s", self.me.id, warning)
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.poller.run)
                    with trio.move_on_after(FIRST_NTP_ROUND_S):
                        # Stamp no time before the clock had its chance to step into place.
                        await self.poller.wait_first_round()
                    nursery.start_soon(self.loop.run)
                    nursery.start_soon(self._probe_peers)
                    for link in self.links.values():
                        nursery.start_soon(link.run)
                    self.port = await nursery.start(self.listener.run)
                    log.info(
                        "%s: listening on %s://%s:%d (peers %s; %s; max_connections %d)",
                        self.me.id,
                        self.security.scheme,
                        self.me.host,
                        self.port,
                        ", ".join(p.id for p in self.peers) or "none",
                        describe(self.security),
                        cap,
                    )
                    task_status.started(self.port)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(storage.close, limiter=self.limiter)
            log.info("%s: stopped; storage closed", self.me.id)

    def _open_storage(self) -> SegmentedLog:
        c = self.config.cluster
        try:
            return SegmentedLog(
                self.data_dir,
                segment_bytes=c.segment_bytes,
                budget_bytes=c.disk_budget_bytes or None,
                node=self.me.id,
            )
        except OSError as e:
            where = e.filename or self.data_dir
            raise StorageError(
                f"cannot open the data directory {self.data_dir} ({where}: {e.strerror or e}); "
                f"make sure it is writable by this user, or pick another with --data-dir or "
                f"data_dir in {self.config.path.name}"
            ) from None

    async def shutdown(self, *, transfer_timeout_s: float = 2.0) -> None:
        """Stop intake, hand over leadership, let the current fsync finish, stop."""
        self.accepting = False
        loop = self.loop
        if loop is not None and loop.node.role is Role.LEADER and self.peers:
            loop.request_transfer(None)
            with trio.move_on_after(transfer_timeout_s):
                while loop.node.role is Role.LEADER:
                    await loop.role_changed.wait()
            if loop.node.role is Role.LEADER:
                log.warning("%s: leadership transfer did not finish; stopping anyway", self.me.id)
            else:
                with trio.move_on_after(0.5):  # learn who took over, for the log line
                    while loop.node.leader is None:
                        await loop.role_changed.wait()
                log.info("%s: handed leadership to %s", self.me.id, loop.node.leader or "?")
        self._cancel.cancel()

    # ----------------------------------------------------------- raft glue

    def _send_raft(self, m: Message) -> None:
        self.send_to(m.dst, wp.encode_raft(m))

    def send_to(self, peer: NodeId, frame: bytes) -> bool:
        """Queue ``frame`` on the link to ``peer``; False if there is none or it is full."""
        link = self.links.get(peer)
        return link is not None and link.send_nowait(frame)

    def _on_applied(self, items: Sequence[tuple[Entry, Applied | None]]) -> None:
        self._applied.unpark_all()
        self.events.feed(items)
        if self.tail_hub.subs:
            recs: list[Rec] = []
            nbytes = 0
            for e, a in items:
                if a is not None:
                    dups = a.dups
                    recs += (r for k, r in enumerate(a.batch.records(e.term)) if k not in dups)
                    nbytes += len(e.data)
            self.tail_hub.publish(recs, nbytes)

    # --------------------------------------------------------------- reads

    async def read_barrier(self) -> None:
        """Before a read on a follower: ask the leader for its commit index and wait until this
        node has applied that far, so a record acked through any node (the leader acks once
        it has applied it) shows in a read here. Followers learn a new commit index lazily
        (with the next append, or on the leader's next tick: that saves two messages per
        follower per write), so without this a read could miss a just-acked record for a tick.
        Best effort, bounded by ``READ_BARRIER_S``: with no leader, no link, or no answer,
        the read goes ahead on what is applied (a partitioned follower still serves reads)."""
        loop = self.loop
        assert loop is not None
        leader = loop.node.leader
        link = self.links.get(leader) if leader is not None else None
        if leader is None or link is None or not link.connected:
            return
        with self.replies.expect(leader, wp.Cia) as w:
            if not link.send_nowait(encode("ci", {"rid": w.id})):
                return
            with trio.move_on_after(READ_BARRIER_S) as scope:
                await w.done.wait()
                target = w.reply.c if w.reply is not None else None
                while target is not None and loop.applier.applied_index < target:
                    await self._applied.park()
            if scope.cancelled_caught:
                log.debug(
                    "%s: read barrier via %s timed out; reading what is applied", self.me.id, leader
                )

    # -------------------------------------------------------------- submit

    async def submit(self, ids: list[bytes], bodies: list[bytes], ack: str) -> SubmitResult:
        """Store records (``ids[k]``, ``bodies[k]``) through the leader: acks in runs, or one
        error for the batch."""
        fail = SubmitResult.failed
        loop = self.loop
        if loop is None or not self.accepting:
            return fail("shutting_down", f"{self.me.id} is shutting down")
        if loop.failed is not None:
            return fail("storage_failed", loop.failed)
        limit = self.config.cluster.max_inflight_records
        if self.inflight + len(ids) > limit:
            return fail("overloaded", f"{self.me.id} has {self.inflight} records in flight")
        self.inflight += len(ids)
        try:
            leader = loop.node.leader
            if leader == self.me.id:
                return await self._submit_local(ids, bodies, ack)
            if leader is None:
                return fail("unavailable", "no leader elected yet; retry shortly")
            return await self._forward(leader, ids, bodies, ack)
        finally:
            self.inflight -= len(ids)

    async def _submit_local(self, ids: list[bytes], bodies: list[bytes], ack: str) -> SubmitResult:
        assert self.loop is not None
        p = Proposal.of(ids, bodies, ack)
        if not self.loop.submit_nowait(p):
            return SubmitResult.failed("overloaded", "the leader's proposal queue is full")
        with trio.move_on_after(SUBMIT_TIMEOUT_S):
            await p.done.wait()
        if not p.done.is_set():
            return SubmitResult.failed("timeout", f"no commit within {SUBMIT_TIMEOUT_S:.0f} s")
        if p.error is not None:
            code, msg = p.error
            if code == "not_leader":
                return SubmitResult.failed("unavailable", "leadership moved; retry")
            return SubmitResult.failed(code, msg)
        res = p.result()
        await mark_conflicts(self, bodies, res)
        return res

    async def _forward(
        self, leader: NodeId, ids: list[bytes], bodies: list[bytes], ack: str
    ) -> SubmitResult:
        fail = SubmitResult.failed
        link = self.links.get(leader)
        if link is None or not link.connected:
            return fail("unavailable", f"no link to the leader {leader} yet")
        with self.replies.expect(leader, wp.Fwda) as w:
            if not link.send_nowait(wp.encode_forward(w.id, ack, ids, bodies)):
                return fail("overloaded", f"link to the leader {leader} is full")
            with trio.move_on_after(SUBMIT_TIMEOUT_S):
                await self._wait_reply_or_leader_change(w.done, leader)
        reply = w.reply
        if reply is None:
            assert self.loop is not None
            if self.loop.node.leader != leader:
                return fail("unavailable", f"leader {leader} changed while forwarding; retry")
            return fail("timeout", f"leader {leader} did not answer in time")
        if reply.code is not None:
            return fail(reply.code, reply.msg)
        try:
            got = reply.outcomes(len(ids))
        except ProtocolError as e:
            log.warning("%s: malformed forward reply from %s: %s", self.me.id, leader, e)
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
        assert loop is not None
        while not done.is_set() and loop.node.leader == leader:
            changed = loop.role_changed
            async with trio.open_nursery() as nursery:

                async def wait_then_stop(ev: trio.Event) -> None:
                    await ev.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(wait_then_stop, done)
                nursery.start_soon(wait_then_stop, changed)

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
                "%s: refused a forward from %s: record %d: %s", self.me.id, src, k, e
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

    # ---------------------------------------------------------------- peers

    async def _probe_peers(self) -> None:
        """Send every peer a time probe each second; its reply (``tpr``) gives the offset."""
        while True:
            for link in self.links.values():
                if link.connected:
                    link.send_nowait(encode("tp", {"t1": self.corrected_now()}))
            await trio.sleep(PEER_PROBE_INTERVAL_S)

    def connection_stats(self) -> dict[str, int]:
        lst = self.listener
        if lst is None:
            return {}
        tcp = lst.capped.open_connections if lst.capped is not None else 0
        out = {name.replace(" ", "_").replace("'", ""): p.open for name, p in lst.pools.items()}
        out["peer_links_in"] = sum(lst.member_links.values())
        return {**out, "tcp": tcp, "refused": lst.refused}

    @property
    def security_summary(self) -> str:
        return describe(self.security)

    def status(self) -> dict[str, Any]:
        """The full status (``runtime.status`` gives each role its view)."""
        from p2plog.runtime.status import node_status
        from p2plog.security.tokens import OPEN

        return node_status(self, OPEN)


__all__ = ["Node", "P2PLogError", "SubmitResult"]
