"""What an attacker on the same host does, as test helpers: raw frames to ``/peer`` and
``/client``, the peer handshake with or without the cluster secret, and a node's RSS.

Independent of ``p2plog``'s runtime on purpose, like ``harness.RawClient``: frames are made with
cbor2 here; only the proof function of ``p2plog.wire.peer_auth`` is shared (a member that holds
the secret computes it the same way)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import cbor2
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from p2plog.wire.peer_auth import hello_proof

from .harness import Cluster, Credentials, encode, open_raw_ws

STRANGER = Credentials()


def rss_mb(cluster: Cluster, nid: str) -> float:
    rss = cluster.mem(nid).get("VmRSS")
    assert rss is not None, f"no VmRSS for {nid} (is it running?)"
    return rss / 1024


def secret_of(cluster: Cluster) -> bytes:
    return (cluster.root / "cluster.secret").read_bytes().strip()


async def closed_reason(ws: WebSocketConnection, timeout_s: float = 5.0) -> tuple[int, str]:
    """Read until the node closes ``ws``; (code, reason)."""
    with trio.fail_after(timeout_s):
        for _ in range(10_000):
            try:
                await ws.get_message()
            except ConnectionClosed as e:
                reason = e.reason
                break
        else:
            raise AssertionError("the node kept the connection open")
    assert reason is not None
    return reason.code, reason.reason or ""


@contextlib.asynccontextmanager
async def peer_link(
    cluster: Cluster, to: str, claim: str, secret: bytes | None
) -> AsyncIterator[WebSocketConnection]:
    """A ``/peer`` connection to ``to`` claiming to be ``claim``: the challenge is answered
    with a proof made with ``secret`` (None: a stranger's guess). The body runs after the
    hello was sent; with the right secret the node's welcome has been read."""
    async with open_raw_ws(cluster.port(to), "/peer", creds=STRANGER) as ws:
        with trio.fail_after(5):
            challenge = cbor2.loads(await ws.get_message())
            assert challenge["kind"] == "challenge", challenge
            nonce = secrets.token_bytes(16)
            key = secret if secret is not None else secrets.token_bytes(32)
            proof = hello_proof(key, cluster.name, claim, to, challenge["nonce"], nonce)
            hello = {"node": claim, "to": to, "nonce": nonce, "proof": proof}
            await ws.send_message(encode("hello", hello))
            if secret is not None:
                welcome = cbor2.loads(await ws.get_message())
                assert welcome["kind"] == "welcome", welcome
        yield ws


async def send_all(ws: WebSocketConnection, frames: list[bytes], wait_s: float = 0.5) -> str | None:
    """Send frames, then read for ``wait_s``: the node's close reason, or None if the
    connection stayed open."""
    try:
        with trio.fail_after(10):
            for f in frames:
                await ws.send_message(f)
            with trio.move_on_after(wait_s):
                for _ in range(10_000):
                    await ws.get_message()
    except ConnectionClosed as e:
        return e.reason.reason or "" if e.reason else ""
    return None


def raft(kind: str, **fields: Any) -> bytes:
    return encode(kind, fields)
