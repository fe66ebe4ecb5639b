"""Client records: what a client may submit, checked and encoded once where it enters.

A client record is a map: ``id`` (UUID as 16 bytes or text; client-made so retries dedup),
``ts`` (event time, ns since the epoch, producer clock; optional), ``level``, ``source``,
``msg``, ``fields`` (flat map of str -> str/int/float/bool; optional).

The node that takes a submission validates each record once and encodes it once (``body``:
``ts_corrected`` as an i64, then a CBOR map that also carries the taking ``node``). From then on
the record travels as bytes, many to a Raft entry (``p2plog.state.entry``); readers decode the
body with ``p2plog.state.stored``. A leader checks the bodies a follower forwards as it checks a
client's records (``revalidate``).
"""

from __future__ import annotations

import math
import struct
import uuid
from dataclasses import dataclass
from typing import Any

import cbor2

LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_RECORD_BYTES = 64 << 10
MAX_BATCH_BYTES = 1 << 20
MAX_BATCH_RECORDS = 10_000
MAX_SOURCE_CHARS = 256
MAX_FIELDS = 256
MAX_CLOCK_OFFSET_NS = 86_400 * 10**9  # a producer clock off by more than a day is broken
TS_PREFIX = struct.Struct("<q")  # ts_corrected, first in the body: the event-time key without CBOR
NO_TS = -(1 << 63)
_RECORD_KEYS = {"id", "ts", "level", "source", "msg", "fields"}
_FIELD_TYPES = (str, int, float, bool)
_INT64 = (-(1 << 63), (1 << 63) - 1)
PER_RECORD_OVERHEAD = 20  # in a batch entry: id (16) + body length (4)


class RecordError(ValueError):
    """What is wrong with one submitted record, phrased for the user."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A validated record, ready to travel: its id and its encoded body."""

    id: bytes
    body: bytes


def uuid_text(rid: bytes) -> str:
    """16 id bytes as UUID text, by hex formatting: ``str(uuid.UUID(bytes=...))`` costs about
    1.5 us, a fifth of a tailed record's cost on the node."""
    h = rid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_id(value: Any) -> bytes:
    if isinstance(value, bytes) and len(value) == 16:
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value).bytes
        except ValueError:
            pass
    raise RecordError(f"id {value!r} is not a UUID (16 bytes or text like {uuid.UUID(int=0)})")


def validate(
    raw: Any,
    *,
    node: str,
    clock_offset_ns: int = 0,
    received_ns: int | None = None,
    clock_uncertain: bool = False,
) -> Accepted:
    """Check one submitted record and encode its body; raises ``RecordError``.

    ``ts_corrected`` is the event time on the cluster's clock: the producer's ``ts`` plus the
    producer's measured offset to this node (``clock_offset_ns``), or, for a record without
    ``ts``, the node's corrected time of receipt (``received_ns``). ``clock_uncertain`` marks
    records taken while this node's clock disagrees with its peers' by more than the bound.
    """
    if not isinstance(raw, dict):
        raise RecordError(f"a record must be a map, got {type(raw).__name__}")
    unknown = set(raw) - _RECORD_KEYS
    if unknown:
        raise RecordError(
            f"unknown key(s) {sorted(map(str, unknown))}; "
            f"allowed: {', '.join(sorted(_RECORD_KEYS))}"
        )
    rid = parse_id(raw.get("id"))
    ts, level, source, msg = _check_head(raw)
    fields = raw.get("fields", {})
    _check_fields(fields)
    tc = ts + clock_offset_ns if ts is not None else received_ns
    if tc is not None and (not _in64(tc) or tc == NO_TS):  # NO_TS itself means "no ts"
        raise RecordError(
            f"ts {ts} corrected by the producer's clock offset leaves the int64 range"
        )
    body = TS_PREFIX.pack(NO_TS if tc is None else tc) + cbor2.dumps(
        {
            "ts": ts,
            "cu": clock_uncertain,
            "lv": LEVELS.index(level),
            "src": source,
            "msg": msg,
            "f": fields,
            "n": node,
        }
    )
    size = len(body) + PER_RECORD_OVERHEAD
    if size > MAX_RECORD_BYTES:
        raise RecordError(
            f"record is {size} bytes encoded, over the {MAX_RECORD_BYTES} byte limit; "
            f"split the message or move data out of fields"
        )
    return Accepted(rid, body)


def revalidate(body: bytes, rid: bytes, node: str) -> Accepted:
    """A record body that another node encoded (a follower's forward), checked exactly as a
    client's record is: decoded back into the record the client sent and run through
    ``validate`` as the forwarding node ran it; the result must be these very bytes, so nothing
    else rides along. ``node`` is the authenticated peer that forwarded it (a body claiming
    another taker is refused). Raises ``RecordError``."""
    if len(body) <= TS_PREFIX.size:
        raise RecordError("the body is shorter than its time prefix")
    try:
        d = cbor2.loads(body[TS_PREFIX.size :])
    except (cbor2.CBORError, ValueError, TypeError, RecursionError, OverflowError) as e:
        raise RecordError(f"the body is not CBOR: {str(e)[:80]}") from None
    if not isinstance(d, dict) or list(d) != ["ts", "cu", "lv", "src", "msg", "f", "n"]:
        raise RecordError("the body is not a record map as validate writes it")
    ts, lv, cu = d["ts"], d["lv"], d["cu"]
    if type(lv) is not int or not 0 <= lv < len(LEVELS) or type(cu) is not bool:
        raise RecordError("the body's level or clock flag is malformed")
    taker = d["n"]
    if taker != node:
        named = repr(taker[:64]) if isinstance(taker, str) else "no node"
        raise RecordError(f"the body says {named} took it, not {node!r}")
    raw = {"id": rid, "level": LEVELS[lv], "source": d["src"], "msg": d["msg"], "fields": d["f"]}
    tc = TS_PREFIX.unpack_from(body)[0]
    offset, received = 0, None
    if ts is None:
        received = tc
    elif type(ts) is int:
        raw["ts"], offset = ts, tc - ts
    if abs(offset) > MAX_CLOCK_OFFSET_NS:
        raise RecordError("the body's clock correction is beyond one day")
    a = validate(raw, node=node, clock_offset_ns=offset, received_ns=received, clock_uncertain=cu)
    if a.body != body:
        raise RecordError("the body is not in the form validate writes")
    return a


def same_content(a: bytes, b: bytes) -> bool:
    """Do two record bodies hold the same record as its producer sent it (``ts``, level,
    source, message, fields)? What the taking node added (its corrected time, its id, its
    clock flag) may differ between a record and its retry through another node."""
    da, db = cbor2.loads(a[TS_PREFIX.size :]), cbor2.loads(b[TS_PREFIX.size :])
    return all(da.get(k) == db.get(k) for k in ("ts", "lv", "src", "msg", "f"))


def _check_head(raw: dict[Any, Any]) -> tuple[int | None, str, str, str]:
    """``ts``, ``level``, ``source`` and ``msg`` of a record map, each checked."""
    ts = raw.get("ts")
    if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool) or not _in64(ts)):
        raise RecordError(f"ts {ts!r} must be an integer of nanoseconds since the epoch")
    level = raw.get("level", "info")
    if level not in LEVELS:
        raise RecordError(f"level {level!r} is not one of {'|'.join(LEVELS)}")
    source = raw.get("source", "")
    if not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS:
        raise RecordError(f"source must be text of at most {MAX_SOURCE_CHARS} characters")
    msg = raw.get("msg")
    if not isinstance(msg, str):
        raise RecordError(f"msg must be text, got {type(msg).__name__}")
    if len(msg) > MAX_RECORD_BYTES:  # refused before it is encoded: that costs ~1 ms per MB
        raise RecordError(
            f"msg of {len(msg)} characters is over the {MAX_RECORD_BYTES} byte limit; split "
            f"the message or move data out of fields"
        )
    return ts, level, source, msg


def _in64(v: int) -> bool:
    return _INT64[0] <= v <= _INT64[1]


def _check_fields(fields: Any) -> None:
    if not isinstance(fields, dict):
        raise RecordError("fields must be a map of text keys to text, number or bool values")
    if len(fields) > MAX_FIELDS:
        raise RecordError(f"{len(fields)} fields, more than the {MAX_FIELDS} allowed")
    for k, v in fields.items():
        if not isinstance(k, str):
            raise RecordError(f"field name {k!r} must be text")
        if isinstance(v, int) and not isinstance(v, bool) and not _in64(v):
            raise RecordError(
                f"field {k!r} = {v} is outside the 64-bit integer range; send it as text"
            )
        if not isinstance(v, _FIELD_TYPES):
            raise RecordError(
                f"field {k!r} has a {type(v).__name__} value; fields are flat: text, number "
                f"or bool (nest by naming keys like 'http.status')"
            )
        if isinstance(v, float) and not math.isfinite(v):
            raise RecordError(f"field {k!r} is {v}, which JSON cannot carry; send it as text")
        if isinstance(v, str) and len(v) > MAX_RECORD_BYTES:
            raise RecordError(f"field {k!r} is over the {MAX_RECORD_BYTES} character limit")
