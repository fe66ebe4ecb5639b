"""A websocket on the HTTP port (RFC 6455 over an h11 upgrade), for endpoints that push to the
client (Loki's ``/loki/api/v1/tail``): wsproto's frame layer on the stream h11 hands over.

Only what a push endpoint needs: the server sends text messages; it answers pings and a close,
and ignores what else the client sends (bounded: a message over ``MAX_INCOMING_BYTES`` ends the
connection). Every write is under the HTTP port's write deadline; the feed stops as soon as the
client closes or goes away (``run`` cancels it).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Awaitable, Callable

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError, generate_accept_token

MAX_INCOMING_BYTES = 64 << 10
CLOSE_TIMEOUT_S = 1.0
PING_EVERY_S = 20.0
SILENT_AFTER_S = 60.0
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


def is_upgrade(headers: dict[str, str]) -> bool:
    return (
        headers.get("upgrade", "").lower() == "websocket"
        and "upgrade" in headers.get("connection", "").lower()
    )


def accept_headers(headers: dict[str, str]) -> list[tuple[str, str]] | None:
    """The 101 reply's headers for a websocket handshake, or None when it is not a valid one
    (RFC 6455 section 4.2.1: version 13 and a 16-byte key)."""
    key = headers.get("sec-websocket-key", "")
    try:
        ok = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        ok = False
    if not ok or headers.get("sec-websocket-version") != "13" or not is_upgrade(headers):
        return None
    accept = generate_accept_token(key.encode()).decode()  # RFC 6455 section 4.2.2
    return [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-accept", accept)]


class PushSocket:
    """The server side of an upgraded connection: ``send`` text, until the client leaves.

    A client that goes away without a word (a laptop lid, a NAT that forgot the flow) is
    noticed: the server pings every ``PING_EVERY_S``, and a connection from which nothing
    (a pong, anything) arrived for ``SILENT_AFTER_S`` is closed, as Loki's own tail does."""

    def __init__(self, stream: trio.abc.Stream, trailing: bytes, write_timeout_s: float) -> None:
        self._stream = stream
        self._ws = Connection(ConnectionType.SERVER, trailing_data=trailing)
        self._timeout = write_timeout_s
        self._lock = trio.Lock()
        self.closed = False

    async def send(self, text: str) -> None:
        """One text message; ``trio.BrokenResourceError`` once the connection is closing."""
        if self.closed or self._ws.state is not ConnectionState.OPEN:
            raise trio.BrokenResourceError("the websocket is closing")
        await self._write(self._ws.send(TextMessage(data=text)))

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            with trio.fail_after(self._timeout):
                await self._stream.send_all(data)

    async def run(self, feed: Callable[[PushSocket], Awaitable[None]]) -> None:
        """``feed(self)`` beside a reader of the client's frames and a pinger; whichever ends
        first ends all, then the connection is closed (1000). A client that went away or
        stopped reading ends it quietly: that is how a tail ends."""
        try:
            async with trio.open_nursery() as nursery:

                async def fed() -> None:
                    await feed(self)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(fed)
                nursery.start_soon(self._pings)
                await self._read()
                nursery.cancel_scope.cancel()
        except* (*_GONE, trio.TooSlowError, LocalProtocolError):
            self.closed = True  # (nothing more can be said on it)
        await self._close()

    async def _pings(self) -> None:
        while True:
            await trio.sleep(PING_EVERY_S)
            if self.closed or self._ws.state is not ConnectionState.OPEN:
                return
            await self._write(self._ws.send(Ping()))

    async def _read(self) -> None:
        size = 0
        while True:
            for ev in self._ws.events():
                if isinstance(ev, Ping):
                    await self._write(self._ws.send(ev.response()))
                elif isinstance(ev, CloseConnection):
                    self.closed = True
                    with contextlib.suppress(LocalProtocolError):
                        await self._write(self._ws.send(ev.response()))
                    return
                elif isinstance(ev, Message):
                    size = 0 if ev.message_finished else size + len(ev.data)
                    if size > MAX_INCOMING_BYTES:
                        return
            data = None
            with trio.move_on_after(SILENT_AFTER_S):
                data = await self._stream.receive_some(MAX_INCOMING_BYTES)
            if not data:
                return  # closed, or silent past a ping's answer
            try:
                self._ws.receive_data(bytes(data))
            except RemoteProtocolError:
                return

    async def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with trio.move_on_after(CLOSE_TIMEOUT_S):
            with contextlib.suppress(LocalProtocolError, *_GONE):
                await self._write(self._ws.send(CloseConnection(code=1000)))


def switched(conn: h11.Connection) -> bytes:
    """What the client sent after its upgrade request (h11 hands it over)."""
    data, _closed = conn.trailing_data
    return bytes(data)
