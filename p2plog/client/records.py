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

from p2plog.config import Config, load
from p2plog.record import LEVELS, MAX_BATCH_BYTES, MAX_BATCH_RECORDS

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


def ensure_id(rec: Record) -> str:
    """The record's id as text, assigning a uuid4 in place if it has none (so a retry of the
    same dict reuses it)."""
    rid = rec.get("id")
    if rid is None:
        rid = rec["id"] = str(uuid.uuid4())
    if isinstance(rid, bytes) and len(rid) == 16:
        return str(uuid.UUID(bytes=rid))
    return str(rid)


def encoded_size(rec: Record) -> int:
    """Bytes the record adds to a submit frame (exact: CBOR of the map as sent)."""
    try:
        return len(cbor2.dumps(rec))
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return 0  # the node rejects it with a per-record error; it costs no frame room


def frames(
    records: Sequence[Record],
    max_records: int = DEFAULT_FRAME_RECORDS,
    max_bytes: int = DEFAULT_FRAME_BYTES,
) -> Iterator[tuple[int, list[Record]]]:
    """Cut ``records`` into consecutive frames; yields (offset of the frame's first record,
    frame). A record bigger than ``max_bytes`` travels alone (the node will refuse it)."""
    start = 0
    size = FRAME_OVERHEAD_BYTES
    for i, rec in enumerate(records):
        n = encoded_size(rec)
        if i > start and (i - start >= max_records or size + n > max_bytes):
            yield start, list(records[start:i])
            start, size = i, FRAME_OVERHEAD_BYTES
        size += n
    if start < len(records):
        yield start, list(records[start:])


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
    a = address.removeprefix("ws://").removesuffix("/client").rstrip("/")
    split_address(a)
    return a


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} is not host:port, e.g. 127.0.0.1:7001")
    return host.strip("[]"), int(port)
