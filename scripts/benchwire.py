"""The benchmarks' raw-protocol load generator: ~200-byte records spliced into ``submit``
frames, and ``Conn``, one client websocket with any number of requests in flight.

Written apart from ``p2plog.client`` on purpose, so the raw shapes measure the node and not a
client library; every wait is under ``trio.fail_after``. Frames are built from one pre-encoded
record with a fresh uuid4 and the current ``ts`` spliced in (``RecordFactory.check`` asserts
that they decode to the intended map).
"""

from __future__ import annotations

import itertools
import os
import ssl
import time
from typing import Any

import cbor2
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

HOST = "127.0.0.1"
PROTOCOL_VERSION = 1
RECORD_BYTES = 200
CONNECT_TIMEOUT_S = 5.0
STATUS_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 30.0  # the node answers `timeout` itself after 10 s
MAX_CLIENT_MESSAGE = 16 << 20
RECEIVE_BUFFER = 64 << 10


class BenchFailed(Exception):
    """The cluster misbehaved so badly that the run cannot go on (the message says how)."""


class ConnLost(Exception):
    """The client websocket closed while a request was waiting."""


# ---------------------------------------------------------------------------- records


def array_head(n: int) -> bytes:
    if n < 24:
        return bytes([0x80 + n])
    if n < 256:
        return bytes([0x98, n])
    assert n < 65536
    return b"\x99" + n.to_bytes(2, "big")


def uuid4s(n: int) -> bytearray:
    """``n`` random version-4 UUIDs, 16 bytes each, back to back."""
    b = bytearray(os.urandom(16 * n))
    b[6::16] = bytes((x & 0x0F) | 0x40 for x in b[6::16])
    b[8::16] = bytes((x & 0x3F) | 0x80 for x in b[8::16])
    return b


class RecordFactory:
    """Builds ``submit`` frames of ~200-byte records with fresh ids, cheaply.

    One record is CBOR-encoded once with placeholder ``id`` and ``ts``; a frame splices a fresh
    uuid4 per record and the current time into copies of those bytes, and wraps them in the
    ``submit`` map by hand (a definite-length CBOR array of pre-encoded maps).
    """

    ID_MARK = bytes(range(0xA0, 0xB0))
    TS_MARK = 0x1122334455667788  # > 2**32, so encoded like a real ns timestamp: 0x1b + 8 bytes
    MSG_BASE = (
        "GET /api/v1/orders?customer=48213&page=3 -> 200 OK in 3.2 ms; upstream=orders-7f9c "
        "cache=miss bytes=18234 agent=curl/8.5.0 trace=9f2c1d7e4b3a5f60 "
    )

    def __init__(self, target_bytes: int = RECORD_BYTES) -> None:
        self.template = self._fit(target_bytes)
        enc = cbor2.dumps(self.template)
        id_at = enc.index(b"\x50" + self.ID_MARK) + 1
        ts_at = enc.index(b"\x1b" + self.TS_MARK.to_bytes(8, "big")) + 1
        assert enc.count(self.ID_MARK) == 1
        assert ts_at > id_at + 16, "the template's keys must put id before ts"
        self.encoded = enc
        self.record_bytes = len(enc)
        self._pre = enc[:id_at]
        self._mid = enc[id_at + 16 : ts_at]
        self._post = enc[ts_at + 8 :]
        self._records_key = cbor2.dumps("records")

    def _fit(self, target: int) -> dict[str, Any]:
        def rec(msg: str) -> dict[str, Any]:
            return {
                "id": self.ID_MARK,
                "ts": self.TS_MARK,
                "level": "info",
                "source": "bench/web-01",
                "msg": msg,
                "fields": {"host": "web-01", "status": 200},
            }

        text = self.MSG_BASE * 4
        n = 0
        while n < len(text) and len(cbor2.dumps(rec(text[: n + 1]))) <= target:
            n += 1
        return rec(text[:n])

    def records(self, n: int) -> bytes:
        """A CBOR array of ``n`` records with fresh uuid4 ids and ts = now."""
        head = self._pre
        tail = self._mid + time.time_ns().to_bytes(8, "big") + self._post
        ids = memoryview(uuid4s(n))
        parts: list[bytes | memoryview] = [array_head(n)]
        for i in range(0, 16 * n, 16):
            parts += (head, ids[i : i + 16], tail)
        return b"".join(parts)

    def submit_frame(self, req: int, ack: str, n: int) -> bytes:
        head = cbor2.dumps({"v": PROTOCOL_VERSION, "kind": "submit", "req": req, "ack": ack})
        assert head[0] == 0xA4  # a map of 4; make it 5 and append "records"
        return b"\xa5" + head[1:] + self._records_key + self.records(n)

    def check(self) -> None:
        """The spliced frame decodes to the intended map (asserts)."""
        msg = cbor2.loads(self.submit_frame(7, "quorum", 3))
        assert (msg["kind"], msg["req"], msg["ack"]) == ("submit", 7, "quorum"), msg
        recs = msg["records"]
        assert len(recs) == 3
        assert len({r["id"] for r in recs}) == 3
        for r in recs:
            assert set(r) == set(self.template), r
            assert len(r["id"]) == 16
            assert (r["id"][6] >> 4, r["id"][8] >> 6) == (4, 2)  # uuid4, RFC 4122 variant
            assert abs(r["ts"] - time.time_ns()) < 10**10
            assert r["msg"] == self.template["msg"]
            assert len(cbor2.dumps(r)) == self.record_bytes


def encode_msg(kind: str, fields: dict[str, Any]) -> bytes:
    return cbor2.dumps({**fields, "v": PROTOCOL_VERSION, "kind": kind})


# ---------------------------------------------------------------------------- client


class _Slot:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: dict[str, Any] | None = None


# Ports of the nodes of a TLS + token cluster (the *_secure shapes): how to reach them.
SECURE: dict[int, tuple[ssl.SSLContext, list[tuple[bytes, bytes]]]] = {}


class Conn:
    """One client websocket; any number of requests in flight, replies matched by ``req``."""

    def __init__(self, ws: WebSocketConnection, name: str) -> None:
        self.ws = ws
        self.name = name
        self.closed: str | None = None
        self.unmatched = 0
        self._reqs = itertools.count(1)
        self._waiting: dict[int, _Slot] = {}

    @classmethod
    async def connect(
        cls, nursery: trio.Nursery, port: int, name: str, timeout_s: float = CONNECT_TIMEOUT_S
    ) -> Conn:
        ctx, headers = SECURE.get(port, (None, []))
        with trio.fail_after(timeout_s):
            ws = await connect_websocket_url(
                nursery,
                f"{'wss' if ctx else 'ws'}://{HOST}:{port}/client",
                ssl_context=ctx,
                extra_headers=headers,
                max_message_size=MAX_CLIENT_MESSAGE,
                receive_buffer_size=RECEIVE_BUFFER,
            )
        conn = cls(ws, name)
        nursery.start_soon(conn._read)
        return conn

    def next_req(self) -> int:
        return next(self._reqs)

    async def call(self, req: int, frame: bytes, timeout_s: float) -> dict[str, Any]:
        """Send one request frame and wait for the reply carrying ``req``."""
        if self.closed is not None:
            raise ConnLost(f"{self.name}: {self.closed}")
        slot = _Slot()
        self._waiting[req] = slot
        try:
            with trio.fail_after(timeout_s):
                await self.ws.send_message(frame)
                await slot.done.wait()
        except ConnectionClosed as e:
            raise ConnLost(f"{self.name}: {e.reason}") from None
        finally:
            self._waiting.pop(req, None)
        if slot.reply is None:
            raise ConnLost(f"{self.name}: {self.closed}")
        return slot.reply

    async def status(self, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any]:
        req = self.next_req()
        reply = await self.call(req, encode_msg("status", {"req": req}), timeout_s)
        if reply.get("kind") != "status":
            raise BenchFailed(f"{self.name}: status request got {reply!r}")
        node: dict[str, Any] = reply["node"]
        return node

    async def aclose(self) -> None:
        with trio.move_on_after(1.0):
            await self.ws.aclose()

    async def _read(self) -> None:
        try:
            while True:
                raw = await self.ws.get_message()
                assert isinstance(raw, bytes), "p2plog replies are binary frames"
                self._deliver(cbor2.loads(raw))
        except ConnectionClosed as e:
            self.closed = f"closed: {e.reason}"
        finally:
            if self.closed is None:
                self.closed = "reader stopped"
            for slot in self._waiting.values():
                slot.done.set()

    def _deliver(self, msg: dict[str, Any]) -> None:
        """Hand one reply to the ``call`` waiting for its ``req``."""
        req = msg.get("req")
        slot = self._waiting.pop(req, None) if isinstance(req, int) else None
        if slot is None:
            self.unmatched += 1  # a reply that arrived after its request timed out
            return
        slot.reply = msg
        slot.done.set()


async def fetch_status(port: int, timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """One node's ``status``, or None if it cannot be reached in time."""
    result: dict[str, Any] | None = None
    async with trio.open_nursery() as nursery:
        try:
            with trio.fail_after(timeout_s):
                conn = await Conn.connect(nursery, port, f"status:{port}", timeout_s)
                try:
                    result = await conn.status(timeout_s)
                finally:
                    await conn.aclose()
        except (OSError, HandshakeError, ConnLost, ConnectionClosed, trio.TooSlowError):
            result = None
        nursery.cancel_scope.cancel()
    return result
