"""The node's one websocket port: ``/peer`` for members, ``/client`` for applications.

Decided at the HTTP handshake, before a websocket exists:

- more than ``max_connections`` client sessions, or more ``/peer`` sessions than the peers
  could need (a few each: links are redialled while old ones time out): 503 with the reason.
  The two are counted apart, so clients filling their share never lock a peer out; a flood of
  connections that never finish a handshake is stopped earlier, at the capped TCP listener
  (``net.server``);
- ``/client`` with an ``Authorization: Bearer`` token that is not in the tokens file: 401
  (a missing token is an anonymous connection: ``status`` and ``time`` only);
- any other path: 404.

Every connection starts with a small message limit that its role then raises (a stranger can
make the node buffer at most ``ANONYMOUS_FRAME`` bytes per connection). A handler never lets an
exception out: trio-websocket runs handlers in the server's nursery, where one escaping
exception would stop the node; an unexpected one ends that connection and is logged with its
traceback (rate-limited).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from trio_websocket import WebSocketRequest, WebSocketServer

from p2plog.net.server import CappedListener, open_listeners, remote_of, set_message_limit
from p2plog.ratelog import RateLimitedLog
from p2plog.security.tokens import ANONYMOUS, OPEN, Grant
from p2plog.wire.client import MAX_CLIENT_FRAME
from p2plog.wire.peer import MAX_HANDSHAKE_FRAME

if TYPE_CHECKING:
    from p2plog.runtime.node import Node

log = logging.getLogger("p2plog.node")

HANDSHAKE_TIMEOUT_S = 5.0  # TCP accepted -> websocket handshake (with TLS) done
HANDSHAKE_SLACK = 64  # connections the TCP listener holds beyond max_connections
ANONYMOUS_FRAME = 64 << 10
RECEIVE_BUFFER = 64 << 10


PEER_SESSIONS_EACH = 4


class Listener:
    def __init__(self, node: Node, max_connections: int) -> None:
        self.node = node
        self.max_connections = max_connections
        self.max_peer_sessions = PEER_SESSIONS_EACH * len(node.peers) + 8
        self.sessions = 0  # /client
        self.peer_sessions = 0
        self.refused = 0
        self.capped: CappedListener | None = None
        self._log = RateLimitedLog(log, interval_s=10.0)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        node = self.node
        self.capped, port = await open_listeners(
            node.me.host,
            node.me.port,
            cap=self.max_connections + self.max_peer_sessions + HANDSHAKE_SLACK,
            node=node.me.id,
            ssl_context=node.security.server_ssl,
        )
        server = WebSocketServer(
            self.handle,
            [self.capped],  # type: ignore[list-item]  # a Listener; see CappedListener
            max_message_size=MAX_HANDSHAKE_FRAME,
            receive_buffer_size=RECEIVE_BUFFER,
            connect_timeout=HANDSHAKE_TIMEOUT_S,
            disconnect_timeout=1.0,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            task_status.started(port)

    async def handle(self, request: WebSocketRequest) -> None:
        try:
            await self._route(request)
        except Exception:  # see the module docstring: one connection ends, never the node
            self._log.log(
                logging.ERROR,
                "%s: connection from %s failed unexpectedly; closed",
                self.node.me.id,
                remote_of(request),
                exc_info=True,
            )

    async def _route(self, request: WebSocketRequest) -> None:
        node = self.node
        if request.path not in ("/peer", "/client"):
            await request.reject(404, body=b"p2plog: use /peer or /client\n")
            return
        peer = request.path == "/peer"
        open_now, cap = (
            (self.peer_sessions, self.max_peer_sessions)
            if peer
            else (self.sessions, self.max_connections)
        )
        if open_now >= cap:
            self.refused += 1
            what = "peer links" if peer else "client connections ([cluster] max_connections)"
            self._log.warning(
                "%s: refused %s: %d %s open", node.me.id, remote_of(request), open_now, what
            )
            body = (
                f"p2plog: node {node.me.id} has {open_now} {what.split(' (')[0]} open, the "
                f"most it takes; retry later or use another node\n"
            )
            await request.reject(503, body=body.encode())
            return
        if peer:
            self.peer_sessions += 1
            try:
                from p2plog.runtime.peer_server import serve_peer

                await serve_peer(node, await request.accept())
            finally:
                self.peer_sessions -= 1
            return
        grant = self.grant(request)
        if grant is None:
            self._log.warning("%s: refused %s: unknown token", node.me.id, remote_of(request))
            await request.reject(
                401, body=b"p2plog: this token is not valid here (unknown or revoked)\n"
            )
            return
        self.sessions += 1
        try:
            from p2plog.runtime.client_session import serve_client

            set_message_limit(request, MAX_CLIENT_FRAME if grant.role else ANONYMOUS_FRAME)
            await serve_client(node, await request.accept(), grant)
        finally:
            self.sessions -= 1

    def grant(self, request: WebSocketRequest) -> Grant | None:
        """Who the client is: its token's grant, ``ANONYMOUS`` without a token, None for a
        token that is not valid. Without a tokens file everyone is ``OPEN``."""
        store = self.node.security.tokens
        if store is None:
            return OPEN
        problem = store.maybe_reload()
        if problem is not None:
            self._log.warning("%s: tokens file not reloaded: %s", self.node.me.id, problem)
        token = bearer(request.headers)
        if token is None:
            return ANONYMOUS
        return store.lookup(token)


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""  # a malformed header is a wrong token, not an anonymous connection
    return None
