"""Hypothesis strategies that fuzz the wire: random CBOR values, frame-shaped maps of every
message kind, and valid frames of every kind with a few random edits. Used by the decoder
fuzz tests (``tests/unit/test_wire_fuzz.py``) and the endpoint fuzz tests against real nodes
(``tests/process/test_fuzz.py``). Needs hypothesis (the test extra)."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import strategies as st

from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    Message,
    RequestVote,
    TimeoutNow,
)
from p2plog.raft.types import Entry, Index, NodeId, Term
from p2plog.state.entry import batch_data, tick_data
from p2plog.wire import peer as wp
from p2plog.wire.envelope import encode

N1, N2 = NodeId("n1"), NodeId("n2")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 70), 1 << 70),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=40),
    st.sampled_from(["v", "kind", "req", "ae", "hb", "submit", "query", "records", "term"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(0, 5)), inner, max_size=6),
    ),
    max_leaves=30,
)
ALL_KINDS = [*wp.RAFT_KINDS, "challenge", "hello", "welcome", "fwd", "fwda", "ci", "cia", "tp"]
CLIENT_KINDS = ["submit", "query", "tail", "cancel", "status", "time"]


@st.composite
def shaped(draw: st.DrawFn, kinds: list[str]) -> dict[Any, Any]:
    """A map that looks like a frame: the right envelope and a real kind, random fields."""
    d = draw(st.dictionaries(st.text(max_size=6), values, max_size=8))
    d.update(v=1, kind=draw(st.sampled_from(kinds)))
    if draw(st.booleans()):
        d["req"] = draw(st.integers(-5, 1 << 64))
    return d


def valid_peer_frames(ae: bool = True) -> list[bytes]:
    batch = batch_data(5, 1, [(b"\x01" * 16, b"\x00" * 8 + cbor2.dumps({"a": 1}))])
    msgs: list[Message] = [
        RequestVote(N1, N2, Term(3), Index(10), Term(2)),
        AppendEntriesResponse(N2, N1, Term(5), False, Index(9), Index(6), Term(3)),
        Heartbeat(N1, N2, Term(5), Index(11)),
        TimeoutNow(N1, N2, Term(5)),
        AppendEntries(
            N1,
            N2,
            Term(5),
            Index(9),
            Term(4),
            (
                Entry(Term(5), Index(10), b""),
                Entry(Term(5), Index(11), tick_data(7)),
                Entry(Term(5), Index(12), batch),
            ),
            Index(9),
        ),
    ]
    frames = [wp.encode_raft(m) for m in msgs if ae or not isinstance(m, AppendEntries)]
    frames += [
        wp.encode_forward(1, "quorum", [b"\x01" * 16], [b"\x00" * 9]),
        wp.encode_forward_acks(2, [(5, 1, False), None, (3, 1, True)]),
        wp.encode_forward_error(3, "overloaded", "busy", 100),
        encode("challenge", {"nonce": b"\x02" * 16}),
        encode("hello", {"node": "n1", "to": "n2", "nonce": b"\x03" * 16, "proof": b"\x04" * 32}),
        encode("welcome", {"proof": b"\x05" * 32}),
        encode("ci", {"rid": 4}),
        encode("cia", {"rid": 4, "c": None}),
        encode("tp", {"t1": 1}),
        encode("tpr", {"t1": 1, "t2": 2, "t3": 3}),
    ]
    return frames


def valid_client_frames() -> list[bytes]:
    rec = {"id": b"\x01" * 16, "ts": 5, "level": "info", "msg": "m", "fields": {"a": 1.5}}
    return [
        encode("submit", {"req": 1, "records": [rec], "ack": "leader", "compact": True}),
        encode("query", {"req": 2, "from_index": 3, "level": "warning", "grep": "x", "limit": 5}),
        encode("tail", {"req": 3, "order": "event"}),
        encode("cancel", {"req": 3}),
        encode("status", {"req": 4}),
        encode("time", {"req": 5, "t1": 99}),
    ]


@st.composite
def mutated(draw: st.DrawFn, frames: list[bytes]) -> bytes:
    """A valid frame with a few random edits: bytes flipped, inserted, deleted, cut off."""
    data = bytearray(draw(st.sampled_from(frames)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
        elif data:
            data[pos] = draw(
                st.sampled_from([0x00, 0x18, 0x1B, 0x3B, 0x5B, 0x9B, 0xBB, 0xC2, 0xFF])
            )
    return bytes(data)
