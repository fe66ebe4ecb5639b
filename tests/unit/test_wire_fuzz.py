"""Fuzzing the wire decoders: random CBOR and mutated valid frames, for every peer and client
message kind. The one property: a frame decodes into a typed message or raises
``ProtocolError``, never any other exception (an escaping exception once ended the node), and
a message that decodes is within the ranges the rest of the node relies on.

Bounded: a fixed number of examples per test (``FUZZ_EXAMPLES``, a few seconds in all).
``tests/process/test_fuzz.py`` sends the same kinds of frames to a real node's endpoints.
"""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2plog.raft.messages import AppendEntries
from p2plog.testing.wire_fuzz import (
    ALL_KINDS,
    CLIENT_KINDS,
    mutated,
    shaped,
    valid_client_frames,
    valid_peer_frames,
    values,
)
from p2plog.wire import client as wc
from p2plog.wire import peer as wp
from p2plog.wire.envelope import ProtocolError, decode

FUZZ_EXAMPLES = 400
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PEER_FRAMES = valid_peer_frames()
CLIENT_FRAMES = valid_client_frames()


def check_peer(data: bytes) -> None:
    try:
        m = wp.decode_peer(data)
    except ProtocolError:
        return
    assert isinstance(m, wp.PeerMessage.__args__)  # type: ignore[attr-defined]
    if isinstance(m, wp.RAFT_TYPES):
        r = wp.to_raft(m)
        assert 0 <= r.term <= wp.MAX_TERM
        if isinstance(r, AppendEntries):
            assert [e.index for e in r.entries] == list(
                range(r.prev_index + 1, r.prev_index + 1 + len(r.entries))
            )


def check_client(data: bytes) -> None:
    try:
        req = wc.decode_request(decode(data, wc.MAX_CLIENT_FRAME))
    except ProtocolError:
        return
    assert 0 <= req.req < 1 << 63


@FUZZ
@given(st.one_of(values, shaped(ALL_KINDS)))
def test_random_cbor_to_the_peer_decoder(value: Any) -> None:
    check_peer(cbor2.dumps(value))


@FUZZ
@given(mutated(PEER_FRAMES))
def test_mutated_peer_frames(data: bytes) -> None:
    check_peer(data)


@FUZZ
@given(st.one_of(values, shaped(CLIENT_KINDS)))
def test_random_cbor_to_the_client_decoder(value: Any) -> None:
    check_client(cbor2.dumps(value))


@FUZZ
@given(mutated(CLIENT_FRAMES))
def test_mutated_client_frames(data: bytes) -> None:
    check_client(data)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_to_both_decoders(data: bytes) -> None:
    check_peer(data)
    check_client(data)


def test_every_seed_frame_decodes() -> None:
    for f in PEER_FRAMES:
        wp.decode_peer(f)
    for f in CLIENT_FRAMES:
        wc.decode_request(decode(f, wc.MAX_CLIENT_FRAME))
