"""Wire codecs: the envelope every frame shares, typed peer messages (Raft, handshake,
forward), the handshake's proofs.

Decoders never trust input: everything malformed raises ``ProtocolError`` naming the kind and
the field (the caller closes that one link), never another exception type.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2plog.errors import P2PLogError
from p2plog.raft.membership import encode_conf
from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from p2plog.raft.types import ConfState, Entry, Index, NodeId, Snapshot, Term
from p2plog.record import MAX_BATCH_RECORDS
from p2plog.state.entry import batch_data, tick_data
from p2plog.wire import envelope as env
from p2plog.wire import peer as wp
from p2plog.wire import peer_auth as pa
from p2plog.wire import peer_snapshot
from p2plog.wire.envelope import VERSION, ProtocolError

MAX = wp.MAX_PEER_FRAME
N1, N2 = NodeId("n1"), NodeId("n2")


def frame(**fields: Any) -> bytes:
    return cbor2.dumps(fields)


def raft_dict(m: Message) -> dict[str, Any]:
    if isinstance(m, InstallSnapshot):
        return env.decode(peer_snapshot.chunks(m)[0], MAX)
    return env.decode(wp.encode_raft(m), MAX)


def round_trip(m: Message) -> Message:
    if isinstance(m, InstallSnapshot):
        a = peer_snapshot.Assembly()
        out = [a.add(_snap_chunk(f)) for f in peer_snapshot.chunks(m)]
        assert all(x is None for x in out[:-1])
        assert out[-1] is not None
        return out[-1]
    got = wp.decode_peer(wp.encode_raft(m))
    assert isinstance(got, wp.RAFT_TYPES)
    return wp.to_raft(got)


def _snap_chunk(frame: bytes) -> wp.Snap:
    c = wp.decode_peer(frame)
    assert isinstance(c, wp.Snap)
    return c


def decode_dict(d: dict[str, Any]) -> wp.PeerMessage:
    return wp.decode_peer(cbor2.dumps(d))


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


def test_trailing_bytes_after_the_map_are_refused() -> None:
    data = frame(v=1, kind="hb")
    assert env.decode(data, MAX)["kind"] == "hb"
    for tail in (b"\x00", b"\xff", frame(v=1, kind="hb"), b"\xf6"):
        with pytest.raises(ProtocolError, match="bytes after the end"):
            env.decode(data + tail, MAX)


@pytest.mark.parametrize("tag", [0, 1, 2, 3, 4, 5, 24, 25, 28, 29, 30, 37, 256, 258, 1099, 55799])
def test_cbor_tags_are_refused(tag: int) -> None:
    """Bignums (tags 2/3) made a 2 KB frame decode into 10**5000, whose repr raised
    ValueError while formatting an error message and took the node down; string and shared
    references let a small frame stand for a large one. p2plog sends no tags at all."""
    value: Any = {0: "2026-01-01T00:00:00Z", 1: 5, 24: b"\x01", 28: [1], 256: ["a"]}.get(tag, 0)
    data = cbor2.dumps({"v": 1, "kind": "hb", "x": cbor2.CBORTag(tag, value)})
    with pytest.raises(ProtocolError, match="undecodable CBOR"):
        env.decode(data, MAX)


def test_a_bignum_anywhere_is_refused_without_formatting_it() -> None:
    for where in ("v", "kind", "term", "extra"):
        data = cbor2.dumps({"v": 1, "kind": "hb", where: 10**5000})
        with pytest.raises(ProtocolError) as info:
            wp.decode_peer(data)
        assert len(str(info.value)) < 300


def test_duplicate_keys_and_indefinite_lengths_are_refused() -> None:
    dup = b"\xa3\x61v\x01\x64kind\x62hb\x61v\x01"  # {"v": 1, "kind": "hb", "v": 1}
    with pytest.raises(ProtocolError, match="undecodable CBOR"):
        env.decode(dup, MAX)
    indefinite = b"\xbf\x61v\x01\x64kind\x62hb\xff"
    with pytest.raises(ProtocolError, match="undecodable CBOR"):
        env.decode(indefinite, MAX)


def test_brief_bounds_what_an_error_repeats() -> None:
    assert env.brief("x" * 1000).endswith("...")
    assert len(env.brief("x" * 1000)) == 40
    assert env.brief(10**5000) == "an integer of 16610 bits"
    assert env.brief(3) == "3"


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


def test_get_int() -> None:
    m = {"kind": "k", "i": 3, "s": "x", "t": True}
    assert env.get_int(m, "i") == 3
    assert env.get_int(m, "missing", 9) == 9
    with pytest.raises(ProtocolError, match="k: field 't' must be an integer, got True"):
        env.get_int(m, "t")  # a bool is not an integer on the wire
    with pytest.raises(ProtocolError, match="k: field 's' must be an integer, got 'x'"):
        env.get_int(m, "s")


# ------------------------------------------------------------------ raft messages

CONF = ConfState((N1, N2), (NodeId("n3"),), ((N1, "h:1"), (N2, "h:2"), (NodeId("n3"), "h:3")))

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
        (Entry(Term(5), Index(10), b""), Entry(Term(5), Index(11), tick_data(7))),
        Index(9),
    ),
    AppendEntriesResponse(N2, N1, Term(5), success=True, index=Index(11)),
    AppendEntriesResponse(N2, N1, Term(5), False, Index(9), Index(6), Term(3)),
    Heartbeat(N1, N2, Term(5), Index(11)),
    HeartbeatResponse(N2, N1, Term(5)),
    TimeoutNow(N1, N2, Term(5)),
    InstallSnapshot(N1, N2, Term(5), Snapshot(Index(40), Term(4), b"")),
    InstallSnapshot(N1, N2, Term(5), Snapshot(Index(40), Term(4), bytes(range(256)) * 9000)),
    InstallSnapshot(N1, N2, Term(5), Snapshot(Index(40), Term(4), b"s" * 3_000_000, CONF)),
    AppendEntries(
        N1,
        N2,
        Term(5),
        Index(9),
        Term(4),
        (Entry(Term(5), Index(10), encode_conf(CONF)),),
        Index(9),
    ),
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


nat = st.integers(0, wp.MAX_INDEX)
node_ids = st.text("abcn0123-_", min_size=1, max_size=8)
payloads = st.one_of(
    st.just(b""),
    st.integers(-(1 << 63), (1 << 63) - 1).map(tick_data),
    st.lists(
        st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=9, max_size=40)),
        min_size=1,
        max_size=4,
    ).map(lambda recs: batch_data(5, 1, recs)),
)


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    prev = draw(st.integers(0, 1 << 40))
    prev_term = draw(st.integers(0, 1 << 40))
    terms = sorted(draw(st.lists(st.integers(prev_term, 1 << 41), max_size=20)))
    entries = tuple(
        Entry(Term(t), Index(prev + 1 + i), draw(payloads)) for i, t in enumerate(terms)
    )
    term = draw(st.integers(terms[-1] if terms else 0, wp.MAX_TERM))
    return AppendEntries(
        NodeId(draw(node_ids)),
        NodeId(draw(node_ids)),
        Term(term),
        Index(prev),
        Term(prev_term),
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


_DELETE = object()
AE = ALL_MESSAGES[6]
AER = ALL_MESSAGES[8]
RV = ALL_MESSAGES[0]
HB = ALL_MESSAGES[9]


def mutated(m: Message, **change: Any) -> dict[str, Any]:
    d = raft_dict(m)
    for k, v in change.items():
        if v is _DELETE:
            del d[k]
        else:
            d[k] = v
    return d


@pytest.mark.parametrize(
    ("m", "key", "value", "match"),
    [
        (RV, "src", 1, r"Expected `str`, got `int` - at `\$.src`"),
        (RV, "src", "", r"length >= 1 - at `\$.src`"),
        (RV, "src", "n" * 65, r"length <= 64 - at `\$.src`"),
        (RV, "src", "n 1", r"matching regex .* - at `\$.src`"),
        (RV, "dst", None, r"Expected `str`, got `null` - at `\$.dst`"),
        (RV, "term", "3", r"Expected `int`, got `str` - at `\$.term`"),
        (RV, "term", True, r"Expected `int`, got `bool` - at `\$.term`"),
        (RV, "term", -1, r"Expected `int` >= 0 - at `\$.term`"),
        (RV, "term", 1.0, r"Expected `int`, got `float` - at `\$.term`"),
        # The on-disk term and vote are u64: a peer's 2**64 - 1 crashed two nodes storing it,
        # and again on every restart. Terms and indexes stop far below that.
        (RV, "term", 2**64 - 1, r"Expected `int` <= 4611686018427387904 - at `\$.term`"),
        (HB, "c", 2**63, r"Expected `int` <= 4611686018427387904 - at `\$.c`"),
        (RV, "li", -5, r"Expected `int` >= 0 - at `\$.li`"),
        (RV, "lt", _DELETE, "missing required field `lt`"),
        (RV, "pre", 1, r"Expected `bool`, got `int` - at `\$.pre`"),
        (RV, "extra", 1, "unknown field `extra`"),
        (AER, "ok", 0, r"Expected `bool`, got `int` - at `\$.ok`"),
        (AER, "hi", b"\x01", r"Expected `int`, got `bytes` - at `\$.hi`"),
        (AE, "pi", -1, r"Expected `int` >= 0 - at `\$.pi`"),
        (AE, "e", _DELETE, "missing required field `e`"),
        (AE, "e", {"0": 1}, r"Expected `array`, got `object` - at `\$.e`"),
    ],
)
def test_decode_rejects_bad_fields(m: Message, key: str, value: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_dict(mutated(m, **{key: value}))


@pytest.mark.parametrize(
    "entry",
    [
        [5, 10],  # too short
        [5, 10, b"", 0],  # too long
        [5, 10, "text"],  # data must be bytes
        [5, 10, None],
        ["5", 10, b""],
        [5, 10.0, b""],
        [-1, 10, b""],
        [5, 0, b""],  # index 0 does not exist
        [True, 10, b""],  # a bool is not a term
        {"t": 1},
        b"\x01",
    ],
)
def test_decode_rejects_malformed_entries(entry: Any) -> None:
    with pytest.raises(ProtocolError, match=r"ae: .* - at `\$.e\[0\]"):
        decode_dict(mutated(AE, e=[entry]))


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([[5, 11, b""]], "entry 0 has index 11, expected 10"),
        ([[5, 10, b""], [5, 10, b""]], "entry 1 has index 10, expected 11"),
        ([[3, 10, b""]], "entry 10 has term 3: terms must not go down"),  # below prev_term 4
        ([[5, 10, b""], [4, 11, b""]], "entry 11 has term 4: terms must not go down"),
        ([[6, 10, b""]], "not exceed the message's term 5"),
        ([[5, 10, b"\x09"]], "entry 10: unknown entry kind 9"),
        ([[5, 10, b"\x02\x00"]], "entry 10: a time tick of 2 bytes"),
        ([[5, 10, b"\x03" + b"\x00" * 8]], "entry 10: a batch shorter than its header"),
    ],
)
def test_append_entries_framing_is_checked(entries: list[Any], match: str) -> None:
    """A follower appends nothing a leader could not have written: contiguous indexes, terms
    that never go down, payloads shaped as the leader's own (``record.entry_problem``)."""
    with pytest.raises(ProtocolError, match=match):
        decode_dict(mutated(AE, e=entries))


def test_batch_framing_is_checked() -> None:
    good = batch_data(5, 1, [(b"\x01" * 16, b"\x00" * 8 + b"\xa0")])
    assert decode_dict(mutated(AE, e=[[5, 10, good]]))
    for bad in (good[:-1], good + b"\x00", good[:1] + b"\x00" * 20, good[:21]):
        with pytest.raises(ProtocolError, match="entry 10: "):
            decode_dict(mutated(AE, e=[[5, 10, bad]]))


def test_configuration_entries_and_snapshot_configurations_are_checked() -> None:
    bad = b'\x04{"voters":[],"learners":[],"addresses":{}}'
    with pytest.raises(ProtocolError, match="entry 10: a configuration with no voter"):
        decode_dict(mutated(AE, e=[[5, 10, bad]]))
    chunk = env.decode(peer_snapshot.chunks(ALL_MESSAGES[-2])[0], MAX)  # type: ignore[arg-type]
    chunk["conf"] = bad
    with pytest.raises(ProtocolError, match="no voter"):
        decode_dict(chunk)


def test_too_many_entries() -> None:
    d = mutated(AE, e=[[5, 10 + k, b""] for k in range(wp.MAX_ENTRIES + 1)])
    with pytest.raises(ProtocolError, match=rf"length <= {wp.MAX_ENTRIES} - at `\$.e`"):
        decode_dict(d)


@pytest.mark.parametrize("kind", ["xx", "AE", "hello2", ""])
def test_unknown_kind(kind: str) -> None:
    with pytest.raises(ProtocolError, match="unknown message kind"):
        decode_dict(mutated(ALL_MESSAGES[10], kind=kind))


def test_oversized_peer_frame() -> None:
    data = wp.encode_raft(HB)
    with pytest.raises(ProtocolError, match="exceeds"):
        wp.decode_peer(data, len(data) - 1)


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
        "e": [[5, 10, b""], [5, 11, tick_data(7)]],
    }


# ------------------------------------------------------------------ handshake


def test_handshake_messages() -> None:
    nonce, proof = b"\x01" * wp.NONCE_BYTES, b"\x02" * wp.PROOF_BYTES
    assert decode_dict({"v": 1, "kind": "challenge", "nonce": nonce}) == wp.Challenge(
        v=1, nonce=nonce
    )
    hello = {"v": 1, "kind": "hello", "node": "n1", "to": "n2", "nonce": nonce, "proof": proof}
    assert decode_dict(hello) == wp.Hello(v=1, node="n1", to="n2", nonce=nonce, proof=proof)
    for bad in ({"nonce": b"\x01"}, {"proof": b""}, {"cluster": "demo"}, {"node": 7}):
        with pytest.raises(ProtocolError, match="hello: "):
            decode_dict({**hello, **bad})


def test_proofs_bind_both_nonces_both_ids_the_cluster_and_the_direction() -> None:
    k, na, nd = b"k" * 32, b"a" * 16, b"d" * 16
    base = pa.hello_proof(k, "demo", "n1", "n2", na, nd)
    assert len(base) == wp.PROOF_BYTES
    assert base == pa.hello_proof(k, "demo", "n1", "n2", na, nd)
    changed = [
        pa.hello_proof(b"K" * 32, "demo", "n1", "n2", na, nd),
        pa.hello_proof(k, "demo2", "n1", "n2", na, nd),
        pa.hello_proof(k, "demo", "n3", "n2", na, nd),
        pa.hello_proof(k, "demo", "n1", "n3", na, nd),
        pa.hello_proof(k, "demo", "n1", "n2", nd, na),
        pa.hello_proof(k, "demo", "n1", "n2", na, b"e" * 16),
        pa.welcome_proof(k, "demo", "n1", "n2", na, nd),  # not reflectable
        pa.hello_proof(k, "dem", "on1", "n2", na, nd),  # no ambiguity between parts
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)
    assert pa.same(base, bytes(base))
    assert not pa.same(base, changed[0])


# ------------------------------------------------------------------ forward


recs_strategy = st.lists(
    st.tuples(st.binary(min_size=16, max_size=16), st.binary(max_size=100)), max_size=20
)


@given(fid=st.integers(0, (1 << 63) - 1), ack=st.sampled_from(["quorum", "leader"]))
def test_forward_round_trip_fid_and_ack(fid: int, ack: str) -> None:
    m = wp.decode_peer(wp.encode_forward(fid, ack, [], []))
    assert m == wp.Fwd(v=1, fid=fid, ack=ack, ids=b"", bodies=[])  # type: ignore[arg-type]


@given(recs=recs_strategy)
def test_forward_round_trip_records(recs: list[tuple[bytes, bytes]]) -> None:
    ids, bodies = [r for r, _ in recs], [b for _, b in recs]
    m = wp.decode_peer(wp.encode_forward(7, "quorum", ids, bodies))
    assert isinstance(m, wp.Fwd)
    assert m.records() == (ids, bodies)


def fwd(**change: Any) -> dict[str, Any]:
    d = env.decode(wp.encode_forward(1, "leader", [b"\x00" * 16], [b"body"]), MAX)
    for k, v in change.items():
        if v is _DELETE:
            del d[k]
        else:
            d[k] = v
    return d


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ack": "all"}, r"Expected `str` matching .*|Invalid enum value 'all'"),
        ({"ack": None}, r"at `\$.ack`"),
        ({"bodies": _DELETE}, "missing required field `bodies`"),
        ({"bodies": {}}, r"Expected `array`, got `object` - at `\$.bodies`"),
        ({"ids": "0" * 16}, r"Expected `bytes`, got `str` - at `\$.ids`"),
        ({"ids": b"\x00" * 15}, "ids must be 16 bytes per body"),
        ({"ids": b"\x00" * 32}, "ids must be 16 bytes per body"),
        ({"bodies": ["b"]}, r"Expected `bytes`, got `str` - at `\$.bodies\[0\]`"),
        ({"bodies": [b"x" * (64 << 10 + 1)]}, "over the 65536 byte record limit"),
        ({"fid": "1"}, r"Expected `int`, got `str` - at `\$.fid`"),
        ({"fid": -1}, r"Expected `int` >= 0 - at `\$.fid`"),
        ({"fid": _DELETE}, "missing required field `fid`"),
    ],
)
def test_forward_validation(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_dict(fwd(**change))


def test_forward_record_limit() -> None:
    n = MAX_BATCH_RECORDS + 1
    with pytest.raises(ProtocolError, match=rf"length <= {MAX_BATCH_RECORDS} - at `\$.bodies`"):
        decode_dict(fwd(ids=b"\x00" * 16 * n, bodies=[b""] * n))


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
    m = wp.decode_peer(wp.encode_forward_acks(3, acks))
    assert isinstance(m, wp.Fwda)
    assert m.outcomes(len(acks)) == acks


def test_forward_acks_are_runs_and_stay_inside_the_forward() -> None:
    acks: list[tuple[int, int, bool] | None] = [(10 + k, 2, False) for k in range(1000)]
    acks[500] = (3, 1, True)
    data = wp.encode_forward_acks(3, acks)
    msg = env.decode(data, MAX)
    assert msg["runs"] == [[0, 500, 10, 2], [501, 499, 511, 2]]
    assert msg["acks"] == [[500, 3, 1, True]]
    m = wp.decode_peer(data)
    assert isinstance(m, wp.Fwda)
    with pytest.raises(ProtocolError, match="overlaps or is past 999 records"):
        m.outcomes(999)
    with pytest.raises(ProtocolError, match=r"at `\$.runs\[0\]`"):
        decode_dict({**msg, "runs": [[0, 1, 2]]})


def test_forward_error_reply() -> None:
    m = wp.decode_peer(wp.encode_forward_error(9, "overloaded", "busy", 100))
    assert m == wp.Fwda(v=1, fid=9, code="overloaded", msg="busy", retry_after_ms=100)
    with pytest.raises(ProtocolError, match=r"at `\$.code`"):
        decode_dict({**env.decode(wp.encode_forward_error(9, "x", "", 0), MAX)})


def test_forward_acks_carry_conflicts() -> None:
    m = wp.decode_peer(wp.encode_forward_acks(4, [(7, 1, False), None], {1: 3}))
    assert isinstance(m, wp.Fwda)
    assert m.conflicts == [(1, 3)]
    assert m.outcomes(2) == [(7, 1, False), None]


def test_forward_acks_must_not_overlap() -> None:
    """Overlapping runs could make a reply cost runs x n steps, or count a record twice (so
    another would get neither an ack nor an error)."""
    data = wp.encode_forward_acks(3, [(10, 2, False), (11, 2, False)])
    msg = env.decode(data, MAX)
    for bad in (
        {"runs": [[0, 2, 10, 2], [1, 1, 11, 2]]},
        {"acks": [[0, 10, 2, True]]},
        {"conflicts": [[1, 5]]},
        {"conflicts": [[2, 5]]},
    ):
        m = decode_dict({**msg, **bad})
        assert isinstance(m, wp.Fwda)
        with pytest.raises(ProtocolError, match="overlaps or is past"):
            m.outcomes(2)


def test_snapshot_chunks_out_of_order_or_from_two_snapshots_are_not_delivered() -> None:
    big = InstallSnapshot(N1, N2, Term(5), Snapshot(Index(40), Term(4), b"x" * (4 << 20)))
    other = InstallSnapshot(N1, N2, Term(6), Snapshot(Index(50), Term(6), b"y" * (3 << 20)))
    a, b = peer_snapshot.chunks(big), peer_snapshot.chunks(other)
    asm = peer_snapshot.Assembly()
    assert asm.add(_snap_chunk(a[0])) is None
    assert asm.add(_snap_chunk(a[2])) is None  # a gap: the assembly starts over
    assert asm.add(_snap_chunk(a[3])) is None
    assert asm.add(_snap_chunk(b[0])) is None
    assert asm.add(_snap_chunk(a[1])) is None  # another snapshot's chunk
    got = [asm.add(_snap_chunk(f)) for f in b]
    assert got[-1] == other


@pytest.mark.parametrize(
    "fields",
    [
        {"off": 10, "total": 5, "data": b"x"},
        {"off": 0, "total": wp.MAX_SNAPSHOT + 1, "data": b"x"},
        {"off": 0, "total": 3, "data": b""},
        {"off": 0, "total": 2 << 20, "data": b"x" * (wp.SNAPSHOT_CHUNK + 1)},
    ],
)
def test_bad_snapshot_chunks_are_refused(fields: dict[str, Any]) -> None:
    d = {"v": 1, "kind": "snap", "src": "n1", "dst": "n2", "term": 1, "i": 3, "st": 1, **fields}
    with pytest.raises(ProtocolError):
        decode_dict(d)
