"""The envelope of every websocket message, and strict field access for decoders.

Decoding never trusts input: wrong types, missing fields, oversize frames and undecodable
bytes all raise ``ProtocolError`` with a reason; the caller closes that one connection (a
misbehaving peer or client never crashes the node).
"""

from __future__ import annotations

from typing import Any

import cbor2

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


def decode(data: bytes | str, max_bytes: int) -> dict[str, Any]:
    if isinstance(data, str):
        raise ProtocolError("text frame; p2plog speaks binary CBOR frames")
    if len(data) > max_bytes:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the {max_bytes} byte limit")
    try:
        msg = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as e:
        raise ProtocolError(f"undecodable CBOR: {e}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"frame is a CBOR {type(msg).__name__}, expected a map")
    v = msg.get("v")
    if type(v) is not int or v != VERSION:
        raise ProtocolError(f"unsupported protocol version {msg.get('v')!r} (this node: 1)")
    if not isinstance(msg.get("kind"), str):
        raise ProtocolError("frame has no text 'kind'")
    return msg


def get_int(msg: dict[str, Any], key: str, default: int | None = None) -> int:
    v = msg.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"{msg.get('kind')}: field {key!r} must be an integer, got {v!r}")
    return v


def get_opt_int(msg: dict[str, Any], key: str) -> int | None:
    return None if msg.get(key) is None else get_int(msg, key)


def get_str(msg: dict[str, Any], key: str, default: str | None = None) -> str:
    v = msg.get(key, default)
    if not isinstance(v, str):
        raise ProtocolError(f"{msg.get('kind')}: field {key!r} must be text, got {v!r}")
    return v


def get_opt_str(msg: dict[str, Any], key: str) -> str | None:
    return None if msg.get(key) is None else get_str(msg, key)


def get_bool(msg: dict[str, Any], key: str, default: bool = False) -> bool:
    v = msg.get(key, default)
    if not isinstance(v, bool):
        raise ProtocolError(f"{msg.get('kind')}: field {key!r} must be true or false, got {v!r}")
    return v


def get_bytes(msg: dict[str, Any], key: str) -> bytes:
    v = msg.get(key)
    if not isinstance(v, bytes):
        raise ProtocolError(f"{msg.get('kind')}: field {key!r} must be bytes")
    return v


def get_list(msg: dict[str, Any], key: str, max_len: int) -> list[Any]:
    v = msg.get(key)
    if not isinstance(v, list):
        raise ProtocolError(f"{msg.get('kind')}: field {key!r} must be a list")
    if len(v) > max_len:
        raise ProtocolError(f"{msg.get('kind')}: {key!r} has {len(v)} items, limit {max_len}")
    return v
