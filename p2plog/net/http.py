"""A small HTTP/1.1 server on trio and h11 (the sans-I/O HTTP parser trio-websocket already
brings): the node's operator port (``/metrics``, ``/healthz``, ``/readyz``, the console) and
its other protocols (OTLP and Loki pushes, Loki's reads, a websocket tail).

Why not an ASGI stack (Hypercorn + Starlette): the endpoints are a handful of routes and two
streams, and this server runs in the node's own nursery with the node's bounds; the measured
cost of each is in the issue-17 note. Bounded like the websocket port: at most
``max_connections`` at once (the rest get 503 and are closed), request heads of at most
``MAX_HEAD_BYTES``, bodies of at most ``body_limit(method, path)`` bytes (413, from the
``Content-Length`` when it says so, before the body is read), every read and write under a
deadline (a body's grows with its size, at ``MIN_BODY_BYTES_PER_S``), keep-alive connections
closed after ``IDLE_TIMEOUT_S``. A handler that raises ends
its connection with a 500, never the server. TLS: the node's server context, if it has one.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from p2plog.net.http_ws import PushSocket, accept_headers, switched
from p2plog.ratelog import RateLimitedLog

log = logging.getLogger("p2plog.http")
_errors = RateLimitedLog(log, interval_s=10.0)

MAX_HEAD_BYTES = 16 << 10
READ_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
RECEIVE_BYTES = 64 << 10
MIN_BODY_BYTES_PER_S = 256 << 10  # the slowest upload a body is given time for


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    remote: str

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # A streamed body (server-sent events): called with a writer of chunks; when it returns
    # (or a write fails: the client went away) the response ends and the connection closes.
    stream: Callable[[Writer], Awaitable[None]] | None = None
    # An accepted websocket upgrade (``net.http_ws``): the connection switches protocols and
    # this feeds it until either side ends it.
    websocket: Callable[[PushSocket], Awaitable[None]] | None = None


Writer = Callable[[bytes], Awaitable[None]]


def text(status: int, msg: str) -> HttpResponse:
    return HttpResponse(status, (msg.rstrip("\n") + "\n").encode())


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
BodyLimit = Callable[[str, str], int]  # (method, path) -> the most body bytes taken


@dataclass(frozen=True, slots=True)
class Site:
    """What a server serves: its handler, and how big a body each path takes."""

    handle: Handler
    body_limit: BodyLimit


# h11 exports the state without declaring it (h11/__init__.py re-exports _state's names).
_MIGHT_SWITCH = getattr(h11, "MIGHT_SWITCH_PROTOCOL")  # noqa: B009
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class _Closed(Exception):
    """The connection is done (closed by the peer, a timeout, or a protocol error)."""


class HttpServer:
    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 64,
        max_body: int = 1 << 20,
        body_limit: BodyLimit | None = None,
        name: str = "-",
    ) -> None:
        self.host, self.port = host, port
        self.handler = handler
        self.ssl_context = ssl_context
        self.body_limit: BodyLimit = body_limit or (lambda _m, _p: max_body)
        self.name = name
        self.slots = trio.Semaphore(max_connections)
        self.open = 0
        self.refused = 0
        self.requests = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for lst in listeners:
                nursery.start_soon(self._accept, lst, nursery)
            task_status.started(port)

    async def _accept(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                if self.slots.value == 0:
                    self.refused += 1
                    nursery.start_soon(self._refuse, stream)
                    continue
                await self.slots.acquire()
                nursery.start_soon(self._serve, stream)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        with trio.move_on_after(1.0):
            await stream.send_all(_BUSY)
        await trio.aclose_forcefully(stream)

    async def _serve(self, raw: trio.SocketStream) -> None:
        self.open += 1
        stream: trio.abc.Stream = raw
        try:
            if self.ssl_context is not None:
                stream = trio.SSLStream(raw, self.ssl_context, server_side=True)
                with trio.fail_after(READ_TIMEOUT_S):
                    await stream.do_handshake()
            await self._requests(stream, _remote(raw))
        except (_Closed, trio.TooSlowError, trio.BrokenResourceError, OSError, ssl.SSLError):
            pass
        except Exception:  # a bug ends this connection, never the server
            _errors.log(logging.ERROR, "%s: http connection failed", self.name, exc_info=True)
        finally:
            self.open -= 1
            self.slots.release()
            await trio.aclose_forcefully(stream)

    async def _requests(self, stream: trio.abc.Stream, remote: str) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        first = True
        while True:
            try:
                req = await self._read(conn, stream, READ_TIMEOUT_S if first else IDLE_TIMEOUT_S)
            except h11.RemoteProtocolError as e:
                await self._send(conn, stream, text(e.error_status_hint, f"bad request: {e}"))
                return
            if req is None:
                return
            first = False
            self.requests += 1
            try:
                resp = await self.handler(req)
            except Exception:
                _errors.log(
                    logging.ERROR,
                    "%s: %s %s failed",
                    self.name,
                    req.method,
                    req.path,
                    exc_info=True,
                )
                resp = text(500, "internal error (see the node's log)")
            if resp.websocket is not None:
                await self._switch(conn, stream, req, resp)
                return
            await self._send(conn, stream, resp)
            if resp.stream is not None or conn.our_state is not h11.DONE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read(
        self, conn: h11.Connection, stream: trio.abc.Stream, timeout_s: float
    ) -> HttpRequest | None:
        """The next request, or None when the client closed the connection between them."""
        head: h11.Request | None = None
        body = bytearray()
        limit = 0
        with trio.fail_after(timeout_s) as scope:
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    data = await stream.receive_some(RECEIVE_BYTES)
                    if not data and head is None and conn.their_state is h11.IDLE:
                        return None
                    conn.receive_data(bytes(data))
                elif isinstance(ev, h11.Request):
                    head = ev
                    limit = self.body_limit(_text(ev.method), _text(ev.target).split("?")[0])
                    declared = dict(ev.headers).get(b"content-length", b"")
                    if declared.isdigit() and int(declared) > limit:
                        await self._too_big(conn, stream, limit)
                    # A large body over a slow link gets time for it (a push of 8 MiB: 42 s),
                    # a slow sender of a small one does not.
                    chunked = b"chunked" in dict(ev.headers).get(b"transfer-encoding", b"")
                    size = min(int(declared), limit) if declared.isdigit() else 0
                    size = limit if chunked else size
                    until = trio.current_time() + READ_TIMEOUT_S + size / MIN_BODY_BYTES_PER_S
                    scope.deadline = max(scope.deadline, until)
                    if conn.they_are_waiting_for_100_continue:  # curl does, past 1 KiB
                        await self._write(
                            stream,
                            conn.send(h11.InformationalResponse(status_code=100, headers=[])),
                        )
                elif isinstance(ev, h11.Data):
                    body += ev.data
                    if len(body) > limit:
                        await self._too_big(conn, stream, limit)
                elif isinstance(ev, h11.EndOfMessage):
                    assert head is not None
                    return _request(head, bytes(body), _remote_of(stream))
                elif isinstance(ev, h11.ConnectionClosed):
                    return None
                else:
                    raise _Closed

    async def _too_big(self, conn: h11.Connection, stream: trio.abc.Stream, limit: int) -> None:
        await self._send(conn, stream, text(413, f"a body over {limit} bytes is not taken here"))
        raise _Closed

    async def _switch(
        self, conn: h11.Connection, stream: trio.abc.Stream, req: HttpRequest, r: HttpResponse
    ) -> None:
        """Answer a websocket upgrade (101) and run ``r.websocket`` on the connection."""
        assert r.websocket is not None
        headers = accept_headers(req.headers)
        if headers is None or conn.their_state is not _MIGHT_SWITCH:
            await self._send(conn, stream, text(400, "this path takes a websocket upgrade only"))
            return
        await self._write(
            stream, conn.send(h11.InformationalResponse(status_code=101, headers=headers))
        )
        await PushSocket(stream, switched(conn), WRITE_TIMEOUT_S).run(r.websocket)

    async def _send(self, conn: h11.Connection, stream: trio.abc.Stream, r: HttpResponse) -> None:
        headers = [("content-type", r.content_type), *r.headers]
        if r.stream is None:
            headers.append(("content-length", str(len(r.body))))
        else:
            headers += [("cache-control", "no-store"), ("connection", "close")]
        try:
            await self._write(
                stream, conn.send(h11.Response(status_code=r.status, headers=headers))
            )
            if r.stream is None:
                await self._write(stream, conn.send(h11.Data(data=r.body)))
                await self._write(stream, conn.send(h11.EndOfMessage()))
                return

            async def write(chunk: bytes) -> None:
                await self._write(stream, conn.send(h11.Data(data=chunk)))

            await r.stream(write)
            await self._write(stream, conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError as e:
            raise _Closed from e

    @staticmethod
    async def _write(stream: trio.abc.Stream, data: bytes | None) -> None:
        if data:
            with trio.fail_after(WRITE_TIMEOUT_S):
                await stream.send_all(data)


def _text(b: bytes) -> str:
    return b.decode("latin-1")


def _request(head: h11.Request, body: bytes, remote: str) -> HttpRequest:
    target = head.target.decode("latin-1")
    parts = urlsplit(target)
    query: dict[str, list[str]] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(k, []).append(v)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
    return HttpRequest(head.method.decode("ascii"), parts.path, query, headers, body, remote)


def _remote(s: trio.SocketStream) -> str:
    try:
        host, port = s.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def _remote_of(stream: trio.abc.Stream) -> str:
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    return _remote(inner) if isinstance(inner, trio.SocketStream) else "?"
