"""A p2plog node: storage, the Raft loop, peer links and the websocket listener in one nursery.

``Node`` composes the parts, runs and stops them, and answers ``status``; the parts do the
work: ``raft_loop`` drives the replica and its storage writes, ``peer_rpc`` forwards submits,
runs the read barrier and probes the peers' clocks, ``peer_server`` serves inbound peer links,
``net.listener`` the one port. The client sessions are plugged in by whoever builds the node
(``service.main.make_node``): they sit above it, see it only as ``service.api.NodeApi``
(implemented here), and the node never imports them.

``submit`` is accepted on any node: the leader proposes; a follower forwards the batch to the
leader over its peer link and relays the outcome; with no leader known it answers
``unavailable`` with ``retry_after_ms``. In-flight records are bounded per node and per
connection (``overloaded``). Shutdown stops intake, hands leadership to the most up-to-date
follower, lets the current batch finish its fsync, and closes the storage.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio
from trio_websocket import WebSocketConnection

from p2plog.clock.estimator import ClockEstimator
from p2plog.clock.ntp_poller import NtpPoller, steady_wall_clock
from p2plog.clock.peer_skew import PeerSkew
from p2plog.config import ClusterConfig, Config, NodeConfig
from p2plog.errors import StorageError
from p2plog.latency import Histogram
from p2plog.net.http import HttpServer, Site
from p2plog.net.listener import Listener
from p2plog.net.peer_link import LinkAuth, PeerLink
from p2plog.net.server import connection_cap, raise_open_files_limit
from p2plog.order.reorder import Emitted, ReorderBuffer
from p2plog.raft.config import RaftConfig
from p2plog.raft.messages import InstallSnapshot, Message
from p2plog.raft.types import Entry, NodeId, Role
from p2plog.replica.proposals import SubmitResult
from p2plog.runtime import node_status
from p2plog.runtime.dup_check import mark_conflicts
from p2plog.runtime.incarnations import Incarnations
from p2plog.runtime.member_ops import describe as describe_members
from p2plog.runtime.member_ops import member_command
from p2plog.runtime.members import Members
from p2plog.runtime.peer_rpc import PeerRpc
from p2plog.runtime.peer_server import PeerServer
from p2plog.runtime.raft_loop import RaftLoop
from p2plog.runtime.retention import Retention
from p2plog.runtime.submit import Submits
from p2plog.runtime.tail_hub import TailHub
from p2plog.security.policy import NodeSecurity, describe, load_node_security
from p2plog.security.tokens import Grant
from p2plog.state.applier import Applied, Applier
from p2plog.state.entry import BatchRef, Rec
from p2plog.state.event_feed import IsDup
from p2plog.state.scans import ScanLog
from p2plog.storage.segmented_log import SegmentedLog
from p2plog.wire import peer as wp
from p2plog.wire import peer_snapshot
from p2plog.wire.client import Member

log = logging.getLogger("p2plog.node")

R = TypeVar("R")
N = TypeVar("N", contravariant=True)
# One client session on this node: the node, the accepted websocket, what its token grants.
ServeClientOf = Callable[[N, WebSocketConnection, Grant], Awaitable[None]]

FIRST_NTP_ROUND_S = 5.0
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
        *,
        serve_client: ServeClientOf[Node],
        http_handler: Callable[[Node], Site] | None = None,
    ) -> None:
        self.config = config
        self._serve_client = serve_client
        self._http_handler = http_handler
        self.http_port: int | None = None
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
        self.event_hub: TailHub[Emitted[BatchRef]] = TailHub()
        self.limiter = trio.CapacityLimiter(1)
        self.accepting = True
        self.started_at = time.time()
        self.links: dict[NodeId, PeerLink] = {}
        self.storage: SegmentedLog | None = None
        self.loop: RaftLoop | None = None
        self.rpc: PeerRpc | None = None
        self.submits: Submits | None = None
        self._applied = trio.lowlevel.ParkingLot()  # woken after every applied round
        self.tails_open = 0  # client tails on this node (service.session bounds them)
        self.rejected: Counter[str] = Counter()  # requests refused, by error code (metrics)
        self.public_status_cache: tuple[float, dict[str, Any]] | None = None
        self.listener: Listener | None = None
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

    # ------------------------------------------------- what sessions see (NodeApi)

    @property
    def id(self) -> str:
        return self.me.id

    @property
    def cluster(self) -> ClusterConfig:
        return self.config.cluster

    @property
    def applied(self) -> Applier:
        assert self.loop is not None
        return self.loop.applier

    def corrected_now(self) -> int:
        """This node's best estimate of true time, ns since the epoch; never steps back."""
        return self.estimator.corrected_now(self.local_ns())

    def clock_uncertain(self) -> bool:
        """True while this node's clock is off from its peers' median by > max_offset_ms."""
        return self.skew.clock_uncertain(self.config.cluster.max_offset_ms, self.corrected_now())

    async def read_barrier(self) -> None:
        """See ``PeerRpc.read_barrier``."""
        assert self.rpc is not None
        await self.rpc.read_barrier()

    async def read_log(self, fn: Callable[[ScanLog, IsDup], R]) -> R:
        """``fn(storage, is_dup)`` in the storage worker thread: reads and appends share one
        limiter, so a read never races an append."""
        loop, storage = self.loop, self.storage
        assert loop is not None
        assert storage is not None
        is_dup = loop.applier.dup_indexes.__contains__
        return await trio.to_thread.run_sync(partial(fn, storage, is_dup), limiter=self.limiter)

    # -------------------------------------------------------------- running

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        storage = await trio.to_thread.run_sync(self._open_storage)
        self.storage = storage
        self.incarnations = await trio.to_thread.run_sync(Incarnations, self.data_dir, self.me.id)
        loop, rpc, listener = self._compose(storage)
        for warning in self.security.warnings:
            log.warning("%s: %s", self.me.id, warning)
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.poller.run)
                    with trio.move_on_after(FIRST_NTP_ROUND_S):
                        # Stamp no time before the clock had its chance to step into place.
                        await self.poller.wait_first_round()
                    nursery.start_soon(loop.run)
                    nursery.start_soon(self.retention.run, loop)
                    nursery.start_soon(rpc.probe_peers)
                    await nursery.start(self.members.run)
                    self.port = await nursery.start(listener.run)
                    await self._start_http(nursery)
                    log.info(
                        "%s: listening on %s://%s:%d (peers %s; %s; max_connections %d)",
                        self.me.id,
                        self.security.scheme,
                        self.me.host,
                        self.port,
                        ", ".join(p.id for p in self.peers) or "none",
                        describe(self.security),
                        listener.max_connections,
                    )
                    task_status.started(self.port)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(storage.close, limiter=self.limiter)
            log.info("%s: stopped; storage closed", self.me.id)

    def _compose(self, storage: SegmentedLog) -> tuple[RaftLoop, PeerRpc, Listener]:
        """The Raft loop over ``storage``, the peer links and RPC, and the listener."""
        c = self.config.cluster
        self.retention = Retention(self.config.retention, storage, self.me.id)
        inc = self.incarnations
        auth = LinkAuth(c.name, self.security.secret, self.security.client_ssl, inc.mine)
        self.members = Members(self.me, self.config, auth, self.links, self._peer_ip, inc)
        self.loop = loop = RaftLoop(
            node_id=self.me.id,
            voters=self.members.bootstrap,
            raft_config=self.raft_config,
            storage=storage,
            applier=Applier(c.dedup_window_records, c.dedup_window_s * 1_000_000_000),
            send=self._send_raft,
            on_applied=self._on_applied,
            tick_s=c.tick_ms / 1000,
            limiter=self.limiter,
            wall_ns=self.corrected_now,
            wants_events=lambda: bool(self.event_hub.subs),
            events=ReorderBuffer(
                reorder_window_ms=c.reorder_window_ms,
                max_records=c.reorder_max_records,
                max_bytes=c.reorder_max_bytes,
            ),
            time_tick_s=max(0.05, c.reorder_window_ms / 4000),
            compactor=self.retention.cut,
            on_conf=self.members.follow,
        )
        self.rpc = rpc = PeerRpc(
            self.me.id,
            loop,
            self.links,
            now_ns=self.corrected_now,
            skew=self.skew,
            applied=self._applied,
            submit=self.submit,
            status=self.status,
        )
        self.submits = Submits(
            self.me.id,
            loop,
            c.max_inflight_records,
            forward=rpc.forward,
            check_conflicts=partial(mark_conflicts, loop.applier, self.read_log),
        )
        peer_server = PeerServer(
            self.me.id,
            self.members,
            auth,
            rpc,
            loop.deliver_nowait,
            inc,
            lambda: self.members.conf.voters,
        )
        cap = connection_cap(c.max_connections, raise_open_files_limit(), FD_RESERVE, self.me.id)
        self.listener = Listener(
            self.me,
            self.peers,
            self.security,
            cap,
            peer_server.serve,
            partial(self._serve_client, self),
        )
        return loop, rpc, self.listener

    async def _start_http(self, nursery: trio.Nursery) -> None:
        if self.me.http is None or self._http_handler is None:
            return
        host, port = self.me.http
        site = self._http_handler(self)
        server = HttpServer(
            host,
            port,
            site.handle,
            body_limit=site.body_limit,
            ssl_context=self.security.server_ssl,
            name=self.me.id,
        )
        self.http_port = await nursery.start(server.run)
        log.info(
            "%s: HTTP on %s:%d (/metrics, /healthz, /readyz)", self.me.id, host, self.http_port
        )

    def grant_of(self, token: str | None) -> Grant | None:
        """Who a bearer token is (``Listener.grant_of``: the websocket port's rule)."""
        assert self.listener is not None
        return self.listener.grant_of(token)

    def _peer_ip(self, ip: str) -> None:
        if self.listener is not None:
            self.listener.peer_ips.add(ip)

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
        if (
            loop is not None
            and loop.replica.role is Role.LEADER
            and len(loop.status().conf.voters) > 1
        ):
            loop.request_transfer(None)
            with trio.move_on_after(transfer_timeout_s):
                while loop.replica.role is Role.LEADER:
                    await loop.role_changed.wait()
            if loop.replica.role is Role.LEADER:
                log.warning("%s: leadership transfer did not finish; stopping anyway", self.me.id)
            else:
                with trio.move_on_after(0.5):  # learn who took over, for the log line
                    while loop.replica.leader is None:
                        await loop.role_changed.wait()
                log.info("%s: handed leadership to %s", self.me.id, loop.replica.leader or "?")
        self._cancel.cancel()

    # ----------------------------------------------------------- raft glue

    def _send_raft(self, m: Message) -> None:
        link = self.links.get(m.dst)
        if link is None:
            return
        if isinstance(m, InstallSnapshot):
            # In order on the one link, as the queue makes room (``PeerLink.feed_bulk``).
            frames = peer_snapshot.chunks(m)
            if not frames:
                log.error("%s: snapshot at %d too large to send", self.me.id, m.snapshot.index)
            link.send_bulk(frames)
            return
        link.send_nowait(wp.encode_raft(m))

    def _on_applied(
        self, items: Sequence[tuple[Entry, Applied | None]], emitted: list[Emitted[BatchRef]]
    ) -> None:
        self._applied.unpark_all()
        if emitted:
            self.event_hub.publish(
                emitted, sum(len(em.payload.batch.data) // em.payload.batch.n for em in emitted)
            )
        if self.tail_hub.subs:
            recs: list[Rec] = []
            nbytes = 0
            for e, a in items:
                if a is not None:
                    dups = a.dups
                    recs += (r for k, r in enumerate(a.batch.records(e.term)) if k not in dups)
                    nbytes += len(e.data)
            self.tail_hub.publish(recs, nbytes)

    # -------------------------------------------------------------- submit

    async def submit(self, ids: list[bytes], bodies: list[bytes], ack: str) -> SubmitResult:
        """Store records (``ids[k]``, ``bodies[k]``) through the leader: acks in runs, or one
        error for the batch (``runtime.submit``)."""
        if self.submits is None or not self.accepting:
            return SubmitResult.failed("shutting_down", f"{self.me.id} is shutting down")
        return await self.submits.submit(ids, bodies, ack)

    async def member(self, req: Member) -> dict[str, Any]:
        """A ``member`` request (``runtime.member_ops``), with the members as they now are."""
        assert self.loop is not None
        reply = await member_command(self.loop, req, self._applied, self.me.id)
        reply["members"] = describe_members(self.loop.status(), self.members.address_of)
        return reply

    # -------------------------------------------------------------- status

    async def cluster_status(self) -> list[dict[str, Any]]:
        """Every member's full status (this node's, and each peer's over its link), at once."""
        assert self.rpc is not None
        rpc = self.rpc
        peers = sorted(self.links)
        out: list[dict[str, Any]] = [{**self.status(), "reachable": True}, *([{}] * len(peers))]

        async def one(i: int, peer: NodeId) -> None:
            out[i + 1] = await rpc.peer_status(peer)

        async with trio.open_nursery() as nursery:
            for i, peer in enumerate(peers):
                nursery.start_soon(one, i, peer)
        return out

    def histograms(self) -> dict[str, Histogram]:
        """The latency histograms ``/metrics`` exports (seconds)."""
        assert self.loop is not None
        return {"fsync": self.loop.fsync_s, "commit": self.loop.commit_s}

    def status(self) -> dict[str, Any]:
        """The full status (``service.status`` gives each role its view)."""
        return node_status.full(self)
