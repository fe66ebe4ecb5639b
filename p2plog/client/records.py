"""Building records on the client, and cutting record lists into frames within the limits of
``p2plog.record`` (records and bytes per submit).

A record id is made once, when the record is built (or first submitted), and never again: a
retry sends the same id, so the cluster stores it once (dedup by id, ARCHITECTURE section 3).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cbor2

from p2plog.config import Config, load, split_address
from p2plog.record import LEVELS, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, uuid_text

FieldValue = str | int | float | bool
Record = dict[str, Any]
# Room for the submit envelope (kind, req, ack, list header) under the node's frame limit.
FRAME_OVERHEAD_BYTES = 64
DEFAULT_FRAME_BYTES = MAX_BATCH_BYTES - 4096
DEFAULT_FRAME_RECORDS = MAX_BATCH_RECORDS


def make_record(
    msg: str,
    *,
    level: str = "info",
    source: str = "",
    fields: Mapping[str, FieldValue] | None = None,
    ts: int | None = None,
) -> Record:
    """A record with a fresh uuid4 ``id`` and ``ts`` = now (ns since the epoch) unless given.

    Submitting the same dict twice stores it once: keep it to retry at the application level.
    """
    if level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {'|'.join(LEVELS)}")
    rec: Record = {
        "id": str(uuid.uuid4()),
        "ts": time.time_ns() if ts is None else ts,
        "level": level,
        "source": source,
        "msg": msg,
    }
    if fields:
        rec["fields"] = dict(fields)
    return rec


def ensure_id(rec: Record) -> None:
    """Give the record a uuid4 ``id`` in place if it has none (so a retry of the same dict
    reuses it)."""
    if rec.get("id") is None:
        rec["id"] = str(uuid.uuid4())


def id_text(rid: Any) -> str:
    """A record id as acks show it: 16 id bytes as UUID text (hex formatting: ``uuid.UUID``
    cost a few microseconds per record on the client's hot path), anything else as is."""
    if isinstance(rid, bytes) and len(rid) == 16:
        return uuid_text(rid)
    return str(rid)


class UnencodableRecord(ValueError):
    """The record holds a value CBOR cannot carry; it is refused before anything is sent."""


def encode_record(rec: Record) -> bytes:
    """The record's CBOR, made once: its size cuts frames and the bytes go into the frame
    as they are (``wire.envelope.RawList``), so no record is encoded twice."""
    try:
        return cbor2.dumps(rec)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as e:
        raise UnencodableRecord(
            f"cannot be encoded as CBOR ({e}); use text, numbers, bools and maps of them"
        ) from None


def frames(
    datas: Sequence[bytes],
    max_records: int = DEFAULT_FRAME_RECORDS,
    max_bytes: int = DEFAULT_FRAME_BYTES,
) -> Iterator[tuple[int, int]]:
    """Cut encoded records into consecutive frames; yields (start, end) offsets. A record
    bigger than ``max_bytes`` travels alone (the node will refuse it)."""
    start = 0
    size = FRAME_OVERHEAD_BYTES
    for i, data in enumerate(datas):
        n = len(data)
        if i > start and (i - start >= max_records or size + n > max_bytes):
            yield start, i
            start, size = i, FRAME_OVERHEAD_BYTES
        size += n
    if start < len(datas):
        yield start, len(datas)


def addresses_of(nodes: str | Path | Config | Sequence[str]) -> list[str]:
    """``host:port`` addresses from a Config, a peers.toml path, or a list of addresses
    (``host:port`` or ``ws://host:port/client``)."""
    if isinstance(nodes, Config):
        return [n.address for n in nodes.nodes]
    if isinstance(nodes, Path) or (isinstance(nodes, str) and nodes.endswith(".toml")):
        return [n.address for n in load(nodes).nodes]
    items = [nodes] if isinstance(nodes, str) else list(nodes)
    out = [normalize_address(a) for a in items]
    if not out:
        raise ValueError("no node addresses given; pass host:port strings or a peers.toml")
    return out


def normalize_address(address: str) -> str:
    a = address.removeprefix("wss://").removeprefix("ws://").removesuffix("/client").rstrip("/")
    split_address(a)
    return a
