"""The envelope of every websocket message, and strict field access for decoders.

Decoding never trusts input: wrong types, missing fields, oversize frames, undecodable or
trailing bytes and CBOR tags all raise ``ProtocolError`` with a reason; the caller closes that one
connection (a misbehaving peer or client never crashes the node). Values from the wire appear in
error messages only through ``brief`` (bounded length).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, TypeVar, get_args

import cbor2
import msgspec

from p2plog.errors import P2PLogError

VERSION = 1


class ProtocolError(P2PLogError):
    """The other side sent something that breaks the protocol; close that connection."""


class RawList:
    """A CBOR array of items that are CBOR already (records encoded once by the client):
    written into the frame as they are instead of being encoded again."""

    __slots__ = ("items",)

    def __init__(self, items: list[bytes]) -> None:
        self.items = items


def _write_raw(encoder: cbor2.CBOREncoder, value: Any) -> None:
    if not isinstance(value, RawList):
        raise cbor2.CBOREncodeError(f"cannot serialize type {type(value).__name__}")
    n = len(value.items)
    if n < 24:
        head = bytes((0x80 | n,))
    elif n < 1 << 8:
        head = bytes((0x98, n))
    elif n < 1 << 16:
        head = b"\x99" + n.to_bytes(2, "big")
    else:
        head = b"\x9a" + n.to_bytes(4, "big")
    encoder.write(head)
    encoder.write(b"".join(value.items))


def encode(kind: str, fields: dict[str, Any]) -> bytes:
    fields["v"] = VERSION
    fields["kind"] = kind
    return cbor2.dumps(fields, default=_write_raw)


def _no_tags(*_: Any) -> Any:
    raise cbor2.CBORDecodeError("CBOR tags are not part of the p2plog protocol")


# Every tag cbor2 decodes natively (dates, bignums, decimals, string and shared references,
# sets, regexps, UUIDs, IP addresses, self-describe...) goes to ``_no_tags``; the rest reach the
# tag hook, which refuses them too. Bignums are why: a 2 KB frame holding 10**5000 made an
# int whose repr raises ValueError; references let a small frame name one big string many times.
_NO_SEMANTIC_TAGS: dict[int, Any] = dict.fromkeys([*range(1100), 55799], _no_tags)
MAX_DEPTH = 16  # a frame is a map of lists of maps of scalars: depth 4 is the deepest we send


def loads_strict(data: bytes) -> Any:
    """Decode exactly one CBOR item that fills ``data``: no tags, no indefinite lengths, no
    duplicate map keys, at most ``MAX_DEPTH`` levels, no trailing bytes. Raises ``ProtocolError``
    with a reason; never any other exception."""
    try:
        dec = cbor2.CBORDecoder(
            io.BytesIO(data),
            read_size=max(1, len(data)),
            semantic_decoders=_NO_SEMANTIC_TAGS,
            tag_hook=_no_tags,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        value = dec.decode()
    except (cbor2.CBORError, ValueError, TypeError, RecursionError, OverflowError) as e:
        raise ProtocolError(f"undecodable CBOR: {str(e)[:200]}") from None
    try:
        dec.read(1)
    except cbor2.CBORDecodeEOF:
        return value
    raise ProtocolError("undecodable CBOR: bytes after the end of the frame's item")


def decode(data: bytes | str, max_bytes: int) -> dict[str, Any]:
    """The map of one frame, checked for the envelope (``v``, ``kind``); the caller turns it
    into a typed message."""
    if isinstance(data, str):
        raise ProtocolError("text frame; p2plog speaks binary CBOR frames")
    if len(data) > max_bytes:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the {max_bytes} byte limit")
    msg = loads_strict(data)
    if not isinstance(msg, dict):
        raise ProtocolError(f"frame is a CBOR {type(msg).__name__}, expected a map")
    v = msg.get("v")
    if type(v) is not int or v != VERSION:
        raise ProtocolError(f"unsupported protocol version {brief(v)} (this node: 1)")
    if not isinstance(msg.get("kind"), str):
        raise ProtocolError("frame has no text 'kind'")
    return msg


T = TypeVar("T")


def kinds(union: Any) -> dict[str, Any]:
    """The message classes of a union of tagged Structs, by their ``kind``."""
    return {c.__struct_config__.tag: c for c in get_args(union)}


def typed(raw: dict[str, Any], by_kind: Mapping[str, type[T]]) -> T:
    """``raw`` (an envelope-checked frame map) as the typed message its ``kind`` names: every
    field checked by msgspec against the class (types, ranges, lengths, no unknown keys).
    Dispatching on ``kind`` here, not with a union: msgspec converts to one Struct class in
    ~1 us, to a union of sixteen in ~20 us."""
    kind = raw["kind"]
    cls = by_kind.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message kind {brief(kind)}")
    try:
        # bytes and bytearray are CBOR's own: no base64 text may stand in for them.
        return msgspec.convert(raw, cls, builtin_types=(bytes, bytearray))
    except msgspec.ValidationError as e:
        raise ProtocolError(f"{kind}: {str(e)[:200]}") from None  # it may quote a long value


def brief(value: Any, limit: int = 40) -> str:
    """A value for an error message, never long: the repr cut to ``limit`` characters (an
    attacker's 1 MB string must not travel back in a close reason or fill a log line)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def get_int(msg: dict[str, Any], key: str, default: int | None = None) -> int:
    v = msg.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"{msg.get('kind')}: field {key!r} must be an integer, got {brief(v)}")
    return v
