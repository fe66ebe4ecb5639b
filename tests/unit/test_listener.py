"""The listening side against trio-websocket itself, on 127.0.0.1: the per-connection message
limit is enforced as bytes arrive (and can be raised before the request is accepted), the
capped TCP listener closes connections past its cap and counts them free again when they
close, and ``max_connections`` is lowered to fit the open-files limit."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer, open_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Request

from p2plog.net.listener import ContainedServer
from p2plog.net.server import connection_cap, open_listeners, set_message_limit


async def serve(
    nursery: trio.Nursery, handler: Any, *, cap: int = 100, max_message_size: int = 1024
) -> tuple[int, Any]:
    capped, port = await open_listeners("127.0.0.1", 0, cap=cap, node="t", ssl_context=None)
    server = WebSocketServer(
        handler,
        [capped],  # type: ignore[list-item]
        max_message_size=max_message_size,
        connect_timeout=2,
        disconnect_timeout=1,
    )
    await nursery.start(server.run)
    return port, capped


async def test_the_message_limit_is_raised_before_accept_and_enforced_while_receiving(
    nursery: trio.Nursery,
) -> None:
    got: list[int] = []

    async def handler(request: WebSocketRequest) -> None:
        if request.path == "/big":
            set_message_limit(request, 64 << 10)
        ws = await request.accept()
        try:
            while True:
                got.append(len(await ws.get_message()))
        except ConnectionClosed:
            pass

    port, _ = await serve(nursery, handler)
    with trio.fail_after(10):
        # Sent the moment the handshake is done: the raised limit must already apply.
        async with open_websocket("127.0.0.1", port, "/big", use_ssl=False) as ws:
            await ws.send_message(b"x" * 60_000)
            await ws.send_message(b"y" * 10)
            await trio.sleep(0.2)
        assert got == [60_000, 10]
        async with open_websocket("127.0.0.1", port, "/small", use_ssl=False) as ws:
            await ws.send_message(b"z" * 60_000)
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == 1009


async def test_the_capped_listener_refuses_past_its_cap_and_frees_on_close(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    release = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.move_on_after(5):
            await release.wait()
        await ws.aclose()

    port, capped = await serve(nursery, handler, cap=3)
    streams = []
    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="p2plog.net"):
        for _ in range(3):
            streams.append(await trio.open_tcp_stream("127.0.0.1", port))
        await trio.sleep(0.1)
        extra = await trio.open_tcp_stream("127.0.0.1", port)
        assert await extra.receive_some(10) == b""  # closed at once, before any handshake
        assert capped.refused == 1
        assert "3 connections are open" in caplog.text
        for s in streams:
            await s.aclose()
        # The server's ends close when it sees the EOF, at the latest at its handshake
        # timeout (2 s here): then they count free.
        for _ in range(100):  # polled: nothing signals a socket closing
            if not capped.open_connections:
                break
            await trio.sleep(0.05)
        assert capped.open_connections == 0
        async with open_websocket("127.0.0.1", port, "/", use_ssl=False):
            assert capped.open_connections == 1
        release.set()


def test_connection_cap(caplog: pytest.LogCaptureFixture) -> None:
    assert connection_cap(1024, 20_000, 256, "n1") == 1024
    with caplog.at_level(logging.WARNING):
        assert connection_cap(1024, 1024, 256, "n1") == 768
    assert "max_connections 1024 lowered to 768" in caplog.text
    assert connection_cap(1024, 100, 256, "n1") == 16


async def test_a_connection_whose_websocket_task_fails_does_not_stop_the_server(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """python-trio/trio-websocket#175, as the fuzzer found it: the server closes a connection,
    and before the close handshake ends a message over the limit arrives. The reader task then
    sends a close frame in LOCAL_CLOSING and wsproto raises; in a plain ``WebSocketServer``
    that exception ends the server's nursery (the node)."""
    closing = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        if request.path == "/close":
            closing.set()
            await ws.aclose()
            return
        await ws.send_message(b"still here")

    capped, port = await open_listeners("127.0.0.1", 0, cap=100, node="t", ssl_context=None)
    server = ContainedServer(
        handler, [capped], max_message_size=1024, connect_timeout=2, disconnect_timeout=2, node="t"
    )
    await nursery.start(server.run)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/close")))
        events: list[Any] = []
        while not any(isinstance(e, CloseConnection) for e in events):
            ws.receive_data(await stream.receive_some(4096))
            events += list(ws.events())
        assert closing.is_set()
        # 2,000 bytes, masked with a zero key, in a frame wsproto itself would not send now.
        await stream.send_all(b"\x82\xfe" + (2000).to_bytes(2, "big") + b"\0" * 4 + b"x" * 2000)
        with trio.move_on_after(1):
            while await stream.receive_some(4096):
                pass
        await stream.aclose()
        async with open_websocket("127.0.0.1", port, "/other", use_ssl=False) as ok:
            assert await ok.get_message() == b"still here"
    assert "websocket task failed (LocalProtocolError" in caplog.text
