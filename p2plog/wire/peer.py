"""Peer protocol: Raft messages, ``hello``, and the follower-to-leader ``forward``.

Kinds: ``hello {cluster, node, to}`` opens a link; ``rv``/``rvr``/``ae``/``aer``/``hb``/
``hbr``/``tn`` are the Raft messages; ``fwd {fid, ack, ids, bodies}`` carries records a
follower accepted to the leader (``ids``: their 16-byte ids concatenated); ``fwda {fid, runs,
acks | code, msg, retry_after_ms}`` returns the outcome (see ``encode_forward_acks``);
``ci {rid}`` asks the leader for its commit index before a follower read and ``cia {rid, c}``
answers (``c`` null from a node that is not leading); ``tp``/``tpr`` are clock probes.
Links are one-way: each node sends on the connection it dialed.
"""

from __future__ import annotations

from typing import Any

from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from p2plog.raft.types import Entry, Index, NodeId, Term
from p2plog.wire.client import add_to_runs
from p2plog.wire.envelope import (
    ProtocolError,
    encode,
    get_bool,
    get_bytes,
    get_int,
    get_list,
    get_str,
)

MAX_PEER_FRAME = 64 << 20
MAX_ENTRIES = 1 << 20
RAFT_KINDS = ("rv", "rvr", "ae", "aer", "hb", "hbr", "tn")


def encode_raft(m: Message) -> bytes:
    base: dict[str, Any] = {"src": m.src, "dst": m.dst, "term": m.term}
    if isinstance(m, AppendEntries):
        base.update(
            pi=m.prev_index,
            pt=m.prev_term,
            c=m.commit,
            e=[[e.term, e.index, e.data] for e in m.entries],
        )
        return encode("ae", base)
    if isinstance(m, AppendEntriesResponse):
        base.update(ok=m.success, i=m.index, hi=m.hint_index, ht=m.hint_term)
        return encode("aer", base)
    if isinstance(m, Heartbeat):
        base["c"] = m.commit
        return encode("hb", base)
    if isinstance(m, HeartbeatResponse):
        return encode("hbr", base)
    if isinstance(m, RequestVote):
        base.update(li=m.last_index, lt=m.last_term, pre=m.pre_vote, tr=m.transfer)
        return encode("rv", base)
    if isinstance(m, RequestVoteResponse):
        base.update(ok=m.granted, pre=m.pre_vote)
        return encode("rvr", base)
    return encode("tn", base)


def decode_raft(msg: dict[str, Any]) -> Message:
    kind = msg["kind"]
    src, dst = NodeId(get_str(msg, "src")), NodeId(get_str(msg, "dst"))
    term = Term(_nat(msg, "term"))
    if kind == "ae":
        entries = tuple(_entry(e) for e in get_list(msg, "e", MAX_ENTRIES))
        return AppendEntries(
            src,
            dst,
            term,
            Index(_nat(msg, "pi")),
            Term(_nat(msg, "pt")),
            entries,
            Index(_nat(msg, "c")),
        )
    if kind == "aer":
        return AppendEntriesResponse(
            src,
            dst,
            term,
            get_bool(msg, "ok"),
            Index(_nat(msg, "i")),
            Index(_nat(msg, "hi")),
            Term(_nat(msg, "ht")),
        )
    if kind == "hb":
        return Heartbeat(src, dst, term, Index(_nat(msg, "c")))
    if kind == "hbr":
        return HeartbeatResponse(src, dst, term)
    if kind == "rv":
        return RequestVote(
            src,
            dst,
            term,
            Index(_nat(msg, "li")),
            Term(_nat(msg, "lt")),
            get_bool(msg, "pre"),
            get_bool(msg, "tr"),
        )
    if kind == "rvr":
        return RequestVoteResponse(src, dst, term, get_bool(msg, "ok"), get_bool(msg, "pre"))
    if kind == "tn":
        return TimeoutNow(src, dst, term)
    raise ProtocolError(f"unknown peer message kind {kind!r}")


def _nat(msg: dict[str, Any], key: str) -> int:
    v = get_int(msg, key)
    if v < 0:
        raise ProtocolError(f"{msg['kind']}: field {key!r} must not be negative")
    return v


def _entry(raw: Any) -> Entry:
    if (
        not isinstance(raw, list)
        or len(raw) != 3
        or type(raw[0]) is not int
        or type(raw[1]) is not int
        or not isinstance(raw[2], bytes)
        or raw[0] < 0
        or raw[1] < 1
    ):
        raise ProtocolError("ae: each entry must be [term, index, bytes]")
    return Entry(Term(raw[0]), Index(raw[1]), raw[2])


def encode_hello(cluster: str, node: str, to: str) -> bytes:
    return encode("hello", {"cluster": cluster, "node": node, "to": to})


def encode_forward(fid: int, ack: str, recs: list[tuple[bytes, bytes]]) -> bytes:
    ids = b"".join([rid for rid, _ in recs])
    return encode("fwd", {"fid": fid, "ack": ack, "ids": ids, "bodies": [b for _, b in recs]})


def decode_forward(msg: dict[str, Any]) -> tuple[int, str, list[tuple[bytes, bytes]]]:
    ack = get_str(msg, "ack")
    if ack not in ("quorum", "leader"):
        raise ProtocolError(f"fwd: ack must be quorum or leader, got {ack!r}")
    bodies = get_list(msg, "bodies", 100_000)
    ids = get_bytes(msg, "ids")
    if len(ids) != 16 * len(bodies) or not all(isinstance(b, bytes) for b in bodies):
        raise ProtocolError("fwd: ids must be 16 bytes per body, and bodies bytes")
    recs = [(ids[16 * k : 16 * k + 16], b) for k, b in enumerate(bodies)]
    return get_int(msg, "fid"), ack, recs


def encode_forward_acks(fid: int, acks: list[tuple[int, int, bool] | None]) -> bytes:
    """The leader's outcome per forwarded record, (index, term, dup) or None (not acked):
    runs of fresh records ``[i, n, index, term]`` and single ``[i, index, term, dup]``."""
    runs: list[list[int]] = []
    singles: list[list[Any]] = []
    for i, a in enumerate(acks):
        if a is None:
            continue
        index, term, dup = a
        if dup:
            singles.append([i, index, term, True])
        else:
            add_to_runs(runs, i, index, term)
    return encode("fwda", {"fid": fid, "runs": runs, "acks": singles})


def decode_forward_acks(msg: dict[str, Any], n: int) -> list[tuple[int, int, bool] | None]:
    out: list[tuple[int, int, bool] | None] = [None] * n
    try:
        for i0, k, index, term in get_list(msg, "runs", n):
            for j in range(k):
                out[i0 + j] = (index + j, term, False)
        for i, index, term, dup in get_list(msg, "acks", n):
            out[i] = (index, term, bool(dup))
    except (ValueError, TypeError, IndexError) as e:
        raise ProtocolError(f"fwda: malformed acks: {e}") from None
    return out


def forward_id(msg: dict[str, Any]) -> int:
    return get_int(msg, "fid")


__all__ = [
    "MAX_PEER_FRAME",
    "RAFT_KINDS",
    "decode_forward",
    "decode_forward_acks",
    "decode_raft",
    "encode_forward",
    "encode_forward_acks",
    "encode_hello",
    "encode_raft",
    "forward_id",
    "get_bytes",
]
