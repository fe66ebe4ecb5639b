"""A p2plog node: storage, the Raft loop, peer links and the websocket listener in one nursery.

``submit`` is accepted on any node: the leader proposes; a follower forwards the batch to the
leader over its peer link and relays the outcome; with no leader known it answers
``unavailable`` with ``retry_after_ms``. In-flight records are bounded per node and per
connection (``overloaded``). Shutdown stops intake, hands leadership to the most up-to-date
follower, lets the current batch finish its fsync, and closes the storage.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from p2plog.clock.estimator import ClockEstimator
from p2plog.clock.ntp_poller import NtpPoller, steady_wall_clock
from p2plog.clock.peer_skew import PeerSkew
from p2plog.config import Config, NodeConfig
from p2plog.errors import P2PLogError
from p2plog.net.peer_link import MAX_MESSAGE_BYTES, RECEIVE_BUFFER, PeerLink
from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import Message
from p2plog.raft.types import Entry, NodeId, Role
from p2plog.record import Rec
from p2plog.runtime.event_stream import EventStream
from p2plog.runtime.proposals import Proposal, RecordAck, SubmitResult
from p2plog.runtime.raft_loop import RaftLoop
from p2plog.runtime.tail_hub import TailHub
from p2plog.state.applier import Applied, Applier
from p2plog.storage.segmented_log import SegmentedLog
from p2plog.wire import peer as wp
from p2plog.wire.client import add_to_runs
from p2plog.wire.envelope import ProtocolError, decode, encode, get_int, get_opt_int, get_str

log = logging.getLogger("p2plog.node")

SUBMIT_TIMEOUT_S = 10.0
PEER_PROBE_INTERVAL_S = 1.0
FIRST_NTP_ROUND_S = 5.0
HELLO_TIMEOUT_S = 5.0
RETRY_AFTER_MS = 100
READ_BARRIER_S = 1.0


class Node:
    def __init__(self, config: Config, me: NodeConfig, data_dir: Path | None = None) -> None:
        self.config = config
        self.me = me
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
        self._fids = itertools.count(1)
        self._applied = trio.lowlevel.ParkingLot()  # woken after every applied round
        # Requests to a peer awaiting its reply (``fwd`` -> ``fwda``, ``ci`` -> ``cia``), by
        # the id from ``_fids`` they carry: the reply message is put in the box.
        self._awaiting: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
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
        storage = await trio.to_thread.run_sync(
            lambda: SegmentedLog(
                self.data_dir,
                segment_bytes=c.segment_bytes,
                budget_bytes=c.disk_budget_bytes or None,
                node=self.me.id,
            )
        )
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
        for p in self.peers:
            hello = wp.encode_hello(c.name, self.me.id, p.id)
            self.links[p.id] = PeerLink(self.me.id, p.id, p.host, p.port, hello)
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
                    server = await nursery.start(
                        partial_serve(self._handle_request, self.me.host, self.me.port)
                    )
                    self.port = server.port
                    log.info(
                        "%s: listening on ws://%s:%d (peers %s)",
                        self.me.id,
                        self.me.host,
                        self.port,
                        ", ".join(p.id for p in self.peers) or "none",
                    )
                    task_status.started(self.port)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(storage.close, limiter=self.limiter)
            log.info("%s: stopped; storage closed", self.me.id)

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
        link = self.links.get(m.dst)
        if link is not None:
            link.send_nowait(wp.encode_raft(m))

    def _on_applied(self, items: Sequence[tuple[Entry, Applied | None]]) -> None:
        self._applied.unpark_all()
        self.events.feed(items)
        if self.tail_hub.subs:
            recs: list[Rec] = []
            for e, a in items:
                if a is not None:
                    dups = a.dups
                    recs += (r for k, r in enumerate(a.batch.records(e.term)) if k not in dups)
            self.tail_hub.publish(recs)

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
        if link is None or not link.connected:
            return
        rid = next(self._fids)
        done = trio.Event()
        box: list[dict[str, Any]] = []
        self._awaiting[rid] = (done, box)
        try:
            if not link.send_nowait(encode("ci", {"rid": rid})):
                return
            with trio.move_on_after(READ_BARRIER_S) as scope:
                await done.wait()
                target = get_opt_int(box[0], "c")
                while target is not None and loop.applier.applied_index < target:
                    await self._applied.park()
            if scope.cancelled_caught:
                log.debug(
                    "%s: read barrier via %s timed out; reading what is applied", self.me.id, leader
                )
        finally:
            self._awaiting.pop(rid, None)

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
        return p.result()

    async def _forward(
        self, leader: NodeId, ids: list[bytes], bodies: list[bytes], ack: str
    ) -> SubmitResult:
        fail = SubmitResult.failed
        link = self.links.get(leader)
        if link is None or not link.connected:
            return fail("unavailable", f"no link to the leader {leader} yet")
        fid = next(self._fids)
        done = trio.Event()
        box: list[dict[str, Any]] = []
        self._awaiting[fid] = (done, box)
        try:
            if not link.send_nowait(
                wp.encode_forward(fid, ack, list(zip(ids, bodies, strict=True)))
            ):
                return fail("overloaded", f"link to the leader {leader} is full")
            with trio.move_on_after(SUBMIT_TIMEOUT_S):
                await self._wait_reply_or_leader_change(done, leader)
        finally:
            self._awaiting.pop(fid, None)
        if not box:
            assert self.loop is not None
            if self.loop.node.leader != leader:
                return fail("unavailable", f"leader {leader} changed while forwarding; retry")
            return fail("timeout", f"leader {leader} did not answer in time")
        reply = box[0]
        if "code" in reply:
            return fail(get_str(reply, "code"), get_str(reply, "msg", ""))
        try:
            got = wp.decode_forward_acks(reply, len(ids))
        except ProtocolError as e:
            log.warning("%s: malformed forward reply from %s: %s", self.me.id, leader, e)
            return fail("unavailable", f"bad reply from the leader {leader}; retry")
        res = SubmitResult(len(ids))
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

    async def _serve_forward(self, src: NodeId, msg: dict[str, Any]) -> None:
        try:
            fid, ack, recs = wp.decode_forward(msg)
        except ProtocolError as e:
            log.warning("%s: ignoring a malformed forward from %s: %s", self.me.id, src, e)
            return
        res = await self.submit([r for r, _ in recs], [b for _, b in recs], ack)
        if res.error is not None:
            code, text = res.error
            reply = {"fid": fid, "code": code, "msg": text, "retry_after_ms": RETRY_AFTER_MS}
            frame = encode("fwda", reply)
        else:
            frame = wp.encode_forward_acks(fid, res.outcomes())
        link = self.links.get(src)
        if link is not None:
            link.send_nowait(frame)

    # ----------------------------------------------------------- listener

    async def _handle_request(self, request: WebSocketRequest) -> None:
        if request.path == "/peer":
            ws = await request.accept()
            await self._serve_peer(ws)
        elif request.path == "/client":
            ws = await request.accept()
            from p2plog.runtime.client_session import serve_client

            await serve_client(self, ws)
        else:
            await request.reject(404, body=b"p2plog: use /peer or /client\n")

    async def _serve_peer(self, ws: WebSocketConnection) -> None:
        """Read one inbound peer link. Whatever the peer does (close, send garbage, stall),
        only this connection ends: errors are caught inside the nursery body, and forward
        tasks handle their own, so nothing reaches the listener."""
        reason: str | None = None
        try:
            with trio.fail_after(HELLO_TIMEOUT_S):
                hello = decode(await ws.get_message(), 4096)
            src = self._check_hello(hello)
            async with trio.open_nursery() as nursery:
                try:
                    while True:
                        msg = decode(await ws.get_message(), wp.MAX_PEER_FRAME)
                        self._on_peer_message(src, msg, nursery)
                except ProtocolError as e:
                    reason = str(e)
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
        except ProtocolError as e:
            reason = str(e)
        except trio.TooSlowError:
            reason = f"no hello within {HELLO_TIMEOUT_S:.0f} s"
        except ConnectionClosed:
            pass
        if reason is not None:
            log.warning("%s: closing peer link from %s: %s", self.me.id, ws.remote, reason)
            with trio.move_on_after(1.0):
                await ws.aclose(1008, reason[:120])

    def _check_hello(self, hello: dict[str, Any]) -> NodeId:
        if hello["kind"] != "hello":
            raise ProtocolError(f"expected hello, got {hello['kind']!r}")
        cluster = get_str(hello, "cluster")
        node = get_str(hello, "node")
        to = get_str(hello, "to")
        if cluster != self.config.cluster.name:
            raise ProtocolError(
                f"peer {node!r} belongs to cluster {cluster!r}, this is "
                f"{self.config.cluster.name!r}; check [cluster] name in its peers.toml"
            )
        if node not in self.config.by_id or node == self.me.id:
            raise ProtocolError(f"unknown peer id {node!r}; it is not a [[node]] of this cluster")
        if to != self.me.id:
            raise ProtocolError(f"peer {node!r} dialed {to!r} but reached {self.me.id!r}")
        return NodeId(node)

    async def _probe_peers(self) -> None:
        """Send every peer a time probe each second; its reply (``tpr``) gives the offset."""
        while True:
            for link in self.links.values():
                if link.connected:
                    link.send_nowait(encode("tp", {"t1": self.corrected_now()}))
            await trio.sleep(PEER_PROBE_INTERVAL_S)

    def _on_peer_message(self, src: NodeId, msg: dict[str, Any], nursery: trio.Nursery) -> None:
        kind = msg["kind"]
        if kind == "tp":
            t2 = self.corrected_now()
            link = self.links.get(src)
            if link is not None:
                reply = {"t1": get_int(msg, "t1"), "t2": t2, "t3": self.corrected_now()}
                link.send_nowait(encode("tpr", reply))
            return
        if kind == "tpr":
            t4 = self.corrected_now()
            t1, t2, t3 = (get_int(msg, k) for k in ("t1", "t2", "t3"))
            self.skew.add(src, t1, t2, t3, t4)
            return
        assert self.loop is not None
        if kind in wp.RAFT_KINDS:
            m = wp.decode_raft(msg)
            if m.src != src or m.dst != self.me.id:
                raise ProtocolError(f"message from {m.src} to {m.dst} on the link from {src}")
            self.loop.deliver_nowait(m)
        elif kind == "ci":  # a follower's read barrier: what has this leader committed?
            link = self.links.get(src)
            lead = self.loop.node.role is Role.LEADER
            if link is not None:
                c = int(self.loop.node.log.committed) if lead else None
                link.send_nowait(encode("cia", {"rid": get_int(msg, "rid"), "c": c}))
        elif kind == "cia":
            get_opt_int(msg, "c")  # checked here: a malformed reply breaks the link, not the read
            self._reply(get_int(msg, "rid"), msg)
        elif kind == "fwd":
            nursery.start_soon(self._serve_forward, src, msg)
        elif kind == "fwda":
            self._reply(get_int(msg, "fid"), msg)
        else:
            raise ProtocolError(f"unknown peer message kind {kind!r}")

    def _reply(self, request_id: int, msg: dict[str, Any]) -> None:
        """Hand a peer's reply to the request awaiting it (none: it gave up already)."""
        waiting = self._awaiting.get(request_id)
        if waiting is not None:
            waiting[1].append(msg)
            waiting[0].set()

    # -------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        loop = self.loop
        assert loop is not None
        assert self.storage is not None
        st = loop.status()
        fs = sorted(loop.fsync_s) if loop.fsync_s else [0.0]
        peers = {}
        for p in self.peers:
            prog = st.progress.get(p.id)
            link = self.links[p.id]
            peers[p.id] = {
                "address": p.address,
                "connected": link.connected,
                "match_index": prog.match if prog else None,
                "lag": (st.last_index - prog.match) if prog else None,
                "dropped_frames": link.dropped,
            }
        return {
            "id": self.me.id,
            "address": self.me.address,
            "role": st.role.value,
            "term": st.term,
            "leader": st.leader,
            "commit_index": st.commit_index,
            "applied_index": loop.applier.applied_index,
            "last_index": st.last_index,
            "first_index": self.storage.first_index(),
            "records": loop.applier.records,
            "record_index": loop.applier.record_index,
            "peers": peers,
            "fsync_ms_p50": round(statistics.median(fs) * 1000, 3),
            "fsync_ms_p99": round(fs[int(len(fs) * 0.99) - 1 if len(fs) > 1 else 0] * 1000, 3),
            "fsyncs": self.storage.fsyncs,
            "log_bytes": self.storage.total_bytes,
            "disk_full": loop.disk_full,
            "storage_failed": loop.failed,
            "inflight_records": self.inflight,
            "tail_subscribers": len(self.tail_hub.subs),
            "uptime_s": round(time.time() - self.started_at, 1),
            "clock": self.clock_status(),
            "reorder": self.events.statistics(self.corrected_now()),
        }

    def clock_status(self) -> dict[str, Any]:
        now = self.corrected_now()
        st = self.estimator.status(self.local_ns())
        if not self.config.ntp.servers:
            st["source"] = "system clock (no [ntp] servers configured)"
        st["peer_offsets_ms"] = {
            p: round(o.offset_ns / 1e6, 3) for p, o in self.skew.offsets(now).items()
        }
        st["offset_to_majority_ms"] = round(self.skew.offset_to_majority(now) / 1e6, 3)
        st["clock_uncertain"] = self.clock_uncertain()
        return st


def partial_serve(handler: Any, host: str, port: int) -> Any:
    async def serve(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_websocket(
            handler,
            host,
            port,
            None,
            max_message_size=MAX_MESSAGE_BYTES,
            receive_buffer_size=RECEIVE_BUFFER,
            task_status=task_status,
        )

    return serve


__all__ = ["Node", "P2PLogError", "SubmitResult"]
