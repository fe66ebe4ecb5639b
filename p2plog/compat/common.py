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
from typing import Any

import cbor2
import cramjam

# A request body is bounded twice: as sent (the HTTP port's body limit) and decompressed.
MAX_DECODED_BYTES = 64 << 20


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
        d = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error as e:
            raise IngestError(f"the body is not valid {enc}: {e}") from None
        if len(out) > limit or d.unconsumed_tail:
            raise IngestError(f"the body inflates past {limit} bytes", 413)
        return out
    if enc == "snappy":
        return unsnappy(body, limit)
    raise IngestError(f"Content-Encoding {encoding!r} is not supported: gzip or none", 415)


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
