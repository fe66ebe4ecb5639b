"""Loki's push API (``POST /loki/api/v1/push``) into p2plog records.

Bodies: JSON (``application/json``, optionally gzip) ``{"streams": [{"stream": {labels},
"values": [["<ns>", "<line>", {structured metadata}?], ...]}]}``, or Loki's ``PushRequest``
protobuf, snappy-compressed (``application/x-protobuf``: what Promtail, Alloy and the Docker
driver send). The mapping:

- the stream's labels and the entry's structured metadata (which wins on a clash) -> ``fields``;
- ``source`` <- the first of the labels ``source``, ``service_name``, ``service``, ``app``,
  ``job``, ``container`` (Loki's own ``service_name`` discovery looks at much the same names);
  a ``source`` label is not repeated in the fields;
- ``level`` <- ``level``, ``detected_level``, ``severity`` or ``lvl`` (metadata first), by
  name (``warn`` is warning, ``fatal`` critical, ``trace`` debug); the label that gave the
  level is not repeated in the fields; none: info;
- the line -> ``msg``, its time -> ``ts``; the id hashes all of that (``common.Ids``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf.message import DecodeError

from p2plog.compat import protos
from p2plog.compat.common import (
    MAX_PUSH_RECORDS,
    Ids,
    IngestError,
    count_fields,
    level_named,
    too_many,
    unsnappy,
)
from p2plog.compat.logql import LogQLError, labels_of_selector
from p2plog.compat.otlp import Converted

SOURCE_LABELS = ("source", "service_name", "service", "app", "job", "container")
LEVEL_LABELS = ("level", "detected_level", "severity", "lvl")
MAX_TS = (1 << 63) - 1


def entries(body: bytes, content_type: str | None) -> list[Converted]:
    """Every entry of a push body, in order (``IngestError`` when the body is not one)."""
    ct = (content_type or "application/json").split(";")[0].strip().lower()
    ids = Ids("loki", body)
    labels = _Labels()
    if ct == "application/json":
        return [_convert(labels(lb), v, ids) for lb, v in _json_streams(body)]
    if ct in ("application/x-protobuf", "application/protobuf"):
        return [_convert(labels(lb), v, ids) for lb, v in _proto_streams(body)]
    raise IngestError(
        f"Content-Type {ct!r}: Loki push takes application/json or snappy application/x-protobuf",
        415,
    )


Entry = tuple[Any, Any, Any]  # (ns as text or int, line, metadata map or None)


def _json_streams(body: bytes) -> Iterator[tuple[Any, Entry]]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise IngestError(f"the body is not JSON: {str(e)[:120]}") from None
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if not isinstance(streams, list):
        raise IngestError('a Loki push body is {"streams": [{"stream": {...}, "values": [...]}]}')
    n = sum(
        len(v) for s in streams if isinstance(s, dict) and isinstance(v := s.get("values"), list)
    )
    if n > MAX_PUSH_RECORDS:
        raise too_many(n)
    for s in streams:
        labels = s.get("stream", {}) if isinstance(s, dict) else None
        values = s.get("values", []) if isinstance(s, dict) else None
        if not isinstance(values, list):
            raise IngestError("a stream's values must be a list of [ns, line] pairs")
        for v in values:
            if isinstance(v, list) and len(v) in (2, 3):
                yield labels, (v[0], v[1], v[2] if len(v) == 3 else None)
            else:
                yield labels, (None, None, None)


def _proto_streams(body: bytes) -> Iterator[tuple[Any, Entry]]:
    raw = unsnappy(body)
    count_fields(raw, (1, 2))  # streams > entries
    try:
        req = protos.PushRequest.FromString(raw)
    except DecodeError as e:
        raise IngestError(f"the body is not a snappy Loki PushRequest: {e}") from None
    for s in req.streams:
        for ent in s.entries:
            ns = ent.timestamp.seconds * 1_000_000_000 + ent.timestamp.nanos
            meta = {p.name: p.value for p in ent.structuredMetadata}
            yield s.labels, (ns, ent.line, meta)


class _Labels:
    """A stream's labels, checked (a protobuf stream's labels string parsed) once per
    stream, not once per entry: a map, or why the stream's entries are refused."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, str] | str] = {}
        self._last: tuple[Any, dict[str, str] | str] | None = None

    def __call__(self, labels: Any) -> dict[str, str] | str:
        if self._last is not None and self._last[0] is labels:
            return self._last[1]
        if isinstance(labels, str):
            got = self._seen.get(labels)
            if got is None:
                got = self._seen[labels] = _parse_labels(labels)
        elif isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()):
            got = labels
        else:
            got = "a stream's labels must be a map of text to text"
        self._last = (labels, got)
        return got


def _parse_labels(text: str) -> dict[str, str] | str:
    try:
        return labels_of_selector(text)
    except LogQLError as e:
        return f"stream labels {text[:80]!r}: {e}"


def _convert(lbl: dict[str, str] | str, entry: Entry, ids: Ids) -> Converted:
    ns, line, meta = entry
    if isinstance(lbl, str):
        return Converted(None, lbl)
    if ns is None or not isinstance(line, str):
        return Converted(None, 'an entry must be ["<ns since the epoch>", "<line>"]')
    t = _ns(ns)
    if t is None:
        return Converted(None, f"time {str(ns)[:40]!r} is not nanoseconds since the epoch")
    meta = meta or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        return Converted(None, "structured metadata must be a map of text to text")
    if not _utf8(line, *lbl, *lbl.values(), *meta, *meta.values()):
        return Converted(None, "the entry holds text that is not UTF-8 (a lone surrogate?)")
    level, level_key = _level(meta, lbl)
    fields = {k: v for k, v in lbl.items() if k != "source"}
    fields.update(meta)
    if level_key is not None:
        fields.pop(level_key, None)
    rec: dict[str, Any] = {
        "ts": t,
        "level": level,
        "source": next((lbl[k] for k in SOURCE_LABELS if lbl.get(k)), ""),
        "msg": line,
        "fields": fields,
    }
    rec["id"] = ids.content_id(rec)
    return Converted(rec)


def _utf8(*texts: str) -> bool:
    """Can every text be stored (JSON lets a sender write a lone surrogate, ``"\\ud800"``)?"""
    try:
        for t in texts:
            t.encode()
    except UnicodeEncodeError:
        return False
    return True


def _ns(v: Any) -> int | None:
    if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 19:
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_TS:
        return v
    return None


def _level(meta: Mapping[str, str], labels: Mapping[str, str]) -> tuple[str, str | None]:
    for where in (meta, labels):
        for k in LEVEL_LABELS:
            if k in where:
                lv = level_named(where[k])
                if lv is not None:
                    return lv, k
    return "info", None
