"""The HTTP port's server (net/http.py) on memory streams under trio's MockClock: body limits
by path, the time a body is given, Expect: 100-continue, a websocket upgrade."""

from __future__ import annotations

import contextlib

import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from p2plog.net import http, http_ws
from p2plog.net.http import HttpRequest, HttpResponse, HttpServer, text
from p2plog.net.http_ws import PushSocket


async def echo(req: HttpRequest) -> HttpResponse:
    if req.path == "/ws":

        async def feed(ws: PushSocket) -> None:
            await ws.send("hello")

        return HttpResponse(101, websocket=feed)
    return text(200, f"{req.method} {req.path} {len(req.body)}")


def server() -> HttpServer:
    return HttpServer("127.0.0.1", 0, echo, body_limit=lambda m, p: 1 << 20 if p == "/big" else 10)


async def exchange(data: list[tuple[float, bytes]], timeout_s: float = 120) -> bytes:
    """Run one connection: send each chunk after its delay, return all the server wrote."""
    client, srv = trio.testing.memory_stream_pair()
    got = bytearray()
    with trio.fail_after(timeout_s):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                # What HttpServer._serve ends a connection on: its deadline, a refusal.
                with contextlib.suppress(trio.TooSlowError, http._Closed):
                    await server()._requests(srv, "test")
                await srv.aclose()

            nursery.start_soon(serve)
            for delay, chunk in data:
                await trio.sleep(delay)
                try:
                    await client.send_all(chunk)
                except trio.BrokenResourceError:
                    break
            while chunk := await client.receive_some(1 << 16):  # until the server closes
                got += chunk
    return bytes(got)


def post(path: str, n: int, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {n}\r\n"
    return (head + extra + "\r\n").encode()


async def test_body_limits_follow_the_path(autojump_clock: trio.testing.MockClock) -> None:
    out = await exchange([(0, post("/small", 11) + b"x" * 11)])
    assert out.startswith(b"HTTP/1.1 413"), out
    out = await exchange([(0, post("/small", 5000))])  # refused from the head alone
    assert out.startswith(b"HTTP/1.1 413"), out
    out = await exchange([(0, post("/big", 5000) + b"x" * 5000)])
    assert out.startswith(b"HTTP/1.1 200"), out
    assert out.endswith(b"POST /big 5000\n"), out


async def test_a_large_body_gets_time_a_slow_small_one_does_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # 1 MiB at 512 KiB/s: 2 s of body, fine; 20 chunks 0.6 s apart: 12 s, past READ_TIMEOUT_S
    # but within the body's allowance (10 s + 1 MiB / 256 KiB/s = 14 s).
    chunks = [(0.0, post("/big", 1 << 20))] + [(0.6, b"x" * ((1 << 20) // 20))] * 20
    chunks.append((0.0, b"x" * ((1 << 20) - 20 * ((1 << 20) // 20))))
    out = await exchange(chunks)
    assert out.startswith(b"HTTP/1.1 200"), out[:80]
    # 9 bytes, one every 2 s: 18 s, past the 10 s a small body is given.
    out = await exchange([(0.0, post("/small", 9))] + [(2.0, b"x")] * 9)
    assert not out.startswith(b"HTTP/1.1 200"), out


async def test_expect_100_continue(autojump_clock: trio.testing.MockClock) -> None:
    head = post("/big", 3, "expect: 100-continue\r\n")
    out = await exchange([(0, head), (0.1, b"abc")])
    assert out.startswith(b"HTTP/1.1 100"), out
    assert b"HTTP/1.1 200" in out


async def test_websocket_upgrade() -> None:
    ws = WSConnection(ConnectionType.CLIENT)
    client, srv = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server()._requests, srv, "test")
            await client.send_all(ws.send(Request(host="x", target="/ws")))
            events: list[object] = []
            while not any(isinstance(e, TextMessage) for e in events):
                ws.receive_data(await client.receive_some(1 << 16))
                events += list(ws.events())
            assert isinstance(events[0], AcceptConnection)
            assert [e.data for e in events if isinstance(e, TextMessage)] == ["hello"]
            nursery.cancel_scope.cancel()


async def test_a_silent_websocket_client_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    """It is pinged; answering nothing for SILENT_AFTER_S ends the connection, and the feed
    (a tail with nothing to send) with it."""
    client, srv = trio.testing.memory_stream_pair()
    fed = trio.Event()

    async def feed(ws: PushSocket) -> None:
        fed.set()
        await trio.sleep_forever()

    with trio.fail_after(http_ws.SILENT_AFTER_S * 3):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                await PushSocket(srv, b"", 10.0).run(feed)
                await srv.aclose()

            nursery.start_soon(serve)
            await fed.wait()
            t0 = trio.current_time()
            seen = b""
            while chunk := await client.receive_some(1 << 16):  # pings, then the close
                seen += chunk
    assert trio.current_time() - t0 >= http_ws.SILENT_AFTER_S
    assert b"\x89" in seen  # a ping frame (RFC 6455 opcode 0x9) went out


async def test_a_close_while_lines_flow_ends_quietly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The client closes while the feed is sending: run() returns (no exception escapes to
    be logged as a server error), and the feed's last send finds the socket closing."""
    client, srv = trio.testing.memory_stream_pair()
    frames = Connection(ConnectionType.CLIENT)  # wsproto's frame layer, past the handshake
    ended = trio.Event()

    async def feed(ws: PushSocket) -> None:
        while True:
            await ws.send("line")
            await trio.sleep(0.01)

    async def serve() -> None:
        await PushSocket(srv, b"", 10.0).run(feed)
        ended.set()
        await srv.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await trio.sleep(0.1)
            await client.send_all(frames.send(CloseConnection(code=1000)))
            while await client.receive_some(1 << 16):
                pass
            await ended.wait()
