"""One outbound link to one peer: dial with backoff and jitter, say hello, send queued frames.

The queue is bounded in frames and in bytes; when it is full (a slow or dead peer) new frames
are dropped, so a bad follower never blocks the leader or grows its memory: Raft retransmits what
matters. (Bounded by frames alone, 2048 queued AppendEntries of up to 1 MiB let a leader feeding
a catching-up follower grow to 900 MB.)
Links are one-way: this node only sends on the connection it dialed. An idle link is pinged
(websocket ping/pong) so that a dead connection is noticed and redialled within about a second.
"""

from __future__ import annotations

import logging
from random import Random

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket

log = logging.getLogger("p2plog.net")

QUEUE_FRAMES = 2048
QUEUE_BYTES = 32 << 20
CONNECT_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 5.0
KEEPALIVE_S = 0.5
KEEPALIVE_TIMEOUT_S = 1.0
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 0.25  # a dead peer is redialled at least 4x/s: a new leader needs its links fast
MAX_MESSAGE_BYTES = 64 << 20
RECEIVE_BUFFER = 64 << 10


class PeerLink:
    def __init__(self, me: str, peer: str, host: str, port: int, hello: bytes) -> None:
        self.me = me
        self.peer = peer
        self.host = host
        self.port = port
        self.hello = hello
        self._tx, self._rx = trio.open_memory_channel[bytes](QUEUE_FRAMES)
        self.connected = False
        self.dropped = 0
        self.sent = 0
        self.queued_bytes = 0
        self._rng = Random()

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

    def _take_nowait(self) -> bytes:
        frame = self._rx.receive_nowait()
        self.queued_bytes -= len(frame)
        return frame

    async def run(self) -> None:
        """Keep a connection up until cancelled."""
        delay = BACKOFF_MIN_S
        while True:
            try:
                await self._session()
            except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as e:
                if self.connected:
                    log.warning("%s: link to %s lost: %s", self.me, self.peer, _reason(e))
                else:
                    log.debug("%s: cannot reach %s: %s", self.me, self.peer, _reason(e))
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
            use_ssl=False,
            max_message_size=MAX_MESSAGE_BYTES,
            receive_buffer_size=RECEIVE_BUFFER,
            connect_timeout=CONNECT_TIMEOUT_S,
            disconnect_timeout=1.0,
        ) as ws:
            with trio.fail_after(SEND_TIMEOUT_S):
                await ws.send_message(self.hello)
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


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionClosed) and e.reason is not None:
        return f"closed ({e.reason.code} {e.reason.reason or ''})".strip()
    return f"{type(e).__name__}: {e}"
