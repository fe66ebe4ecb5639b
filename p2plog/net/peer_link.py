"""One outbound link to one peer: dial with backoff and jitter, authenticate, send queued frames.

The handshake (``p2plog.wire.peer_auth``): the peer sends a challenge, this node answers with a
hello that proves it holds the cluster secret, and the peer's welcome proves the same back;
frames go out only after that, so nothing is sent to a node that is not a member (with TLS,
the channel is also encrypted and the peer's certificate checked against the cluster CA).

The queue is bounded in frames and in bytes; when it is full (a slow or dead peer) new frames
are dropped, so a bad follower never blocks the leader or grows its memory: Raft retransmits what
matters. (Bounded by frames alone, 2048 queued AppendEntries of up to 1 MiB let a leader feeding
a catching-up follower grow to 900 MB.)
Links are one-way: this node only sends on the connection it dialed. An idle link is pinged
(websocket ping/pong) so that a dead connection is noticed and redialled within about a second.
"""

from __future__ import annotations

import logging
import secrets
import ssl
from dataclasses import dataclass, field
from random import Random
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket

from p2plog.ratelog import RateLimitedLog
from p2plog.wire.envelope import ProtocolError, encode
from p2plog.wire.peer import MAX_HANDSHAKE_FRAME, NONCE_BYTES, Challenge, Welcome, decode_peer
from p2plog.wire.peer_auth import hello_proof, same, welcome_proof

log = logging.getLogger("p2plog.net")

QUEUE_FRAMES = 2048
QUEUE_BYTES = 32 << 20
BULK_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 5.0
KEEPALIVE_S = 0.5
KEEPALIVE_TIMEOUT_S = 1.0
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 0.25  # a dead peer is redialled at least 4x/s: a new leader needs its links fast
RECEIVE_BUFFER = 64 << 10


@dataclass(frozen=True, slots=True)
class LinkAuth:
    """What a link needs to prove membership: the cluster's name and secret (empty: peers
    are not authenticated, loopback or ``insecure`` only) and, with TLS, the client context
    that checks the peer's certificate against the cluster CA."""

    cluster: str
    secret: bytes = field(repr=False)
    ssl_context: ssl.SSLContext | None = None
    incarnation: str = ""  # this node's data directory's (``runtime.incarnations``)


class PeerLink:
    def __init__(self, me: str, peer: str, host: str, port: int, auth: LinkAuth) -> None:
        self.me = me
        self.peer = peer
        self.host = host
        self.port = port
        self.auth = auth
        self._tx, self._rx = trio.open_memory_channel[bytes](QUEUE_FRAMES)
        self.connected = False
        self.dropped = 0
        self.sent = 0
        self.queued_bytes = 0
        self._rng = Random()
        self._auth_log = RateLimitedLog(log, interval_s=30.0, burst=1)
        self._bulk: list[bytes] | None = None
        self._bulk_ready = trio.Event()
        self._room = trio.Event()  # set when the queue holds under half its bytes

    def send_nowait(self, frame: bytes) -> bool:
        if self.queued_bytes + len(frame) > QUEUE_BYTES and self.queued_bytes:
            self.dropped += 1
            return False
        try:
            self._tx.send_nowait(frame)
        except trio.WouldBlock:
            self.dropped += 1
            return False
        self.queued_bytes += len(frame)
        return True

    def send_bulk(self, frames: list[bytes]) -> None:
        """Send ``frames`` (the chunks of one snapshot) in order as the queue makes room:
        ``feed_bulk`` queues each once the queue holds under half its bytes, so a snapshot
        larger than the queue still goes whole. A newer bulk replaces one not yet sent."""
        self._bulk = frames
        self._bulk_ready.set()

    async def feed_bulk(self) -> None:
        """The task behind ``send_bulk``; runs until cancelled. A bulk that cannot be queued
        within ``BULK_TIMEOUT_S`` is dropped (the sender tries again: Raft resends)."""
        while True:
            await self._bulk_ready.wait()
            self._bulk_ready = trio.Event()
            frames, self._bulk = self._bulk, None
            with trio.move_on_after(BULK_TIMEOUT_S) as scope:
                for frame in frames or ():
                    while self.queued_bytes + len(frame) > QUEUE_BYTES // 2 and self.queued_bytes:
                        self._room = trio.Event()
                        await self._room.wait()
                    if self._bulk is not None or not self.send_nowait(frame):
                        break  # a newer snapshot replaces this one / the queue is full
            if scope.cancelled_caught:
                log.warning("%s: a snapshot for %s could not be queued in time", self.me, self.peer)

    def _take_nowait(self) -> bytes:
        frame = self._rx.receive_nowait()
        self.queued_bytes -= len(frame)
        if self.queued_bytes <= QUEUE_BYTES // 2:
            self._room.set()
        return frame

    async def run(self) -> None:
        """Keep a connection up until cancelled."""
        delay = BACKOFF_MIN_S
        while True:
            try:
                await self._session()
            except (
                OSError,
                HandshakeError,
                ConnectionClosed,
                trio.TooSlowError,
                trio.BrokenResourceError,
                ProtocolError,
            ) as e:
                if isinstance(e, ProtocolError):
                    self._auth_log.warning("%s: link to %s refused: %s", self.me, self.peer, e)
                elif _policy_close(e):  # the peer refused us with a reason (1008): say it
                    self._auth_log.warning(
                        "%s: link to %s refused: %s", self.me, self.peer, _reason(e)
                    )
                elif self.connected:
                    log.warning("%s: link to %s lost: %s", self.me, self.peer, _reason(e))
                else:
                    log.debug("%s: cannot reach %s: %s", self.me, self.peer, _reason(e))
            except Exception:  # a bug must end this connection, not the node: log it, redial
                self._auth_log.log(
                    logging.ERROR,
                    "%s: link to %s failed unexpectedly; redialling",
                    self.me,
                    self.peer,
                    exc_info=True,
                )
            finally:
                if self.connected:
                    delay = BACKOFF_MIN_S  # it was up: redial soon, back off only if it stays down
                self.connected = False
            await trio.sleep(delay * (0.5 + self._rng.random()))
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _session(self) -> None:
        # Frames queued while we were disconnected are stale: Raft resends what matters.
        while True:
            try:
                self._take_nowait()
            except trio.WouldBlock:
                break
        async with open_websocket(
            self.host,
            self.port,
            "/peer",
            use_ssl=self.auth.ssl_context or False,
            max_message_size=MAX_HANDSHAKE_FRAME,  # the peer only ever sends the handshake
            receive_buffer_size=RECEIVE_BUFFER,
            connect_timeout=CONNECT_TIMEOUT_S,
            disconnect_timeout=1.0,
        ) as ws:
            with trio.fail_after(SEND_TIMEOUT_S):
                await self._handshake(ws)
            self.connected = True
            log.info("%s: link to %s up", self.me, self.peer)
            while True:
                frame = None
                with trio.move_on_after(KEEPALIVE_S):
                    frame = await self._rx.receive()
                    self.queued_bytes -= len(frame)
                if frame is None:
                    # Idle (two followers never send each other Raft traffic): prove the link
                    # is alive, so a dead one is redialled before an election needs it.
                    with trio.fail_after(KEEPALIVE_TIMEOUT_S):
                        await ws.ping()
                    continue
                with trio.fail_after(SEND_TIMEOUT_S):
                    await ws.send_message(frame)
                self.sent += 1

    async def _handshake(self, ws: Any) -> None:
        """Answer the peer's challenge, then check its welcome (``ProtocolError``: it is not a
        member, or not the member we dialed)."""
        challenge = decode_peer(await ws.get_message(), MAX_HANDSHAKE_FRAME)
        if not isinstance(challenge, Challenge):
            raise ProtocolError(f"expected a challenge, got {type(challenge).__name__}")
        a = self.auth
        nonce = secrets.token_bytes(NONCE_BYTES)
        proof = hello_proof(a.secret, a.cluster, self.me, self.peer, challenge.nonce, nonce)
        hello = {"node": self.me, "to": self.peer, "nonce": nonce, "proof": proof}
        if a.incarnation:
            hello["inc"] = a.incarnation
        await ws.send_message(encode("hello", hello))
        welcome = decode_peer(await ws.get_message(), MAX_HANDSHAKE_FRAME)
        expect = welcome_proof(a.secret, a.cluster, self.me, self.peer, challenge.nonce, nonce)
        if not isinstance(welcome, Welcome) or not same(welcome.proof, expect):
            raise ProtocolError(
                f"{self.peer} did not prove it holds this cluster's secret (a different "
                f"[security] secret_file or [cluster] name?)"
            )


def _policy_close(e: BaseException) -> bool:
    return isinstance(e, ConnectionClosed) and e.reason is not None and e.reason.code == 1008


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionClosed) and e.reason is not None:
        return f"closed ({e.reason.code} {e.reason.reason or ''})".strip()
    return f"{type(e).__name__}: {e}"
