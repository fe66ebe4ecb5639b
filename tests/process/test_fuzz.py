"""Fuzzing a real node's two endpoints with hypothesis: random CBOR, frame-shaped maps of every
kind and mutated valid frames, to ``/client`` (anonymous and with a token) and to ``/peer``
(as a stranger, and as a member that passed the handshake). After every example the node
processes are alive; at the end no connection failed with an unexpected exception, the
cluster serves, and every node holds the same log.

Bounded: ``EXAMPLES`` per test, each a connection with at most a few frames and 0.2 s of
reading. The cluster is one per module; each example runs its own ``trio.run``.
Frames that a member could send validly (an AppendEntries from an authenticated link) are
left out of the member seeds: members are trusted with what they may legitimately say.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from functools import partial
from typing import Any

import cbor2
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, HandshakeError

from p2plog.testing.wire_fuzz import (
    ALL_KINDS,
    CLIENT_KINDS,
    mutated,
    shaped,
    valid_client_frames,
    valid_peer_frames,
    values,
)
from p2plog.wire.peer_auth import hello_proof

from .checks import assert_same_logs, assert_serving
from .harness import Cluster, Credentials, Secured, encode, open_raw_ws

pytestmark = pytest.mark.slow
EXAMPLES = 300
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
CLIENT_SEEDS = valid_client_frames()
MEMBER_SEEDS = valid_peer_frames(ae=False)
frames_of = partial(st.lists, min_size=1, max_size=3)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("fuzz"), secured=Secured(tokens={"writer": "write"}))
    try:
        trio.run(c.start_all)
        trio.run(partial(c.leader, timeout_s=15.0))
        yield c
    finally:
        trio.run(c.stop_all)


def alive(c: Cluster) -> None:
    assert c.live() == c.ids, f"a node exited\n{c.log_tails()}"


async def drain(ws: Any) -> None:
    with trio.move_on_after(0.2):
        for _ in range(1000):
            await ws.get_message()


async def to_client(c: Cluster, frames: list[bytes], token: bool) -> None:
    creds = Credentials(None, c.tokens["writer"] if token else None)
    try:
        with trio.fail_after(10):
            async with open_raw_ws(c.port("n1"), creds=creds) as ws:
                for f in frames:
                    await ws.send_message(f)
                await drain(ws)
    except (ConnectionClosed, HandshakeError, trio.BrokenResourceError):
        pass


async def to_peer(c: Cluster, frames: list[bytes], member: bool) -> None:
    secret = (c.root / "cluster.secret").read_bytes().strip()
    try:
        with trio.fail_after(10):
            async with open_raw_ws(c.port("n1"), "/peer", creds=Credentials()) as ws:
                challenge = cbor2.loads(await ws.get_message())
                nonce = secrets.token_bytes(16)
                key = secret if member else secrets.token_bytes(32)
                proof = hello_proof(key, c.name, "n2", "n1", challenge["nonce"], nonce)
                hello = {"node": "n2", "to": "n1", "nonce": nonce, "proof": proof}
                await ws.send_message(encode("hello", hello))
                for f in frames:
                    await ws.send_message(f)
                await drain(ws)
    except (ConnectionClosed, HandshakeError, trio.BrokenResourceError):
        pass


def as_bytes(v: Any) -> bytes:
    return v if isinstance(v, bytes) else cbor2.dumps(v)


@FUZZ
@given(
    frames=frames_of(st.one_of(values, shaped(CLIENT_KINDS), mutated(CLIENT_SEEDS))),
    token=st.booleans(),
)
def test_fuzz_the_client_endpoint(fuzzed: Cluster, frames: list[Any], token: bool) -> None:
    trio.run(to_client, fuzzed, [as_bytes(f) for f in frames], token)
    alive(fuzzed)


@FUZZ
@given(
    frames=frames_of(st.one_of(values, shaped(ALL_KINDS), mutated(MEMBER_SEEDS))),
    member=st.booleans(),
)
def test_fuzz_the_peer_endpoint(fuzzed: Cluster, frames: list[Any], member: bool) -> None:
    trio.run(to_peer, fuzzed, [as_bytes(f) for f in frames], member)
    alive(fuzzed)


def test_after_the_fuzzing_the_cluster_serves_one_log(fuzzed: Cluster) -> None:
    alive(fuzzed)
    logs = "\n".join(fuzzed.logs(n) for n in fuzzed.ids)
    assert "failed unexpectedly" not in logs, logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]

    async def check() -> None:
        await fuzzed.leader(timeout_s=15.0)
        for nid in fuzzed.ids:
            await assert_serving(fuzzed.port(nid), f"after-fuzz-{nid}")
        await assert_same_logs(fuzzed, fuzzed.ids)

    trio.run(check)
