"""One websocket to one node's ``/client`` endpoint, many requests in flight on it.

Shape (trio-websocket's own): a reader task owns the receiving side and dispatches each reply
to the request waiting for its ``req`` through a bounded memory channel; senders share the
connection through trio-websocket's send lock. Invariants:

- every request is in ``_pending`` from before its frame is sent until its waiter leaves, and
  at most ``max_pending`` are (a semaphore, acquired under the caller's deadline);
- when the connection ends for any reason, every pending channel is closed, so every waiter
  wakes with ``ConnectionLost`` naming the reason; nothing waits on a dead connection;
- a send is shielded from the caller's cancellation (a half-written frame would corrupt the
  stream) but bounded by its own deadline; a send that times out closes the connection;
- a stream (``tail``) whose reader falls behind its buffer is dropped from ``_pending`` and
  ends with ``StreamOverflow``; the reader task never waits on a consumer;
- a ping every ``ping_interval_s`` without a pong in ``ping_timeout_s`` closes the connection,
  so a silent half-open TCP connection cannot hang a tail forever.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket,
)

from p2plog.client.dial import Dial
from p2plog.client.errors import (
    AuthError,
    ConnectError,
    ConnectionLost,
    RequestTimeout,
    StreamOverflow,
)
from p2plog.config import split_address
from p2plog.wire.envelope import ProtocolError, decode, encode, get_int

log = logging.getLogger("p2plog.client")

MAX_REPLY_BYTES = 64 << 20  # a query page of 1000 records of up to 64 KiB each
RECEIVE_BUFFER_BYTES = 64 << 10
SEND_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0
STREAM_FRAMES = 256

Reply = dict[str, Any]


class Stream:
    """The replies to one long-lived request (``tail``), in order."""

    def __init__(self, conn: Connection, req: int, rx: trio.MemoryReceiveChannel[Reply]) -> None:
        self.conn = conn
        self.req = req
        self._rx = rx

    async def receive(self) -> Reply:
        """The next reply; ``ConnectionLost``/``StreamOverflow`` when the stream is over."""
        try:
            return await self._rx.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self.conn.end_error(self.req) from None

    async def aclose(self) -> None:
        """Stop the stream here and, if the connection lives, on the node (``cancel``)."""
        if self.conn.release(self.req) and self.conn.alive:
            with contextlib.suppress(ConnectionLost):
                await self.conn.send("cancel", {"req": self.req})


class Connection:
    def __init__(
        self, address: str, *, connect_timeout_s: float, max_pending: int, dial: Dial | None = None
    ) -> None:
        self.address = address
        self.dial = dial or Dial(None)
        self.host, self.port = split_address(address)
        self.connect_timeout_s = connect_timeout_s
        self.ping_interval_s = 15.0
        self.ping_timeout_s = 10.0
        self.frames_sent = 0
        self.clock_offset_ns = 0  # node clock minus ours, measured after connecting
        self.closed_reason: str | None = None
        self._ws: WebSocketConnection | None = None
        self._reqs = itertools.count(1)
        self._pending: dict[int, trio.MemorySendChannel[Reply]] = {}
        self._overflowed: set[int] = set()
        self._holding: set[int] = set()  # requests holding a slot
        self._slots = trio.Semaphore(max_pending)
        self._scope = trio.CancelScope()

    def __repr__(self) -> str:
        return f"Connection({self.address}, pending={len(self._pending)})"

    @property
    def alive(self) -> bool:
        return self._ws is not None and self.closed_reason is None

    # ----------------------------------------------------------------- lifetime

    async def run(
        self, *, task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, then read replies until closed. Before ``started``, a failure to connect
        raises ``ConnectError``; afterwards the end of the connection is recorded in
        ``closed_reason`` and reported to the waiters, never raised."""
        try:
            async with open_websocket(
                self.host,
                self.port,
                "/client",
                use_ssl=self.dial.ssl_context or False,
                extra_headers=self.dial.headers,
                max_message_size=MAX_REPLY_BYTES,
                receive_buffer_size=RECEIVE_BUFFER_BYTES,
                connect_timeout=self.connect_timeout_s,
                disconnect_timeout=CLOSE_TIMEOUT_S,
            ) as ws:
                self._ws = ws
                task_status.started(self)
                with self._scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._keepalive, ws)
                        await self._read(ws)
                        nursery.cancel_scope.cancel()
        except (
            OSError,
            HandshakeError,
            ConnectionClosed,
            trio.TooSlowError,
            trio.BrokenResourceError,
        ) as e:
            if self._ws is None:
                if isinstance(e, ConnectionRejected) and e.status_code == 401:
                    raise AuthError(self.address, _body(e)) from None
                raise ConnectError(self.address, describe(e)) from None
            self._set_closed(describe(e))
        finally:
            self._set_closed("connection closed")
            self._fail_pending()

    def close(self, reason: str) -> None:
        """End the connection; every waiter gets ``ConnectionLost(reason)``."""
        self._set_closed(reason)
        self._scope.cancel()
        self._fail_pending()

    def _set_closed(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason

    def _fail_pending(self) -> None:
        for tx in self._pending.values():
            tx.close()
        self._pending.clear()

    async def _read(self, ws: WebSocketConnection) -> None:
        while True:
            try:
                data = await ws.get_message()
            except ConnectionClosed as e:
                self._set_closed(describe(e))
                return
            try:
                msg = decode(data, MAX_REPLY_BYTES)
                req = get_int(msg, "req")
            except ProtocolError as e:
                # A misbehaving node: drop this connection, the client fails over.
                log.warning("client: closing the connection to %s: %s", self.address, e)
                self._set_closed(f"protocol error from {self.address}: {e}")
                return
            tx = self._pending.get(req)
            if tx is None:
                continue  # a reply nobody waits for any more (timed out or cancelled)
            try:
                tx.send_nowait(msg)
            except trio.WouldBlock:
                self._overflowed.add(req)
                del self._pending[req]
                tx.close()

    async def _keepalive(self, ws: WebSocketConnection) -> None:
        while True:
            await trio.sleep(self.ping_interval_s)
            with trio.move_on_after(self.ping_timeout_s) as scope:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return
            if scope.cancelled_caught:
                self.close(f"no pong from {self.address} within {self.ping_timeout_s:.0f} s")
                return

    # ----------------------------------------------------------------- requests

    async def send(self, kind: str, fields: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or self.closed_reason is not None:
            raise ConnectionLost(f"{self.address}: {self.closed_reason or 'not connected'}")
        data = encode(kind, fields)
        # Shielded: a frame cut in half by the caller's timeout would corrupt the stream.
        with trio.CancelScope(shield=True), trio.move_on_after(SEND_TIMEOUT_S) as scope:
            try:
                await ws.send_message(data)
            except ConnectionClosed as e:
                self.close(describe(e))
        if scope.cancelled_caught:
            self.close(f"send to {self.address} blocked for {SEND_TIMEOUT_S:.0f} s")
        if self.closed_reason is not None:
            raise ConnectionLost(f"{self.address}: {self.closed_reason}")
        self.frames_sent += 1

    async def request(self, kind: str, fields: dict[str, Any], *, timeout_s: float) -> Reply:
        """Send one request and return its one reply (``error`` replies included)."""
        with trio.move_on_after(timeout_s):
            await self._slots.acquire()
            req, rx = self._register(1)
            try:
                await self.send(kind, {**fields, "req": req})
                try:
                    return await rx.receive()
                except trio.EndOfChannel:
                    raise self.end_error(req) from None
            finally:
                self.release(req)
        raise RequestTimeout(f"{self.address}: no reply to {kind} within {timeout_s:.1f} s")

    async def open_stream(self, kind: str, fields: dict[str, Any], *, timeout_s: float) -> Stream:
        """Send a request whose replies keep coming (``tail``); holds a slot until closed."""
        with trio.move_on_after(timeout_s):
            await self._slots.acquire()
            req, rx = self._register(STREAM_FRAMES)
            stream = Stream(self, req, rx)
            try:
                await self.send(kind, {**fields, "req": req})
            except BaseException:
                self.release(req)
                raise
            return stream
        raise RequestTimeout(f"{self.address}: could not start {kind} within {timeout_s:.1f} s")

    def _register(self, capacity: int) -> tuple[int, trio.MemoryReceiveChannel[Reply]]:
        """Enter a request that already holds a slot; its channel is closed at once if the
        connection is already gone."""
        req = next(self._reqs)
        self._holding.add(req)
        tx, rx = trio.open_memory_channel[Reply](capacity)
        if self.closed_reason is None:
            self._pending[req] = tx
        else:
            tx.close()
        return req, rx

    def release(self, req: int) -> bool:
        """Forget request ``req`` and free its slot; False if it was already released."""
        if req not in self._holding:
            return False
        self._holding.discard(req)
        self._overflowed.discard(req)
        self._pending.pop(req, None)
        self._slots.release()
        return True

    def end_error(self, req: int) -> Exception:
        if req in self._overflowed:
            return StreamOverflow(f"{self.address}: the reader of request {req} fell behind")
        return ConnectionLost(f"{self.address}: {self.closed_reason or 'connection closed'}")


def _body(e: ConnectionRejected) -> str:
    text = (e.body or b"").decode("utf-8", "replace").strip().removeprefix("p2plog: ")
    return text[:200] or f"HTTP {e.status_code}"


def describe(e: BaseException) -> str:
    """A short human reason for a connection failure."""
    if isinstance(e, ConnectionClosed) and e.reason is not None:
        r = e.reason
        return f"connection closed ({r.code} {r.name}{': ' + r.reason if r.reason else ''})"
    if isinstance(e, ConnectionRejected):
        return f"refused: {_body(e)}"
    if isinstance(e, HandshakeError) and e.__cause__ is not None:
        return describe(e.__cause__)
    if isinstance(e, OSError):
        # trio's open_tcp_stream: "all attempts ... failed" caused by a group of OSErrors.
        causes = getattr(e.__cause__, "exceptions", ())
        errnos = [c.errno for c in causes if isinstance(c, OSError) and c.errno]
        if errnos:
            return os.strerror(errnos[0]).lower()
        if e.errno:
            return os.strerror(e.errno).lower()
    if isinstance(e, trio.TooSlowError | HandshakeError):
        return f"{type(e).__name__} (timed out or refused during the websocket handshake)"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
