"""What both push protocols share: bounded decompression, levels from other systems' names,
and record ids that a retry reproduces.

Ids. OTLP and Loki senders retry a request whose answer they did not get (a timeout, a 429 or
503, a node that died before it answered), and they do not send ids of their own. p2plog dedups
by record id, so an id must come out the same for the same record on every try, through any
node. ``content_id`` hashes the record as converted (time, level, source, message, fields) with
BLAKE2b into a version-8 UUID (RFC 9562 section 5.8), plus the record's occurrence number among
identical records of the same request, so a burst of identical lines in one request stays a
burst. The consequence, documented for users: two requests that carry a record with the same
time (to the nanosecond) and the same content are taken as one record sent twice. A record
without any time gets the request's digest mixed in as well, so that identical untimed lines of
different requests are never merged (only an identical request is).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from typing import Any

import cbor2
import cramjam

# A request body is bounded twice: as sent (the HTTP port's body limit) and decompressed.
# JSON is bounded tighter: a decoded JSON list of empty lists costs ~20x its text.
MAX_DECODED_BYTES = 16 << 20
MAX_DECODED_JSON_BYTES = 8 << 20
MAX_PUSH_RECORDS = 100_000  # one request's records (the node's in-flight bound is 100,000)


def too_many(n: int) -> IngestError:
    return IngestError(
        f"over {MAX_PUSH_RECORDS} records in one request ({n} counted): send smaller batches "
        f"(the Collector's batch processor: send_batch_max_size)",
        413,
    )


def count_fields(buf: bytes, path: tuple[int, ...], limit: int = MAX_PUSH_RECORDS) -> int:
    """How many length-delimited fields a protobuf message holds at ``path`` (field numbers,
    outermost first), read from the wire format without decoding, stopping with
    ``too_many`` past ``limit``: the bound on a push's records before the parser builds
    them (a 2 KB gzip body of empty records would otherwise decode into millions). A
    malformed body counts what it can; the parser refuses it after."""
    found = 0
    stack = [(memoryview(buf), 0)]
    while stack:
        view, depth = stack.pop()
        for number, payload in _fields(view):
            if number != path[depth]:
                continue
            if depth + 1 == len(path):
                found += 1
                if found > limit:
                    raise too_many(found)
            else:
                stack.append((payload, depth + 1))
    return found


def _fields(view: memoryview) -> Iterator[tuple[int, memoryview]]:
    """The length-delimited fields of one message: (field number, payload)."""
    pos, end = 0, len(view)
    while pos < end:
        key, pos = _varint(view, pos)
        kind = key & 7
        if kind == 0:
            _, pos = _varint(view, pos)
        elif kind == 1:
            pos += 8
        elif kind == 5:
            pos += 4
        elif kind == 2:
            n, pos = _varint(view, pos)
            if pos + n > end:
                return
            yield key >> 3, view[pos : pos + n]
            pos += n
        else:
            return


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    n = shift = 0
    while pos < len(view) and shift < 70:
        b = view[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
    return n, len(view) + 1  # truncated: ends the walk


class IngestError(ValueError):
    """A request that cannot be taken at all, phrased for the sender (a 400, or 413/415 as
    ``status`` says)."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


def decompress(body: bytes, encoding: str | None, limit: int = MAX_DECODED_BYTES) -> bytes:
    """``body`` undone from its ``Content-Encoding`` (none, ``gzip``, ``deflate``, ``snappy``),
    never more than ``limit`` bytes: a small bomb cannot take the node's memory."""
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        return body
    if enc in ("gzip", "x-gzip", "deflate"):
        return _inflate(body, enc, limit)
    if enc == "snappy":
        return unsnappy(body, limit)
    raise IngestError(f"Content-Encoding {encoding!r} is not supported: gzip or none", 415)


def _inflate(body: bytes, enc: str, limit: int) -> bytes:
    """Every member of a gzip body (RFC 1952 section 2.2: members may follow each other, and
    Go's readers take them all), each checked to its end."""
    out = bytearray()
    rest = body
    while rest:
        d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        try:
            out += d.decompress(rest, limit + 1 - len(out))
        except zlib.error as e:
            raise IngestError(f"the body is not valid {enc}: {e}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise IngestError(f"the body inflates past {limit} bytes", 413)
        if not d.eof:
            raise IngestError(f"the {enc} body is cut short")
        rest = d.unused_data
    return bytes(out)


def unsnappy(body: bytes, limit: int = MAX_DECODED_BYTES) -> bytes:
    """Snappy's block format (Loki's push body), its declared length checked before any
    allocation."""
    n, shift = 0, 0
    for i, b in enumerate(body[:10]):
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
        if i == 9:
            raise IngestError("the body is not snappy-compressed (bad length header)")
    if n > limit:
        raise IngestError(f"the body would decompress to {n} bytes, over {limit}", 413)
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as e:
        raise IngestError(f"the body is not snappy block data: {str(e)[:100]}") from None


LEVEL_NAMES = {
    "trace": "debug",
    "debug": "debug",
    "dbg": "debug",
    "info": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "err": "error",
    "critical": "critical",
    "crit": "critical",
    "fatal": "critical",
    "panic": "critical",
    "alert": "critical",
    "emerg": "critical",
    "emergency": "critical",
}


def level_named(name: str) -> str | None:
    """p2plog's level for another system's level name (case and a trailing digit ignored:
    OTel's ``WARN2``), or None."""
    return LEVEL_NAMES.get(name.strip().lower().rstrip("1234"))


class Ids:
    """Ids for the records of one request (``content_id``), counting repeats within it."""

    def __init__(self, protocol: str, body: bytes) -> None:
        self._person = protocol.encode()[:16]
        self._body = body
        self._digest: bytes | None = None
        self._seen: dict[bytes, int] = {}

    def content_id(self, record: dict[str, Any]) -> bytes:
        """The id of ``record`` (a record map without ``id``) in this request."""
        h = hashlib.blake2b(_content(record), digest_size=16, person=self._person)
        if record.get("ts") is None:
            h.update(self._request_digest())
        key = h.digest()
        k = self._seen.get(key, 0)
        self._seen[key] = k + 1
        if k:
            h.update(k.to_bytes(8, "little"))
        return as_uuid8(h.digest())

    def _request_digest(self) -> bytes:
        if self._digest is None:
            self._digest = hashlib.blake2b(self._body, digest_size=16).digest()
        return self._digest


def _content(record: dict[str, Any]) -> bytes:
    """A record's content as bytes that do not depend on the order of its fields (sorted
    here: cbor2's canonical mode sorts every map and cost 2.5x as much)."""
    fields = record.get("fields") or {}
    parts = [record.get("ts"), record.get("level"), record.get("source"), record.get("msg")]
    return cbor2.dumps([*parts, sorted(fields.items())])


def named_id(protocol: str, value: str) -> bytes:
    """The id of a record its sender named (OTel's ``log.record.uid``): the same name is the
    same record."""
    h = hashlib.blake2b(value.encode(), digest_size=16, person=(protocol + "/uid").encode()[:16])
    return as_uuid8(h.digest())


def as_uuid8(b: bytes) -> bytes:
    """16 hash bytes as an RFC 9562 version-8 UUID (so the id prints and parses as a UUID)."""
    out = bytearray(b)
    out[6] = (out[6] & 0x0F) | 0x80
    out[8] = (out[8] & 0x3F) | 0x80
    return bytes(out)
