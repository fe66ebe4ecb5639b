"""The node's one websocket port: ``/peer`` for members, ``/client`` for applications.

Decided at the HTTP handshake, before a websocket exists:

- more connections of a kind open than its pool takes: 503 with the reason. Pools: clients
  with a token (``max_connections``), clients without one (64: status and time are all they
  may ask), peer handshakes from the peers' own addresses, peer handshakes from anywhere else
  (32). Strangers filling theirs never lock out a client with a token or a peer; an
  authenticated member holds at most a few links (``peer_server``). A flood of connections
  that never finish a handshake is stopped earlier, at the capped TCP listener (``net.server``),
  which keeps room for the peers' addresses too;
- ``/client`` with an ``Authorization: Bearer`` token that is not in the tokens file: 401
  (a missing token is an anonymous connection: ``status`` and ``time`` only);
- any other path: 404.

Every connection starts with a small message limit that its role then raises (a stranger can
make the node buffer at most ``ANONYMOUS_FRAME`` bytes per connection). A handler never lets an
exception out: trio-websocket runs handlers in the server's nursery, where one escaping
exception would stop the node; an unexpected one ends that connection and is logged with its
traceback (rate-limited). The same holds for trio-websocket's own per-connection tasks
(``ContainedServer``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest, WebSocketServer

from p2plog.config import NodeConfig
from p2plog.net.server import CappedListener, open_listeners, remote_of, set_message_limit
from p2plog.ratelog import RateLimitedLog
from p2plog.security.policy import NodeSecurity
from p2plog.security.tokens import ANONYMOUS, OPEN, Grant
from p2plog.wire.client import MAX_CLIENT_FRAME
from p2plog.wire.peer import MAX_HANDSHAKE_FRAME

log = logging.getLogger("p2plog.node")

# What the node serves on the two paths (``runtime.peer_server``, ``service.session``): the
# listener knows connections, pools and tokens, not what flows over them.
ServePeer = Callable[[WebSocketConnection, Callable[[str], bool]], Awaitable[None]]
ServeClient = Callable[[WebSocketConnection, Grant], Awaitable[None]]

HANDSHAKE_TIMEOUT_S = 5.0  # TCP accepted -> websocket handshake (with TLS) done
HANDSHAKE_SLACK = 64  # connections the TCP listener holds beyond max_connections
ANONYMOUS_FRAME = 64 << 10
RECEIVE_BUFFER = 64 << 10


PEER_SESSIONS_EACH = 4  # links a member may hold to this node (one, and a few being redialled)
STRANGER_HANDSHAKES = 32
ANONYMOUS_SESSIONS = 64


class ContainedServer(WebSocketServer):
    """A ``WebSocketServer`` in which one connection's failure ends that connection only.

    trio-websocket runs each connection's reader task in a nursery of the server's: an
    exception there would cancel every connection and stop the node. One does occur: a message
    over the size limit that arrives while the node is closing that connection makes the
    reader send a close frame in the ``LOCAL_CLOSING`` state, and wsproto raises
    ``LocalProtocolError`` (python-trio/trio-websocket#175; found by ``tests/process/
    test_fuzz.py``). Cancellation still goes through (``except*`` takes only ``Exception``).
    """

    def __init__(self, *args: Any, node: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._node = node
        self._failures = RateLimitedLog(log, interval_s=10.0)

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        try:
            await super()._handle_connection(stream)
        except* Exception as eg:
            self._failures.log(
                logging.WARNING,
                "%s: a connection's websocket task failed (%s); that connection is closed",
                self._node,
                _first_line(eg),
            )
            with trio.move_on_after(1.0) as scope:
                scope.shield = True
                await trio.aclose_forcefully(stream)


def _first_line(eg: BaseExceptionGroup[Exception]) -> str:
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class Pool:
    """Connections of one kind open at once, up to ``cap``."""

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.open = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


class Admission:
    """One inbound peer link: in its handshake pool until it authenticates, then counted
    against its member's links (at most ``PEER_SESSIONS_EACH``: a member holds one link, and
    a few more only while a dead one has not timed out)."""

    def __init__(self, pool: Pool, member_links: dict[str, int]) -> None:
        self.pool = pool
        self.member_links = member_links
        self.member: str | None = None

    def __enter__(self) -> Admission:
        self.pool.open += 1
        return self

    def admit(self, member: str) -> bool:
        """Move the link from the handshake pool to ``member``'s links; False: it has its
        fill of links already (the link is then refused)."""
        if self.member_links.get(member, 0) >= PEER_SESSIONS_EACH:
            return False
        self.pool.open -= 1
        self.member = member
        self.member_links[member] = self.member_links.get(member, 0) + 1
        return True

    def __exit__(self, *exc: object) -> None:
        if self.member is None:
            self.pool.open -= 1
        else:
            self.member_links[self.member] -= 1


class Listener:
    def __init__(
        self,
        me: NodeConfig,
        peers: Sequence[NodeConfig],
        security: NodeSecurity,
        max_connections: int,
        serve_peer: ServePeer,
        serve_client: ServeClient,
    ) -> None:
        self.me = me
        self.security = security
        self.max_connections = max_connections
        self.serve_peer = serve_peer
        self.serve_client = serve_client
        n_peers = len(peers)
        self.pools = {
            p.name: p
            for p in (
                Pool("client connections", max_connections),
                Pool("anonymous connections", min(ANONYMOUS_SESSIONS, max_connections)),
                Pool("peer handshakes", PEER_SESSIONS_EACH * n_peers + 8),
                Pool("strangers' peer handshakes", STRANGER_HANDSHAKES),
            )
        }
        self.peer_reserve = PEER_SESSIONS_EACH * n_peers + 8
        self.member_links: dict[str, int] = {}  # authenticated inbound links per member
        self.peer_ips = peer_addresses(peers)
        self.refused = 0
        self.capped: CappedListener | None = None
        self._log = RateLimitedLog(log, interval_s=10.0)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.capped, port = await open_listeners(
            self.me.host,
            self.me.port,
            cap=self.max_connections + ANONYMOUS_SESSIONS + HANDSHAKE_SLACK,
            node=self.me.id,
            ssl_context=self.security.server_ssl,
            reserve=(self.peer_ips, self.peer_reserve),
        )
        server = ContainedServer(
            self.handle,
            [self.capped],  # a Listener; see CappedListener
            max_message_size=MAX_HANDSHAKE_FRAME,
            receive_buffer_size=RECEIVE_BUFFER,
            connect_timeout=HANDSHAKE_TIMEOUT_S,
            disconnect_timeout=1.0,
            node=self.me.id,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            task_status.started(port)

    def statistics(self) -> dict[str, int]:
        """Connections open per pool, authenticated inbound peer links, TCP connections open
        and the connections refused so far."""
        tcp = self.capped.open_connections if self.capped is not None else 0
        out = {name.replace(" ", "_").replace("'", ""): p.open for name, p in self.pools.items()}
        out["peer_links_in"] = sum(self.member_links.values())
        return {**out, "tcp": tcp, "refused": self.refused}

    async def handle(self, request: WebSocketRequest) -> None:
        try:
            await self._route(request)
        except Exception:  # see the module docstring: one connection ends, never the node
            self._log.log(
                logging.ERROR,
                "%s: connection from %s failed unexpectedly; closed",
                self.me.id,
                remote_of(request),
                exc_info=True,
            )

    async def _route(self, request: WebSocketRequest) -> None:
        me = self.me.id
        if request.path not in ("/peer", "/client"):
            await request.reject(404, body=b"p2plog: use /peer or /client\n")
            return
        if request.path == "/peer":
            known = request_ip(request) in self.peer_ips
            pool = self.pools["peer handshakes" if known else "strangers' peer handshakes"]
            if await self._full(request, pool):
                return
            with Admission(pool, self.member_links) as admission:
                await self.serve_peer(await request.accept(), admission.admit)
            return
        grant = self.grant(request)
        if grant is None:
            self._log.warning("%s: refused %s: unknown token", me, remote_of(request))
            await request.reject(
                401, body=b"p2plog: this token is not valid here (unknown or revoked)\n"
            )
            return
        pool = self.pools["client connections" if grant.role else "anonymous connections"]
        if await self._full(request, pool):
            return
        with pool.held():
            set_message_limit(request, MAX_CLIENT_FRAME if grant.role else ANONYMOUS_FRAME)
            await self.serve_client(await request.accept(), grant)

    async def _full(self, request: WebSocketRequest, pool: Pool) -> bool:
        """Refuse ``request`` with 503 and the reason if ``pool`` is full."""
        if pool.open < pool.cap:
            return False
        self.refused += 1
        self._log.warning(
            "%s: refused %s: %d %s open, the most this node takes",
            self.me.id,
            remote_of(request),
            pool.open,
            pool.name,
        )
        body = f"p2plog: {pool.open} {pool.name} open, the most this node takes; retry later\n"
        await request.reject(503, body=body.encode())
        return True

    def grant(self, request: WebSocketRequest) -> Grant | None:
        """Who the client is (``grant_of`` its bearer token)."""
        return self.grant_of(bearer(request.headers))

    def grant_of(self, token: str | None) -> Grant | None:
        """A token's grant, ``ANONYMOUS`` without a token (None), None for a token that is not
        valid. Without a tokens file everyone is ``OPEN``. (The HTTP port asks this too.)"""
        store = self.security.tokens
        if store is None:
            return OPEN
        problem = store.maybe_reload()
        if problem is not None:
            self._log.warning("%s: tokens file not reloaded: %s", self.me.id, problem)
        if token is None:
            return ANONYMOUS
        return store.lookup(token)


def request_ip(request: WebSocketRequest) -> str:
    r = request.remote
    return str(getattr(r, "address", ""))


def peer_addresses(peers: Sequence[NodeConfig]) -> set[str]:
    """The IP addresses the configured peers may connect from (their hosts, resolved once at
    start; a name that does not resolve is left out)."""
    ips: set[str] = set()
    for p in peers:
        try:
            infos = socket.getaddrinfo(p.host, None, type=socket.SOCK_STREAM)
        except OSError:
            continue
        ips.update(str(info[4][0]) for info in infos)
    return ips


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header's value (None: no header)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return ""  # a malformed header is a wrong token, not an anonymous connection
