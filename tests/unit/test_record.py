"""record.validate (what clients submit) and the entry bytes a record has in the Raft log."""

from __future__ import annotations

import math
import struct
import uuid
from typing import Any

import cbor2
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from p2plog.record import (
    LEVELS,
    MAX_FIELDS,
    MAX_RECORD_BYTES,
    MAX_SOURCE_CHARS,
    NO_TS,
    PER_RECORD_OVERHEAD,
    Accepted,
    RecordError,
    parse_id,
    uuid_text,
    validate,
)
from p2plog.state.entry import (
    BATCH_HEAD_SIZE,
    KIND_BATCH,
    KIND_TICK,
    Rec,
    batch_data,
    entry_ingest_ts,
    entry_tick_ts,
    parse_batch,
    tick_data,
)
from p2plog.state.stored import StoredRecord, level_at_least

RID = uuid.UUID("12345678-1234-5678-1234-567812345678")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def good(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": str(RID), "level": "info", "msg": "hello"}
    rec.update(over)
    return rec


def body_of(a: Accepted) -> dict[str, Any]:
    """The body as a map, with its binary ts_corrected prefix put back under "tc"."""
    (tc,) = struct.unpack_from("<q", a.body)
    decoded = cbor2.loads(a.body[8:])
    assert isinstance(decoded, dict)
    decoded["tc"] = None if tc == NO_TS else tc
    return decoded


def reject(raw: Any) -> str:
    with pytest.raises(RecordError) as ei:
        validate(raw, node="n1")
    return str(ei.value)


# ------------------------------------------------------------------ accepted


def test_minimal_record() -> None:
    a = validate({"id": str(RID), "msg": "m"}, node="n1")
    assert a.id == RID.bytes
    assert body_of(a) == {
        "ts": None,
        "tc": None,  # no event time and no receive time given
        "cu": False,
        "lv": LEVELS.index("info"),  # level defaults to info
        "src": "",
        "msg": "m",
        "f": {},
        "n": "n1",
    }


@pytest.mark.parametrize(
    "rid",
    [
        RID.bytes,
        str(RID),
        str(RID).upper(),
        RID.hex,
        "{" + str(RID) + "}",
        RID.urn,
    ],
)
def test_id_forms(rid: Any) -> None:
    assert validate(good(id=rid), node="n1").id == RID.bytes


def test_full_record_body() -> None:
    fields = {"http.status": 200, "ok": True, "ratio": 0.5, "path": "/x", "big": INT64_MAX}
    a = validate(
        good(ts=1_700_000_000_000_000_000, level="error", source="web-1", fields=fields),
        node="n2",
        clock_offset_ns=123,
        received_ns=5,  # ignored: the record has its own event time
        clock_uncertain=True,
    )
    b = body_of(a)
    assert b == {
        "ts": 1_700_000_000_000_000_000,
        "tc": 1_700_000_000_000_000_123,
        "cu": True,
        "lv": LEVELS.index("error"),
        "src": "web-1",
        "msg": "hello",
        "f": fields,
        "n": "n2",
    }


def test_ts_corrected() -> None:
    assert body_of(validate(good(ts=5), node="n1"))["tc"] == 5  # no offset measured
    assert body_of(validate(good(ts=5), node="n1", clock_offset_ns=-7))["tc"] == -2
    # without an event time, the node's corrected receive time stands in
    assert body_of(validate(good(), node="n1", received_ns=99, clock_offset_ns=3))["tc"] == 99


@pytest.mark.parametrize("level", LEVELS)
def test_every_level(level: str) -> None:
    assert body_of(validate(good(level=level), node="n1"))["lv"] == LEVELS.index(level)


def test_boundaries_accepted() -> None:
    validate(good(ts=INT64_MIN + 1), node="n1")  # INT64_MIN itself marks "no event time"
    validate(good(ts=INT64_MAX), node="n1")
    validate(good(source="s" * MAX_SOURCE_CHARS), node="n1")
    validate(good(fields={f"k{i}": i for i in range(MAX_FIELDS)}), node="n1")
    validate(good(msg=""), node="n1")
    validate(good(ts=None), node="n1")  # explicit null ts means "no event time"


def test_ts_that_collides_with_the_no_ts_marker_is_refused() -> None:
    assert "int64 range" in reject(good(ts=INT64_MIN))
    with pytest.raises(RecordError):
        validate(good(ts=INT64_MAX), node="n1", clock_offset_ns=1)  # corrected: past int64


def test_size_limit_is_exact() -> None:
    def fits(n: int) -> bool:
        try:
            validate(good(msg="x" * n), node="n1")
        except RecordError:
            return False
        return True

    lo, hi = 0, MAX_RECORD_BYTES  # fits(lo), not fits(hi): binary search the largest msg
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    a = validate(good(msg="x" * lo), node="n1")
    assert len(a.body) + PER_RECORD_OVERHEAD == MAX_RECORD_BYTES  # the limit itself is allowed


# ------------------------------------------------------------------ rejected


@pytest.mark.parametrize("raw", [None, [], "rec", 5, b"x"])
def test_not_a_map(raw: Any) -> None:
    assert "a record must be a map" in reject(raw)


def test_unknown_keys_are_named() -> None:
    msg = reject(good(lvl="info", extra=1))
    assert "unknown key(s) ['extra', 'lvl']" in msg
    assert "allowed: fields, id, level, msg, source, ts" in msg


@pytest.mark.parametrize(
    "rid",
    [None, "", "not-a-uuid", b"\x00" * 15, b"\x00" * 17, 5, RID.int, "1234", bytearray(16)],
)
def test_bad_id(rid: Any) -> None:
    msg = reject(good(id=rid))
    assert msg.startswith(f"id {rid!r} is not a UUID")
    assert "00000000-0000-0000-0000-000000000000" in msg


def test_missing_id() -> None:
    rec = good()
    del rec["id"]
    assert reject(rec).startswith("id None is not a UUID")


def test_parse_id_directly() -> None:
    assert parse_id(RID.bytes) == RID.bytes
    with pytest.raises(RecordError):
        parse_id(RID)  # a uuid.UUID object is neither bytes nor text


@pytest.mark.parametrize("ts", [True, False, 1.5, "1", INT64_MAX + 1, INT64_MIN - 1, [1]])
def test_bad_ts(ts: Any) -> None:
    msg = reject(good(ts=ts))
    assert msg == f"ts {ts!r} must be an integer of nanoseconds since the epoch"


@pytest.mark.parametrize("level", ["LOUD", "INFO", "", None, 1, True, ["info"]])
def test_bad_level(level: Any) -> None:
    msg = reject(good(level=level))
    assert msg == f"level {level!r} is not one of debug|info|warning|error|critical"


@pytest.mark.parametrize("source", [None, 5, b"web", "s" * (MAX_SOURCE_CHARS + 1)])
def test_bad_source(source: Any) -> None:
    assert reject(good(source=source)) == "source must be text of at most 256 characters"


@pytest.mark.parametrize(("msg", "tname"), [(None, "NoneType"), (b"x", "bytes"), (5, "int")])
def test_non_text_msg(msg: Any, tname: str) -> None:
    assert reject(good(msg=msg)) == f"msg must be text, got {tname}"


def test_missing_msg() -> None:
    rec = good()
    del rec["msg"]
    assert reject(rec) == "msg must be text, got NoneType"


@pytest.mark.parametrize("fields", [None, [], "a=b", [("a", "b")]])
def test_fields_not_a_map(fields: Any) -> None:
    assert reject(good(fields=fields)).startswith("fields must be a map")


@pytest.mark.parametrize(
    ("value", "tname"),
    [({"a": 1}, "dict"), ([1, 2], "list"), (None, "NoneType"), (b"x", "bytes")],
)
def test_nested_or_odd_field_values(value: Any, tname: str) -> None:
    msg = reject(good(fields={"ok": 1, "http": value}))
    assert msg.startswith(f"field 'http' has a {tname} value; fields are flat")
    assert "'http.status'" in msg  # the fix: flatten by naming keys


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 1 << 100])
def test_out_of_int64_field_value(value: int) -> None:
    msg = reject(good(fields={"n": value}))
    assert msg == f"field 'n' = {value} is outside the 64-bit integer range; send it as text"


def test_non_text_field_name() -> None:
    assert reject(good(fields={1: "x"})) == "field name 1 must be text"


def test_too_many_fields() -> None:
    msg = reject(good(fields={f"k{i}": i for i in range(MAX_FIELDS + 1)}))
    assert msg == f"{MAX_FIELDS + 1} fields, more than the {MAX_FIELDS} allowed"


def test_huge_record() -> None:
    msg = reject(good(msg="x" * (MAX_RECORD_BYTES + 1)))  # refused before it is encoded
    assert "65537 characters is over the 65536 byte limit" in msg
    assert "split the message" in msg
    msg = reject(good(msg="x" * (MAX_RECORD_BYTES - 50)))  # encoded, then over the limit
    assert "bytes encoded, over the 65536 byte limit" in msg
    assert "split the message" in msg


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_field_values_are_refused(value: float) -> None:
    """JSON has no NaN or infinity: ``query --json`` printed bare NaN, which no JSON reader
    takes. Such a value is refused at the door, with the way out."""
    msg = reject(good(fields={"ratio": value}))
    assert "field 'ratio'" in msg
    assert "send it as text" in msg


def test_oversized_field_text_is_refused_before_encoding() -> None:
    msg = reject(good(fields={"blob": "x" * (MAX_RECORD_BYTES + 1)}))
    assert "field 'blob' is over the 65536 character limit" in msg


def test_huge_fields_count_toward_the_limit() -> None:
    msg = reject(good(fields={f"k{i}": "v" * 1000 for i in range(70)}))
    assert "over the 65536 byte limit" in msg


# ------------------------------------------------------------------ entry bytes


def test_batch_layout() -> None:
    bodies = [b"\xa0", b"", b"xyz"]
    ids = [RID.bytes, bytes(16), b"\xff" * 16]
    data = batch_data(-7, 41, list(zip(ids, bodies, strict=True)))
    assert data[0] == KIND_BATCH
    assert entry_ingest_ts(data) == -7
    assert struct.unpack_from("<qQI", data, 1) == (-7, 41, 3)
    assert len(data) == BATCH_HEAD_SIZE + 3 * PER_RECORD_OVERHEAD + 4
    assert data[21 : 21 + 48] == b"".join(ids)
    assert struct.unpack_from("<3I", data, 69) == (1, 0, 3)
    assert data[81:] == b"".join(bodies)
    b = parse_batch(data)
    assert b is not None
    assert (b.ingest_ts, b.base, b.n) == (-7, 41, 3)
    assert b.ids() == ids
    assert b.bodies() == bodies
    assert b.records(5) == [Rec(41 + k, 5, -7, ids[k], bodies[k]) for k in range(3)]


@pytest.mark.parametrize(
    "data",
    [
        b"",  # the leader's no-op
        b"\x03" * (BATCH_HEAD_SIZE - 1),  # too short to be a batch
        b"\x02" + b"\x00" * 30,  # another kind
        b"\x01" + b"\x00" * 30,
    ],
)
def test_non_batch_data(data: bytes) -> None:
    assert parse_batch(data) is None


def one(index: int, term: int, ingest_ts: int, a: Accepted) -> StoredRecord:
    b = parse_batch(batch_data(ingest_ts, index, [(a.id, a.body)]))
    assert b is not None
    return b.records(term)[0].decode()


text = st.text(max_size=200)
field_values = st.one_of(
    st.text(max_size=50),
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
records = st.fixed_dictionaries(
    {"id": st.binary(min_size=16, max_size=16), "msg": text},
    optional={
        "ts": st.one_of(st.none(), st.integers(INT64_MIN, INT64_MAX)),
        "level": st.sampled_from(LEVELS),
        "source": st.text(max_size=MAX_SOURCE_CHARS),
        "fields": st.dictionaries(st.text(max_size=20), field_values, max_size=10),
    },
)


def representable(raw: dict[str, Any], offset: int) -> bool:
    """Is ts + offset a storable corrected time (validate refuses the rest, tested above)?"""
    ts = raw.get("ts")
    return ts is None or INT64_MIN < ts + offset <= INT64_MAX


@given(
    raw=records,
    node=st.text(min_size=1, max_size=10),
    offset=st.integers(-86_400 * 10**9, 86_400 * 10**9),
    received=st.one_of(st.none(), st.integers(0, INT64_MAX)),
    uncertain=st.booleans(),
    ingest_ts=st.integers(INT64_MIN, INT64_MAX),
    index=st.integers(1, 1 << 40),
    term=st.integers(1, 1 << 40),
)
def test_round_trip(
    raw: dict[str, Any],
    node: str,
    offset: int,
    received: int | None,
    uncertain: bool,
    ingest_ts: int,
    index: int,
    term: int,
) -> None:
    assume(representable(raw, offset))
    a = validate(
        raw, node=node, clock_offset_ns=offset, received_ns=received, clock_uncertain=uncertain
    )
    r = one(index, term, ingest_ts, a)
    ts = raw.get("ts")
    assert r == StoredRecord(
        index=index,
        term=term,
        id=raw["id"],
        ingest_ts=ingest_ts,
        ts=ts,
        ts_corrected=ts + offset if ts is not None else received,
        level=raw.get("level", "info"),
        source=raw.get("source", ""),
        msg=raw["msg"],
        fields=raw.get("fields", {}),
        node=node,
        clock_uncertain=uncertain,
    )
    # bools stay bools through CBOR (True must not come back as 1)
    for k, v in raw.get("fields", {}).items():
        assert type(r.fields[k]) is type(v)


def test_to_json() -> None:
    a = validate(good(ts=10, source="s", fields={"k": "v"}), node="n3")
    r = one(4, 2, 99, a)
    assert r.to_json() == {
        "id": str(RID),
        "index": 4,
        "term": 2,
        "ts": 10,
        "ts_corrected": 10,
        "ingest_ts": 99,
        "level": "info",
        "source": "s",
        "msg": "hello",
        "fields": {"k": "v"},
        "late": False,
        "node": "n3",
        "clock_uncertain": False,
    }


def test_body_without_clock_flag_decodes_as_certain() -> None:
    # Records written before the clock_uncertain flag existed have no "cu" key.
    body = struct.pack("<q", 1) + cbor2.dumps(
        {"ts": 1, "lv": 1, "src": "", "msg": "old", "f": {}, "n": "n1"}
    )
    r = one(1, 1, 2, Accepted(RID.bytes, body))
    assert r.clock_uncertain is False
    assert r.msg == "old"


@pytest.mark.parametrize("ts", [0, 1, -1, INT64_MAX, INT64_MIN])
def test_leader_tick_entries_are_not_records(ts: int) -> None:
    data = tick_data(ts)
    assert data[0] == KIND_TICK
    assert entry_tick_ts(data) == ts
    assert entry_ingest_ts(data) == ts  # ticks carry the leader's time like records do
    assert parse_batch(data) is None


def test_ingest_ts_of_other_entries() -> None:
    assert entry_ingest_ts(b"") is None  # the Raft no-op
    assert entry_tick_ts(b"") is None
    assert entry_tick_ts(batch_data(5, 1, [(RID.bytes, b"\xa0")])) is None
    assert entry_tick_ts(tick_data(5) + b"x") is None  # a tick has exactly 9 bytes
    assert entry_ingest_ts(b"\x04" + b"\x00" * 30) is None


@given(raw=records, offset=st.integers(-(10**9), 10**9), uncertain=st.booleans())
def test_level_read_from_the_body_bytes_agrees_with_the_decode(
    raw: dict[str, Any], offset: int, uncertain: bool
) -> None:
    assume(representable(raw, offset))
    a = validate(raw, node="n1", clock_offset_ns=offset, received_ns=5, clock_uncertain=uncertain)
    want = LEVELS.index(raw.get("level", "info"))
    assert [level_at_least(a.body, n) for n in range(5)] == [want >= n for n in range(5)]


def test_level_of_an_unexpected_body_shape_is_left_to_the_decode() -> None:
    odd = struct.pack("<q", 1) + cbor2.dumps({"lv": 0, "ts": 1})
    assert all(level_at_least(odd, n) for n in range(5))


@given(st.binary(min_size=16, max_size=16))
def test_uuid_text_is_the_uuid_module_s_text(rid: bytes) -> None:
    assert uuid_text(rid) == str(uuid.UUID(bytes=rid))


def test_same_content_ignores_what_the_taking_node_added() -> None:
    from p2plog.record import same_content

    raw = {"id": b"\x01" * 16, "ts": 5, "msg": "m", "fields": {"a": 1}}
    a = validate(raw, node="n1", clock_offset_ns=10).body
    b = validate(raw, node="n2", clock_offset_ns=99, clock_uncertain=True).body
    assert same_content(a, b)
    for change in ({"msg": "x"}, {"ts": 6}, {"fields": {"a": 2}}, {"level": "error"}):
        assert not same_content(a, validate({**raw, **change}, node="n1").body)
