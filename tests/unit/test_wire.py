"""Wire codecs: the envelope every frame shares, Raft messages, hello and forward.

Decoders never trust input: everything malformed raises ``ProtocolError`` (the caller closes
that one link), never another exception type.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2plog.errors import P2PLogError
from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from p2plog.raft.types import Entry, Index, NodeId, Term
from p2plog.wire import envelope as env
from p2plog.wire import peer as wp
from p2plog.wire.envelope import VERSION, ProtocolError

MAX = wp.MAX_PEER_FRAME
N1, N2 = NodeId("n1"), NodeId("n2")


def frame(**fields: Any) -> bytes:
    return cbor2.dumps(fields)


def raft_dict(m: Message) -> dict[str, Any]:
    return env.decode(wp.encode_raft(m), MAX)


def round_trip(m: Message) -> Message:
    return wp.decode_raft(raft_dict(m))


# ------------------------------------------------------------------ envelope


def test_protocol_error_is_a_p2plog_error() -> None:
    assert issubclass(ProtocolError, P2PLogError)


def test_encode_decode_envelope() -> None:
    data = env.encode("status", {"req": 7})
    assert env.decode(data, 1 << 10) == {"req": 7, "v": VERSION, "kind": "status"}


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536])
def test_raw_list_is_spliced_as_the_array_it_encodes(n: int) -> None:
    """Records encoded once by the client go into the frame as they are; the node decodes
    the same frame as if the list had been encoded with the rest (every CBOR length form)."""
    items = [{"i": i} for i in range(n)]
    data = env.encode("submit", {"req": 1, "records": env.RawList([cbor2.dumps(x) for x in items])})
    assert data == env.encode("submit", {"req": 1, "records": items})
    assert env.decode(data, 1 << 24)["records"] == items


def test_unknown_type_still_fails_to_encode() -> None:
    with pytest.raises(cbor2.CBOREncodeError):
        env.encode("submit", {"x": object()})


def test_text_frame_rejected() -> None:
    with pytest.raises(ProtocolError, match="text frame"):
        env.decode(frame(v=1, kind="x").decode("latin-1"), MAX)


def test_oversize_frame_rejected_before_decoding() -> None:
    data = frame(v=1, kind="x", pad=b"\x00" * 100)
    assert env.decode(data, len(data))["kind"] == "x"  # exactly the limit is fine
    with pytest.raises(ProtocolError, match=f"frame of {len(data)} bytes exceeds the 100 byte"):
        env.decode(data, 100)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa1",  # a map with its only pair missing
        b"\xa1\x61",  # truncated text key
        b"\xff",  # break outside an indefinite item
        b"\x1c",  # reserved additional info
        b"\x62\xed\xa0",  # invalid UTF-8 in text
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # absurd declared length
        b"\x81" * 200_000,  # very deep nesting
    ],
)
def test_undecodable_cbor(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="undecodable CBOR"):
        env.decode(data, 1 << 20)


@given(st.binary(max_size=64))
def test_decode_raises_only_protocol_error(data: bytes) -> None:
    try:
        msg = env.decode(data, 1 << 10)
    except ProtocolError:
        return
    assert isinstance(msg, dict)
    assert msg["v"] == VERSION
    assert isinstance(msg["kind"], str)


@pytest.mark.parametrize(
    ("value", "tname"),
    [([1, "x"], "list"), (1, "int"), ("v", "str"), (b"\x00", "bytes"), (None, "NoneType")],
)
def test_non_map_rejected(value: Any, tname: str) -> None:
    with pytest.raises(ProtocolError, match=f"frame is a CBOR {tname}, expected a map"):
        env.decode(cbor2.dumps(value), MAX)


@pytest.mark.parametrize("v", [0, 2, -1, 1.0, True, "1", None, [1]])
def test_wrong_version_rejected(v: Any) -> None:
    with pytest.raises(ProtocolError, match="unsupported protocol version"):
        env.decode(frame(v=v, kind="hb"), MAX)


def test_missing_version_rejected() -> None:
    with pytest.raises(ProtocolError, match=r"unsupported protocol version None \(this node: 1\)"):
        env.decode(frame(kind="hb"), MAX)


@pytest.mark.parametrize("fields", [{}, {"kind": 1}, {"kind": None}, {"kind": b"hb"}])
def test_missing_or_non_text_kind_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="frame has no text 'kind'"):
        env.decode(frame(v=1, **fields), MAX)


def test_field_getters() -> None:
    m = {"kind": "k", "i": 3, "b": True, "s": "x", "y": b"\x01", "l": [1, 2], "t": True}
    assert env.get_int(m, "i") == 3
    assert env.get_int(m, "missing", 9) == 9
    assert env.get_opt_int(m, "missing") is None
    assert env.get_str(m, "s") == "x"
    assert env.get_opt_str(m, "missing") is None
    assert env.get_bool(m, "b") is True
    assert env.get_bool(m, "missing") is False
    assert env.get_bytes(m, "y") == b"\x01"
    assert env.get_list(m, "l", 2) == [1, 2]
    with pytest.raises(ProtocolError, match="k: field 't' must be an integer, got True"):
        env.get_int(m, "t")  # a bool is not an integer on the wire
    with pytest.raises(ProtocolError, match="k: field 'i' must be true or false, got 3"):
        env.get_bool(m, "i")
    with pytest.raises(ProtocolError, match="k: field 'i' must be text"):
        env.get_str(m, "i")
    with pytest.raises(ProtocolError, match="k: field 's' must be bytes"):
        env.get_bytes(m, "s")
    with pytest.raises(ProtocolError, match="k: field 's' must be a list"):
        env.get_list(m, "s", 5)
    with pytest.raises(ProtocolError, match="k: 'l' has 2 items, limit 1"):
        env.get_list(m, "l", 1)


# ------------------------------------------------------------------ raft messages

ALL_MESSAGES: list[Message] = [
    RequestVote(N1, N2, Term(3), Index(10), Term(2)),
    RequestVote(N1, N2, Term(4), Index(0), Term(0), pre_vote=True),
    RequestVote(N1, N2, Term(4), Index(7), Term(4), transfer=True),
    RequestVoteResponse(N2, N1, Term(3), granted=True),
    RequestVoteResponse(N2, N1, Term(4), granted=False, pre_vote=True),
    AppendEntries(N1, N2, Term(5), Index(0), Term(0), (), Index(0)),
    AppendEntries(
        N1,
        N2,
        Term(5),
        Index(9),
        Term(4),
        (Entry(Term(5), Index(10), b""), Entry(Term(5), Index(11), b"\x01rec")),
        Index(9),
    ),
    AppendEntriesResponse(N2, N1, Term(5), success=True, index=Index(11)),
    AppendEntriesResponse(N2, N1, Term(5), False, Index(9), Index(6), Term(3)),
    Heartbeat(N1, N2, Term(5), Index(11)),
    HeartbeatResponse(N2, N1, Term(5)),
    TimeoutNow(N1, N2, Term(5)),
]


@pytest.mark.parametrize("m", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_every_message_type(m: Message) -> None:
    got = round_trip(m)
    assert got == m
    assert type(got) is type(m)


def test_every_message_type_is_covered() -> None:
    assert {type(m) for m in ALL_MESSAGES} == set(Message.__args__)
    kinds = {raft_dict(m)["kind"] for m in ALL_MESSAGES}
    assert kinds == set(wp.RAFT_KINDS)


nat = st.integers(0, (1 << 63) - 1)
node_ids = st.text(min_size=1, max_size=8)


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    prev = draw(st.integers(0, 1 << 40))
    terms = draw(st.lists(st.integers(0, 1 << 40), max_size=20))
    entries = tuple(
        Entry(Term(t), Index(prev + 1 + i), draw(st.binary(max_size=64)))
        for i, t in enumerate(sorted(terms))
    )
    return AppendEntries(
        NodeId(draw(node_ids)),
        NodeId(draw(node_ids)),
        Term(draw(nat)),
        Index(prev),
        Term(draw(nat)),
        entries,
        Index(draw(nat)),
    )


@given(append_entries())
def test_append_entries_round_trip(m: AppendEntries) -> None:
    assert round_trip(m) == m


@given(
    src=node_ids,
    dst=node_ids,
    term=nat,
    a=nat,
    b=nat,
    c=nat,
    f1=st.booleans(),
    f2=st.booleans(),
)
def test_small_messages_round_trip(
    src: str, dst: str, term: int, a: int, b: int, c: int, f1: bool, f2: bool
) -> None:
    s, d, t = NodeId(src), NodeId(dst), Term(term)
    for m in (
        RequestVote(s, d, t, Index(a), Term(b), f1, f2),
        RequestVoteResponse(s, d, t, f1, f2),
        AppendEntriesResponse(s, d, t, f1, Index(a), Index(b), Term(c)),
        Heartbeat(s, d, t, Index(a)),
        HeartbeatResponse(s, d, t),
        TimeoutNow(s, d, t),
    ):
        assert round_trip(m) == m


def mutated(m: Message, **change: Any) -> dict[str, Any]:
    d = raft_dict(m)
    for k, v in change.items():
        if v is _DELETE:
            del d[k]
        else:
            d[k] = v
    return d


_DELETE = object()
AE = ALL_MESSAGES[6]
AER = ALL_MESSAGES[8]
RV = ALL_MESSAGES[0]


@pytest.mark.parametrize(
    ("m", "key", "value", "match"),
    [
        (RV, "src", 1, "field 'src' must be text"),
        (RV, "dst", None, "field 'dst' must be text"),
        (RV, "term", "3", "field 'term' must be an integer"),
        (RV, "term", True, "field 'term' must be an integer"),
        (RV, "term", -1, "rv: field 'term' must not be negative"),
        (RV, "term", 1.0, "field 'term' must be an integer"),
        (RV, "li", -5, "rv: field 'li' must not be negative"),
        (RV, "lt", _DELETE, "field 'lt' must be an integer, got None"),
        (RV, "pre", 1, "field 'pre' must be true or false"),
        (RV, "tr", "yes", "field 'tr' must be true or false"),
        (AER, "ok", 0, "field 'ok' must be true or false"),
        (AER, "i", -1, "aer: field 'i' must not be negative"),
        (AER, "hi", b"\x01", "field 'hi' must be an integer"),
        (AER, "ht", -2, "aer: field 'ht' must not be negative"),
        (AE, "pi", -1, "ae: field 'pi' must not be negative"),
        (AE, "pt", None, "field 'pt' must be an integer"),
        (AE, "c", -1, "ae: field 'c' must not be negative"),
        (AE, "e", _DELETE, "field 'e' must be a list"),
        (AE, "e", {"0": 1}, "field 'e' must be a list"),
        (ALL_MESSAGES[9], "c", -1, "hb: field 'c' must not be negative"),
        (ALL_MESSAGES[4], "pre", None, "field 'pre' must be true or false"),
    ],
)
def test_decode_rejects_bad_fields(m: Message, key: str, value: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        wp.decode_raft(mutated(m, **{key: value}))


@pytest.mark.parametrize(
    "entry",
    [
        [1, 1],  # too short
        [1, 1, b"x", 0],  # too long
        (1, 1, b"x"),  # not a list (cbor gives lists; a tuple must not slip through either)
        [1, 1, "text"],  # data must be bytes
        [1, 1, None],
        ["1", 1, b"x"],
        [1, 1.0, b"x"],
        [-1, 1, b"x"],  # negative term
        [1, 0, b"x"],  # index 0 does not exist
        [1, -3, b"x"],
        {"t": 1},
        b"\x01",
    ],
)
def test_decode_rejects_malformed_entries(entry: Any) -> None:
    with pytest.raises(ProtocolError, match=r"ae: each entry must be \[term, index, bytes\]"):
        wp.decode_raft(mutated(AE, e=[[5, 10, b""], entry]))


@pytest.mark.parametrize("entry", [[True, 1, b"x"], [1, True, b"x"], [False, 1, b"x"]])
def test_decode_rejects_bool_in_entries(entry: Any) -> None:
    # like every other integer field (get_int), a bool is not a term or an index
    with pytest.raises(ProtocolError, match=r"ae: each entry must be \[term, index, bytes\]"):
        wp.decode_raft(mutated(AE, e=[entry]))


def test_too_many_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wp, "MAX_ENTRIES", 2)
    d = mutated(AE, e=[[5, 10, b""]] * 3)
    with pytest.raises(ProtocolError, match="'e' has 3 items, limit 2"):
        wp.decode_raft(d)


@pytest.mark.parametrize("kind", ["hello", "fwd", "xx", "AE"])
def test_unknown_raft_kind(kind: str) -> None:
    with pytest.raises(ProtocolError, match=f"unknown peer message kind {kind!r}"):
        wp.decode_raft(mutated(ALL_MESSAGES[10], kind=kind))


def test_wire_field_names_are_short() -> None:
    # The wire format is a contract with other nodes: pin it.
    assert raft_dict(AE) == {
        "v": 1,
        "kind": "ae",
        "src": "n1",
        "dst": "n2",
        "term": 5,
        "pi": 9,
        "pt": 4,
        "c": 9,
        "e": [[5, 10, b""], [5, 11, b"\x01rec"]],
    }


# ------------------------------------------------------------------ hello and forward


def test_hello() -> None:
    assert env.decode(wp.encode_hello("demo", "n1", "n2"), MAX) == {
        "v": 1,
        "kind": "hello",
        "cluster": "demo",
        "node": "n1",
        "to": "n2",
    }


recs_strategy = st.lists(
    st.tuples(st.binary(min_size=16, max_size=16), st.binary(max_size=100)), max_size=20
)


@given(fid=st.integers(-(1 << 63), (1 << 63) - 1), ack=st.sampled_from(["quorum", "leader"]))
def test_forward_round_trip_fid_and_ack(fid: int, ack: str) -> None:
    msg = env.decode(wp.encode_forward(fid, ack, []), MAX)
    assert msg["kind"] == "fwd"
    assert wp.decode_forward(msg) == (fid, ack, [])
    assert wp.forward_id(msg) == fid


@given(recs=recs_strategy)
def test_forward_round_trip_records(recs: list[tuple[bytes, bytes]]) -> None:
    msg = env.decode(wp.encode_forward(7, "quorum", recs), MAX)
    assert wp.decode_forward(msg) == (7, "quorum", recs)


def fwd(**change: Any) -> dict[str, Any]:
    d = env.decode(wp.encode_forward(1, "leader", [(b"\x00" * 16, b"body")]), MAX)
    for k, v in change.items():
        if v is _DELETE:
            del d[k]
        else:
            d[k] = v
    return d


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ack": "all"}, "fwd: ack must be quorum or leader, got 'all'"),
        ({"ack": None}, "fwd: field 'ack' must be text"),
        ({"ack": _DELETE}, "fwd: field 'ack' must be text"),
        ({"bodies": _DELETE}, "fwd: field 'bodies' must be a list"),
        ({"bodies": {}}, "fwd: field 'bodies' must be a list"),
        ({"ids": _DELETE}, "fwd: field 'ids'"),
        ({"ids": "0" * 16}, "fwd: field 'ids'"),
        ({"ids": b"\x00" * 15}, "fwd: ids must be 16 bytes per body"),
        ({"ids": b"\x00" * 32}, "fwd: ids must be 16 bytes per body"),
        ({"bodies": ["b"]}, "fwd: ids must be 16 bytes per body, and bodies bytes"),
        ({"fid": "1"}, "fwd: field 'fid' must be an integer"),
        ({"fid": True}, "fwd: field 'fid' must be an integer"),
        ({"fid": _DELETE}, "fwd: field 'fid' must be an integer"),
    ],
)
def test_forward_validation(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        wp.decode_forward(fwd(**change))


def test_forward_record_limit() -> None:
    d = fwd(ids=b"\x00" * 16 * 100_001, bodies=[b""] * 100_001)
    with pytest.raises(ProtocolError, match="'bodies' has 100001 items, limit 100000"):
        wp.decode_forward(d)


@given(
    acks=st.lists(
        st.one_of(
            st.none(),
            st.tuples(st.integers(1, 1 << 40), st.integers(1, 5), st.booleans()),
        ),
        max_size=30,
    )
)
def test_forward_acks_round_trip(acks: list[tuple[int, int, bool] | None]) -> None:
    msg = env.decode(wp.encode_forward_acks(3, acks), MAX)
    assert wp.decode_forward_acks(msg, len(acks)) == acks


def test_forward_acks_are_runs() -> None:
    acks: list[tuple[int, int, bool] | None] = [(10 + k, 2, False) for k in range(1000)]
    acks[500] = (3, 1, True)
    msg = env.decode(wp.encode_forward_acks(3, acks), MAX)
    assert msg["runs"] == [[0, 500, 10, 2], [501, 499, 511, 2]]
    assert msg["acks"] == [[500, 3, 1, True]]
    with pytest.raises(ProtocolError, match="fwda: malformed acks"):
        wp.decode_forward_acks({**msg, "runs": [[0, 1, 2]]}, 1000)


def test_forward_id_of_a_bad_fid() -> None:
    with pytest.raises(ProtocolError):
        wp.forward_id(fwd(fid=None))
