"""Peer protocol, spoken on ``/peer``: typed messages, every field checked at decode.

Links are one-way: each node sends on the connection it dialed. A link opens with a
challenge-response handshake (``p2plog.wire.peer_auth``): the acceptor sends ``challenge
{nonce}``, the dialer ``hello {node, to, nonce, proof}``, the acceptor ``welcome {proof}``; only
then does the dialer send. After that:

- ``rv``/``rvr``/``ae``/``aer``/``hb``/``hbr``/``tn``: the Raft messages;
- ``snap {i, st, off, total, data}``: one chunk of an InstallSnapshot (``wire.peer_snapshot``
  cuts a snapshot into chunks and puts them back together);
- ``fwd {fid, ack, ids, bodies}``: records a follower accepted, for the leader (``ids``: their
  16-byte ids concatenated); ``fwda {fid, runs, acks | code, msg, retry_after_ms}`` answers;
- ``ci {rid}``: a follower's read barrier asks the leader's commit index; ``cia {rid, c}``
  answers (``c`` null from a node that is not leading);
- ``tp {t1}`` / ``tpr {t1, t2, t3}``: clock probes.

``decode_peer`` turns a frame into one of the frozen Structs below or raises ``ProtocolError``:
types, ranges (terms and indexes fit the on-disk u64 fields with room to count up), lengths,
counts, unknown keys, trailing bytes, and the framing of every entry an AppendEntries carries
(contiguous indexes, terms that never go down, payloads shaped as the leader writes them,
``record.entry_problem``), so nothing reaches Raft or the disk that a node could not have sent.
Errors name the kind and the field, never echo a long value.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from p2plog.raft.membership import decode_conf
from p2plog.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from p2plog.raft.types import Entry, Index, NodeId, Term
from p2plog.record import MAX_BATCH_RECORDS, MAX_RECORD_BYTES
from p2plog.replica.snapshot import MAX_SNAPSHOT_BYTES
from p2plog.state.entry import entry_problem
from p2plog.wire.client import ErrorCode, add_to_runs
from p2plog.wire.envelope import ProtocolError, decode, encode, kinds, typed

# An AppendEntries carries at most RaftConfig.max_msg_bytes (1 MiB) of entries, but always at
# least one entry, and a batch entry can be ~1.3 MiB (records of 1 MiB of submits plus 20 bytes
# each of framing): 8 MiB leaves room for a change of those limits without a protocol change.
MAX_PEER_FRAME = 8 << 20
MAX_HANDSHAKE_FRAME = 1024
MAX_ENTRIES = 1 << 17
# Far above any term or index a cluster reaches (2**62 elections), far enough below 2**64 (the
# u64 fields of meta files and frames) that counting up from a peer's value never overflows.
MAX_TERM = MAX_INDEX = 1 << 62
NONCE_BYTES = 16
PROOF_BYTES = 32
RAFT_KINDS = ("rv", "rvr", "ae", "aer", "hb", "hbr", "tn", "snap")
SNAPSHOT_CHUNK = 1 << 20
MAX_SNAPSHOT = MAX_SNAPSHOT_BYTES  # a node's state: its dedup window and event-time buffer

Nat = Annotated[int, msgspec.Meta(ge=0, le=MAX_INDEX)]
Pos = Annotated[int, msgspec.Meta(ge=1, le=MAX_INDEX)]
I64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
ReqId = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
PeerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Nonce = Annotated[bytes, msgspec.Meta(min_length=NONCE_BYTES, max_length=NONCE_BYTES)]
Proof = Annotated[bytes, msgspec.Meta(min_length=PROOF_BYTES, max_length=PROOF_BYTES)]
Ack = Literal["quorum", "leader"]


class _Msg(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind", kw_only=True):
    v: Literal[1]


class Challenge(_Msg, tag="challenge", frozen=True):
    nonce: Nonce


class Hello(_Msg, tag="hello", frozen=True):
    node: PeerId
    to: PeerId
    nonce: Nonce
    proof: Proof
    # The dialer's data directory's incarnation (``runtime.incarnations``); "": not stated.
    inc: Annotated[str, msgspec.Meta(max_length=32)] = ""


class Welcome(_Msg, tag="welcome", frozen=True):
    proof: Proof


class _Raft(_Msg, frozen=True):
    src: PeerId
    dst: PeerId
    term: Nat


class RV(_Raft, tag="rv", frozen=True):
    li: Nat
    lt: Nat
    pre: bool
    tr: bool


class RVR(_Raft, tag="rvr", frozen=True):
    ok: bool
    pre: bool


class AE(_Raft, tag="ae", frozen=True):
    pi: Nat
    pt: Nat
    c: Nat
    e: Annotated[list[tuple[Nat, Pos, bytes]], msgspec.Meta(max_length=MAX_ENTRIES)]

    def __post_init__(self) -> None:
        last_term = self.pt
        for k, (term, index, data) in enumerate(self.e):
            if index != self.pi + 1 + k:
                raise ValueError(f"entry {k} has index {index}, expected {self.pi + 1 + k}")
            if not last_term <= term <= self.term:
                raise ValueError(
                    f"entry {index} has term {term}: terms must not go down in a log and "
                    f"not exceed the message's term {self.term}"
                )
            last_term = term
            problem = entry_problem(data)
            if problem is not None:
                raise ValueError(f"entry {index}: {problem}")


class AER(_Raft, tag="aer", frozen=True):
    ok: bool
    i: Nat
    hi: Nat
    ht: Nat


class HB(_Raft, tag="hb", frozen=True):
    c: Nat


class HBR(_Raft, tag="hbr", frozen=True):
    pass


class TN(_Raft, tag="tn", frozen=True):
    pass


MAX_CONF_BYTES = 64 << 10


class Snap(_Raft, tag="snap", frozen=True):
    """One chunk of the snapshot at index ``i`` (term ``st``): bytes ``off`` .. of ``total``."""

    i: Pos
    st: Nat
    off: Annotated[int, msgspec.Meta(ge=0, lt=MAX_SNAPSHOT)]
    total: Annotated[int, msgspec.Meta(ge=0, le=MAX_SNAPSHOT)]
    data: Annotated[bytes, msgspec.Meta(max_length=SNAPSHOT_CHUNK)]
    # The configuration at ``i`` (``membership.encode_conf``), on the first chunk; b"": the
    # bootstrap one.
    conf: Annotated[bytes, msgspec.Meta(max_length=MAX_CONF_BYTES)] = b""

    def __post_init__(self) -> None:
        if self.conf:
            decode_conf(self.conf)  # a ValueError closes the link, as any bad frame does
        if self.off + len(self.data) > self.total:
            raise ValueError(
                f"a chunk at {self.off} of {len(self.data)} bytes is past {self.total}"
            )
        if not self.data and self.total:
            raise ValueError("an empty chunk of a snapshot that is not empty")


class Fwd(_Msg, tag="fwd", frozen=True):
    fid: ReqId
    ack: Ack
    ids: bytes
    bodies: Annotated[list[bytes], msgspec.Meta(max_length=MAX_BATCH_RECORDS)]

    def __post_init__(self) -> None:
        if len(self.ids) != 16 * len(self.bodies):
            raise ValueError("ids must be 16 bytes per body")
        if any(len(b) > MAX_RECORD_BYTES for b in self.bodies):
            raise ValueError(f"a body is over the {MAX_RECORD_BYTES} byte record limit")

    def records(self) -> tuple[list[bytes], list[bytes]]:
        ids = self.ids
        return [ids[k : k + 16] for k in range(0, len(ids), 16)], list(self.bodies)


class Fwda(_Msg, tag="fwda", frozen=True):
    """The leader's answer to a ``fwd``: ``runs`` of fresh records ``[i, n, index, term]``
    and single acks ``[i, index, term, dup]``; or one error for the whole forward."""

    fid: ReqId
    runs: Annotated[
        list[tuple[Nat, Pos, Pos, Nat]], msgspec.Meta(max_length=MAX_BATCH_RECORDS)
    ] = []
    acks: Annotated[
        list[tuple[Nat, Pos, Nat, bool]], msgspec.Meta(max_length=MAX_BATCH_RECORDS)
    ] = []
    # [i, index]: record i's id is stored at index with other content, so it was not stored
    conflicts: Annotated[list[tuple[Nat, Pos]], msgspec.Meta(max_length=MAX_BATCH_RECORDS)] = []
    code: ErrorCode | None = None
    msg: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    retry_after_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] | None = None

    def outcomes(self, n: int) -> list[tuple[int, int, bool] | None]:
        """(index, term, dup) per forwarded record, or None (not acked); ``ProtocolError``
        when a position is outside the ``n`` records forwarded or answered twice (runs, acks
        and conflicts must not overlap). The work is bounded by ``n``."""
        out: list[tuple[int, int, bool] | None] = [None] * n
        for i0, k, index, term in self.runs:
            if i0 + k > n or any(out[i0 : i0 + k]):
                raise ProtocolError(f"fwda: run [{i0}, {k}] overlaps or is past {n} records")
            out[i0 : i0 + k] = [(index + j, term, False) for j in range(k)]
        for i, index, term, dup in self.acks:
            if i >= n or out[i] is not None:
                raise ProtocolError(f"fwda: ack of record {i} of {n} overlaps or is past them")
            out[i] = (index, term, dup)
        for i, _ in self.conflicts:
            if i >= n or out[i] is not None:
                raise ProtocolError(f"fwda: conflict {i} of {n} overlaps or is past them")
        return out


class Ci(_Msg, tag="ci", frozen=True):
    rid: ReqId


class Cia(_Msg, tag="cia", frozen=True):
    rid: ReqId
    c: Nat | None


class Tp(_Msg, tag="tp", frozen=True):
    t1: I64


class Tpr(_Msg, tag="tpr", frozen=True):
    t1: I64
    t2: I64
    t3: I64


class St(_Msg, tag="st", frozen=True):
    """The console asks a peer for its status (``sta`` answers)."""

    rid: ReqId


MAX_STATUS_BYTES = 256 << 10


class Sta(_Msg, tag="sta", frozen=True):
    rid: ReqId
    s: Annotated[bytes, msgspec.Meta(max_length=MAX_STATUS_BYTES)]  # its full status, JSON


RaftWire = RV | RVR | AE | AER | HB | HBR | TN
RAFT_TYPES = (RV, RVR, AE, AER, HB, HBR, TN)
PeerMessage = (
    Challenge | Hello | Welcome | RaftWire | Snap | Fwd | Fwda | Ci | Cia | Tp | Tpr | St | Sta
)
_BY_KIND: dict[str, type[PeerMessage]] = kinds(PeerMessage)


def decode_peer(data: bytes | str, max_bytes: int = MAX_PEER_FRAME) -> PeerMessage:
    """One peer frame as a typed message; ``ProtocolError`` (with the reason) otherwise."""
    return typed(decode(data, max_bytes), _BY_KIND)


def to_raft(m: RaftWire) -> Message:
    """The Raft core's message for a decoded wire message."""
    src, dst, term = NodeId(m.src), NodeId(m.dst), Term(m.term)
    if isinstance(m, AE):
        entries = tuple(Entry(Term(t), Index(i), d) for t, i, d in m.e)
        return AppendEntries(src, dst, term, Index(m.pi), Term(m.pt), entries, Index(m.c))
    if isinstance(m, AER):
        return AppendEntriesResponse(src, dst, term, m.ok, Index(m.i), Index(m.hi), Term(m.ht))
    if isinstance(m, HB):
        return Heartbeat(src, dst, term, Index(m.c))
    if isinstance(m, HBR):
        return HeartbeatResponse(src, dst, term)
    if isinstance(m, RV):
        return RequestVote(src, dst, term, Index(m.li), Term(m.lt), m.pre, m.tr)
    if isinstance(m, RVR):
        return RequestVoteResponse(src, dst, term, m.ok, m.pre)
    return TimeoutNow(src, dst, term)


def encode_raft(m: Message) -> bytes:
    """One frame for a Raft message (an InstallSnapshot: ``peer_snapshot.chunks``)."""
    assert not isinstance(m, InstallSnapshot), "snapshots go as chunks: peer_snapshot.chunks"
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


def encode_forward(fid: int, ack: str, ids: list[bytes], bodies: list[bytes]) -> bytes:
    return encode("fwd", {"fid": fid, "ack": ack, "ids": b"".join(ids), "bodies": bodies})


def encode_forward_acks(
    fid: int, acks: list[tuple[int, int, bool] | None], conflicts: dict[int, int] | None = None
) -> bytes:
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
    fields: dict[str, Any] = {"fid": fid, "runs": runs, "acks": singles}
    if conflicts:
        fields["conflicts"] = [[i, index] for i, index in sorted(conflicts.items())]
    return encode("fwda", fields)


def encode_forward_error(fid: int, code: str, msg: str, retry_after_ms: int) -> bytes:
    fields = {"fid": fid, "code": code, "msg": msg[:1000], "retry_after_ms": retry_after_ms}
    return encode("fwda", fields)
