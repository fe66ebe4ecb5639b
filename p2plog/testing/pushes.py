"""Loki push bodies as a sender makes them, for tests and benchmarks (the node's side is
``compat.loki_push``)."""

from __future__ import annotations

import json

import cramjam

from p2plog.compat import protos


def loki_json(stream: dict[str, str], lines: list[tuple[int, str]]) -> bytes:
    """One stream's ``(ns, line)`` entries as a JSON push body."""
    values = [[str(t), s] for t, s in lines]
    return json.dumps({"streams": [{"stream": stream, "values": values}]}).encode()


def loki_proto(labels: str, lines: list[tuple[int, str, dict[str, str]]]) -> bytes:
    """One stream's ``(ns, line, structured metadata)`` entries as a snappy protobuf push
    body (what Promtail and Alloy send); ``labels`` as Loki writes them: ``{job="x"}``."""
    req = protos.PushRequest()
    s = req.streams.add(labels=labels)
    for t, line, meta in lines:
        e = s.entries.add(line=line)
        e.timestamp.seconds, e.timestamp.nanos = divmod(t, 10**9)
        for k, v in meta.items():
            e.structuredMetadata.add(name=k, value=v)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
