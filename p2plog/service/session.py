"""One client websocket: requests in, replies out, many requests in flight, all bounded.

Theory of operation. One reader task takes frames; each is decoded into a typed request
(``wire.client.decode_request``). A frame that breaks the protocol (undecodable, oversized,
trailing bytes, a wrong type, an unknown key or kind) gets ``error bad_request`` when its
``req`` can be read, then the connection is closed with 1008 and the reason, and one line is
logged with the client's address. A record the node cannot store is protocol-valid: it gets a
per-record error in the ``ack`` and nothing of it is stored.

Bounds, so that no client can take a node's memory or other clients' service:

- requests in flight per connection are bounded in number and in frame bytes: at the bound
  the reader stops reading (TCP backpressure) until one finishes; tails are bounded apart, per
  connection and per node (each is fed on every applied round, on the Raft loop);
- a submit's records are validated as the frame is read and only their encoded bodies stay in
  memory while the submit waits for its commit;
- replies a client has not read are bounded in bytes, and a reply that waits longer than
  ``SEND_TIMEOUT_S`` to go out ends the connection, with the reason: a client that does not
  read loses its connection, not the node its memory;
- a connection with nothing in flight for ``client_idle_timeout_s`` is closed;
- each request needs its role (``security.tokens``): ``unauthorized`` without a token,
  ``forbidden`` for a token of another role.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from p2plog.errors import MemberError
from p2plog.net.server import remote_of
from p2plog.ratelog import RateLimitedLog
from p2plog.replica.proposals import SubmitResult
from p2plog.security.tokens import Grant
from p2plog.service import reads
from p2plog.service.api import NodeApi
from p2plog.service.status import node_status
from p2plog.service.submits import Prepared, ack_reply, prepare
from p2plog.wire.client import (
    MAX_CLIENT_FRAME,
    RETRY_AFTER_MS,
    Cancel,
    ClientRequest,
    Member,
    Query,
    Status,
    Submit,
    Tail,
    Time,
    decode_request,
    request_id,
)
from p2plog.wire.envelope import ProtocolError, decode, encode

log = logging.getLogger("p2plog.client_session")
_violations = RateLimitedLog(log, interval_s=10.0)

SEND_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 1.0
MAX_CONN_REQUEST_BYTES = 32 << 20
MAX_CONN_TAILS = 16
ANONYMOUS_IDLE_S = 10
MAX_NODE_TAILS = 1024  # every tail is fed on each applied round, on the Raft loop
RETRYABLE = ("unavailable", "overloaded", "disk_full", "timeout")


class Closing(Exception):
    """This connection is being closed (the reason is in ``Session.closing``)."""


class Budget:
    """What one connection has in flight: requests, and the bytes of their frames."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self._freed = trio.lowlevel.ParkingLot()

    async def acquire(self, size: int) -> None:
        while self.requests >= self.max_requests or (
            self.requests and self.bytes + size > self.max_bytes
        ):
            await self._freed.park()
        self.requests += 1
        self.bytes += size

    def release(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size
        self._freed.unpark_all()


@dataclass(frozen=True, slots=True)
class Probe:
    """A clock probe: the client's send time ``t1`` and this node's receive time ``t2``."""

    req: int
    t1: int
    t2: int


class Session:
    def __init__(self, node: NodeApi, ws: WebSocketConnection, grant: Grant) -> None:
        c = node.cluster
        self.node = node
        self.ws = ws
        self.grant = grant
        self.remote = remote_of(ws)
        self.budget = Budget(c.max_conn_requests, MAX_CONN_REQUEST_BYTES)
        self.max_unread = c.max_conn_unread_bytes
        # Without a token a connection may only ask status and time: it need not linger.
        idle = (
            c.client_idle_timeout_s
            if grant.role
            else min(ANONYMOUS_IDLE_S, c.client_idle_timeout_s)
        )
        self.idle_s = float(idle)
        self.unsent = 0
        self.inflight = 0
        self.tails: dict[int, trio.CancelScope] = {}
        self.closing: tuple[int, str] | None = None
        self._scope = trio.CancelScope()

    # ------------------------------------------------------------- lifetime

    async def serve(self) -> None:
        with self._scope:
            async with trio.open_nursery() as nursery:
                with contextlib.suppress(ConnectionClosed):
                    await self._read_loop(nursery)
                nursery.cancel_scope.cancel()
        if self.closing is not None:
            code, reason = self.closing
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.ws.aclose(code, reason[:120])

    def close(self, code: int, reason: str) -> None:
        """End this connection with ``reason`` (logged once); every request stops."""
        if self.closing is None:
            self.closing = (code, reason)
            if code != 1000:
                _violations.warning("%s: closing client %s: %s", self.node.id, self.remote, reason)
        self._scope.cancel()

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while self.closing is None:
            raw: bytes | str | None = None
            with trio.move_on_after(self.idle_s):
                raw = await self.ws.get_message()
            if raw is None:
                if not self.budget.requests and not self.tails:
                    self.close(1000, f"idle for {self.idle_s:.0f} s with nothing in flight")
                    return
                continue
            req = await self._decode(raw)
            if req is None:
                return
            if isinstance(req, Cancel):
                scope = self.tails.pop(req.req, None)
                if scope is not None:
                    scope.cancel()
                continue
            if isinstance(req, Tail) and self._tail_room():
                # Tails live outside the request budget (a reader parked on it with every
                # slot held by tails would never read the ``cancel`` that ends one); their
                # number is bounded instead. The scope is registered before the task starts,
                # so a ``cancel`` right behind the ``tail`` finds it.
                scope = self.tails[req.req] = trio.CancelScope()
                self.node.tails_open += 1
                nursery.start_soon(self._run_tail, req, scope)
                continue
            size = len(raw)
            received = self.node.corrected_now()  # a time probe's t2: when it arrived
            await self.budget.acquire(size)
            work: ClientRequest | Prepared | Probe = req
            if isinstance(req, Submit):
                work = prepare(self.node, req, self.grant.can("submit"))
            elif isinstance(req, Time):
                work = Probe(req.req, req.t1, received)
            del raw, req  # only what the request needs stays while it is in flight
            nursery.start_soon(self._run, work, size)

    def _tail_room(self) -> bool:
        """Room for one more tail on this connection and on the node? (A tail that finds none
        goes through the request path and is refused ``overloaded``.)"""
        return len(self.tails) < MAX_CONN_TAILS and self.node.tails_open < MAX_NODE_TAILS

    async def _run_tail(self, t: Tail, scope: trio.CancelScope) -> None:
        try:
            with scope:
                if await self.require(t.req, "read"):
                    await reads.tail(self, t)
        except Closing:
            pass
        except ProtocolError as e:
            await self.error(t.req, "bad_request", str(e))
        finally:
            self.tails.pop(t.req, None)
            self.node.tails_open -= 1

    async def _decode(self, raw: bytes | str) -> ClientRequest | None:
        """The typed request, or None after answering and closing a protocol violation."""
        msg: dict[str, Any] | None = None
        try:
            msg = decode(raw, MAX_CLIENT_FRAME)
            return decode_request(msg)
        except ProtocolError as e:
            rid = request_id(msg) if msg is not None else None
            if rid is not None:
                with trio.move_on_after(CLOSE_TIMEOUT_S):
                    await self.ws.send_message(
                        encode("error", {"req": rid, "code": "bad_request", "msg": str(e)})
                    )
            self.close(1008, str(e))
            return None

    async def _run(self, work: ClientRequest | Prepared | Probe, size: int) -> None:
        try:
            await self._dispatch(work)
        except Closing:
            pass
        except ProtocolError as e:
            await self.error(work.req, "bad_request", str(e))
        finally:
            self.budget.release(size)

    async def _dispatch(self, w: ClientRequest | Prepared | Probe) -> None:
        if isinstance(w, Prepared):
            if await self.require(w.req, "submit"):
                await self.submit(w)
        elif isinstance(w, Query):
            if await self.require(w.req, "read"):
                await reads.query(self, w)
        elif isinstance(w, Tail):  # only a tail that found no room comes this way
            await self.error(
                w.req,
                "overloaded",
                f"at most {MAX_CONN_TAILS} tails per connection and {MAX_NODE_TAILS} per node",
            )
        elif isinstance(w, Status):
            await self.send("status", {"req": w.req, "node": node_status(self.node, self.grant)})
        elif isinstance(w, Member):
            if await self.require(w.req, "admin"):
                await self.member(w)
        elif isinstance(w, Probe):
            t3 = self.node.corrected_now()
            await self.send("time", {"req": w.req, "t1": w.t1, "t2": w.t2, "t3": t3})
        else:
            raise ProtocolError(f"{type(w).__name__} is not a request here")

    async def require(self, req: int, what: str) -> bool:
        """May this connection ``submit`` or ``read``? If not, it is told why."""
        if self.grant.can(what):
            return True
        role = {"submit": "write", "read": "read"}.get(what, what)
        if self.grant.role is None:
            code, msg = "unauthorized", f"{what} needs a token with the {role} role"
        else:
            code = "forbidden"
            msg = (
                f"token {self.grant.name!r} has the {self.grant.role} role; {what} needs "
                f"{role} or admin"
            )
        await self.error(req, code, msg + " (pass --token or set P2PLOG_TOKEN)")
        return False

    async def member(self, w: Member) -> None:
        try:
            reply = await self.node.member(w)
        except MemberError as e:
            await self.error(w.req, e.code, e.msg)
            return
        await self.send("member", {"req": w.req, **reply})

    # -------------------------------------------------------------- replies

    async def send(self, kind: str, fields: dict[str, Any]) -> None:
        """Send one reply; over the unread-bytes bound, or blocked for ``SEND_TIMEOUT_S``, the
        connection is closed and ``Closing`` raised."""
        data = encode(kind, fields)
        self.unsent += len(data)
        try:
            if self.unsent > self.max_unread:
                self.close(
                    1008,
                    f"over {self.max_unread} bytes of replies unread: this client does not "
                    f"read its replies",
                )
                raise Closing
            with trio.move_on_after(SEND_TIMEOUT_S) as scope:
                await self.ws.send_message(data)
            if scope.cancelled_caught:
                self.close(1008, f"a reply waited {SEND_TIMEOUT_S:.0f} s for this client to read")
                raise Closing
        except ConnectionClosed:
            raise Closing from None
        finally:
            self.unsent -= len(data)

    async def error(self, req: int, code: str, msg: str) -> None:
        self.node.rejected[code] += 1
        fields: dict[str, Any] = {"req": req, "code": code, "msg": msg}
        if code in RETRYABLE:
            fields["retry_after_ms"] = RETRY_AFTER_MS
        await self.send("error", fields)

    # -------------------------------------------------------------- submit

    async def submit(self, p: Prepared) -> None:
        ids = p.ids
        res = await self._store(p)
        p.bodies = []
        if res.error is not None:
            await self.error(p.req, *res.error)
            return
        await self.send("ack", ack_reply(p, ids, res))

    async def _store(self, p: Prepared) -> SubmitResult:
        """The accepted records of ``p`` through the node, within this connection's bound."""
        ids = p.ids
        if not ids:  # every record was refused: the reply lists why
            return SubmitResult(0)
        limit = self.node.cluster.max_conn_inflight_records
        if self.inflight + len(ids) > limit:
            return SubmitResult.failed(
                "overloaded", f"over {limit} records in flight on this connection"
            )
        self.inflight += len(ids)
        try:
            return await self.node.submit(ids, p.bodies, p.ack)
        finally:
            self.inflight -= len(ids)


async def serve_client(node: NodeApi, ws: WebSocketConnection, grant: Grant) -> None:
    await Session(node, ws, grant).serve()
