"""The node's listening side: TCP listeners capped in open connections, TLS, and limits that
trio-websocket applies per connection.

Connections are counted where they are accepted, before any handshake: a flood of connections
that never finish their handshake holds at most ``cap`` descriptors (each for at most the
handshake timeout), so the node never runs out of descriptors for its peers and its storage.
Over the cap a connection is closed at once (the session layer gives a clear HTTP refusal below
its own, lower, ``max_connections``); beyond it there is room reserved for the peers' own
addresses, so a flood from elsewhere cannot keep a peer from redialling. Without the cap,
~1,010 idle connections under a 1,024-descriptor limit left the listener failing ``accept``
with EMFILE every 100 ms.

Accepts are also paced (a token bucket, ``ACCEPT_RATE_S`` a second after a burst of
``ACCEPT_BURST``): a thousand connections arriving at once wait in the kernel's accept queue
instead of spending the event loop on handshakes for a second or more, long enough for a
leader to miss its heartbeats and lose its lease.
"""

from __future__ import annotations

import logging
import resource
import ssl
from collections.abc import Sequence
from typing import Any

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from p2plog.ratelog import RateLimitedLog

log = logging.getLogger("p2plog.net")

ACCEPT_RATE_S = 256
ACCEPT_BURST = 64


class CappedListener(trio.abc.Listener[trio.abc.Stream]):
    """A ``trio.SocketListener`` that holds at most ``cap`` accepted connections open, and
    wraps each in TLS when it has an ``ssl_context``.

    trio's socket classes cannot be subclassed, and trio-websocket looks at the types of the
    streams (``SocketStream``, or ``SSLStream`` over one) to name the remote end, so the streams
    handed out are the real ones; a connection counts until its socket is closed, which is
    seen by pruning at the next accept. (TLS is wrapped here, not by a ``trio.SSLListener``
    around this listener: trio-websocket insists that one wraps a ``SocketListener``.)"""

    def __init__(
        self,
        inner: trio.SocketListener,
        cap: int,
        node: str,
        ssl_context: ssl.SSLContext | None = None,
        reserve: tuple[set[str], int] = (set(), 0),
    ) -> None:
        self.inner = inner
        self.cap = cap
        self.reserved_ips, self.reserve = reserve
        self.node = node
        self.ssl_context = ssl_context
        self.refused = 0
        self._open: list[trio.SocketStream] = []
        self._log = RateLimitedLog(log, interval_s=10.0)
        self._tokens = float(ACCEPT_BURST)
        self._filled_at = trio.current_time()

    async def _pace(self) -> None:
        """Wait for an accept token (refilled at ``ACCEPT_RATE_S`` a second)."""
        now = trio.current_time()
        self._tokens = min(ACCEPT_BURST, self._tokens + (now - self._filled_at) * ACCEPT_RATE_S)
        self._filled_at = now
        if self._tokens < 1:
            await trio.sleep((1 - self._tokens) / ACCEPT_RATE_S)
            self._tokens, self._filled_at = 1.0, trio.current_time()
        self._tokens -= 1

    @property
    def open_connections(self) -> int:
        self._open = [s for s in self._open if s.socket.fileno() != -1]
        return len(self._open)

    async def accept(self) -> trio.abc.Stream:
        while True:
            await self._pace()
            stream = await self.inner.accept()
            n = self.open_connections
            if n < self.cap or (n < self.cap + self.reserve and _ip(stream) in self.reserved_ips):
                self._open.append(stream)
                if self.ssl_context is None:
                    return stream
                return trio.SSLStream(
                    stream, self.ssl_context, server_side=True, https_compatible=True
                )
            self.refused += 1
            self._log.warning(
                "%s: refused a connection from %s: %d connections are open, the most this "
                "node accepts (raise [cluster] max_connections, or ulimit -n)",
                self.node,
                _peer(stream),
                self.cap,
            )
            await stream.aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _ip(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return ""


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"


async def open_listeners(
    host: str,
    port: int,
    *,
    cap: int,
    node: str,
    ssl_context: ssl.SSLContext | None,
    reserve: tuple[set[str], int] = (set(), 0),
) -> tuple[CappedListener, int]:
    """The capped listener (TLS inside when ``ssl_context``; ``reserve``: room for that many
    more connections from those IP addresses, the peers') and the port it is bound to."""
    (inner,) = await trio.open_tcp_listeners(port, host=host)
    capped = CappedListener(inner, cap, node, ssl_context, reserve)
    return capped, inner.socket.getsockname()[1]


def remote_of(ws: Any) -> str:
    """``host:port`` of the other end of a websocket (or request), for log lines."""
    r = ws.remote
    return f"{r.address}:{r.port}" if hasattr(r, "address") else str(r)


def set_message_limit(ws: WebSocketConnection | WebSocketRequest, max_bytes: int) -> None:
    """Change the largest message ``ws`` takes, enforced as it arrives (trio-websocket closes
    with 1009 as soon as a message's received bytes pass it). The listener starts every
    connection with a small limit; the node raises it once it knows who is on the line (an
    authenticated peer, a client allowed to submit): on the request, before it is accepted,
    since the client may send its first frame the moment the handshake completes.
    trio-websocket 0.12 (pinned in constraints.txt) keeps the limit in
    ``WebSocketConnection._max_message_size`` with no setter; ``tests/unit/test_listener.py``
    fails if that changes."""
    conn = ws._connection if isinstance(ws, WebSocketRequest) else ws
    assert hasattr(conn, "_max_message_size"), "trio-websocket changed: see set_message_limit"
    conn._max_message_size = max_bytes


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (systemd and shells often start a
    process at 1024 while allowing far more) and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, e)
    return soft


def connection_cap(max_connections: int, open_files: int, reserve: int, node: str) -> int:
    """``max_connections``, lowered (with a warning) when the process may not open that many
    descriptors and still keep ``reserve`` for peers, storage and the handshakes in flight."""
    room = open_files - reserve
    if max_connections <= room:
        return max_connections
    lowered = max(16, room)
    log.warning(
        "%s: max_connections %d lowered to %d: this process may open %d files (ulimit -n) and "
        "keeps %d for peers, storage and handshakes; raise the limit to allow more",
        node,
        max_connections,
        lowered,
        open_files,
        reserve,
    )
    return lowered


__all__: Sequence[str] = [
    "CappedListener",
    "connection_cap",
    "open_listeners",
    "raise_open_files_limit",
    "remote_of",
    "set_message_limit",
]
