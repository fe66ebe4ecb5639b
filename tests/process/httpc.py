"""A small HTTP/1.1 client for the process tests (one request per connection, bounded)."""

from __future__ import annotations

import trio


async def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout_s: float = 15.0,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    )
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(head.encode() + body)
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return int(lines[0].split()[1]), hdrs, rest


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += data[:n]
        data = data[n + 2 :]
    return out
