"""Client protocol, spoken on ``ws://HOST:PORT/client`` (``wss://`` with ``[tls]``). A token, if
any, goes in the websocket handshake: ``Authorization: Bearer p2p_...``; a token the node does not
know is refused there (HTTP 401). Requests carry a client-chosen ``req`` integer that every reply
to them echoes; many requests may be in flight on one connection. Every request is decoded into
the typed message below (``decode_request``): one that breaks the protocol is answered
``error bad_request`` (when its ``req`` can be read) and its connection is closed (1008, reason).

Client -> node
- ``submit {req, ack: "quorum"|"leader", records: [record, ...], clock_offset_ns?, compact?}``;
  a record is the map described in ``p2plog.record`` (``id`` required). ``clock_offset_ns`` is the
  producer clock's offset to this node (node minus producer, from ``time`` probes); the node
  stores ``ts_corrected = ts + clock_offset_ns`` (its own corrected receive time when a record
  has no ``ts``). At most ``MAX_BATCH_RECORDS`` records and
  ``MAX_BATCH_BYTES`` bytes per submit.
- ``query {req, from_index?, to_index?, since?, until?, level?, source?, grep?, limit?, order?}``
  (``since``/``until`` in ns since the epoch, ``level`` = minimum level, ``source`` exact,
  ``grep`` substring of ``msg``, ``order`` "index" (default) or "event").
- ``tail {req, from_index?, level?, source?, grep?, order?}``: replay from ``from_index`` (default:
  only new records) then follow live. With ``order: "event"`` it follows the event-time ordered
  stream from now (records carry ``late``/``early``/``absurd`` flags; ``from_index`` does not
  apply). ``cancel {req}`` stops it.
- ``status {req}``.
- ``member {req, op: "list"|"add"|"promote"|"remove", node?, address?, learner?}`` (admin):
  answered by the leader (others answer ``not_leader``); a change once it committed:
  ``add`` without ``learner`` also waits for the new node to catch up and promotes it. A
  change already in effect is answered as done. Reply ``member {req, members: [...], index?,
  done}``; error ``refused`` says why a change cannot be made now.
- ``time {req, t1}``: clock offset probe (``t1`` = client send time, ns); the node answers with
  its NTP-corrected time, so the offset a client measures is to the cluster's clock.

Node -> client
- ``ack {req, acks: [{i, id, index, term, dup}], errors: [{i, error}]}``: ``i`` is the record's
  position in the submit. Records in ``errors`` were not stored; the rest were. A record's
  ``index`` is its number in the log (1, 2, 3, ...: dense, one per record, not a Raft index).
  With ``compact: true`` in the submit, fresh records come as ``runs: [[i, n, index, term]]``
  (records ``i .. i+n-1`` stored at ``index .. index+n-1``, in ``term``) and ``acks`` lists only
  the rest (duplicates): one small reply for a batch instead of a map per record.
  A duplicate whose original holds other content is not acked: it gets an error naming the
  index its id is stored at.
- ``error {req, code, msg, retry_after_ms?}``; codes: ``unavailable`` (no leader yet),
  ``overloaded``, ``disk_full``, ``storage_failed``, ``shutting_down``, ``timeout``,
  ``bad_request``, ``unauthorized`` (this needs a token), ``forbidden`` (the token's role may
  not). ``unavailable``, ``overloaded``, ``disk_full`` and ``timeout`` come with
  ``retry_after_ms``; nothing of the request was stored unless an ``ack`` said so, and a retry
  with the same record ids is stored once.
- ``batch {req, records: [record_json, ...], next_index, done}``: query results (``done`` true
  on the last page; pass ``next_index`` as ``from_index`` to continue; a page holds at most
  ``limit`` records and about 1 MiB) or tail records.
- ``end {req, code, msg, resume_index}``: a tail ended (e.g. ``behind``: the reader fell too far
  behind; reconnect with ``from_index = resume_index``).
- ``status {req, node: {...}}``, ``time {req, t1, t2, t3}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from p2plog.record import MAX_BATCH_RECORDS, MAX_CLOCK_OFFSET_NS
from p2plog.wire.envelope import kinds, typed

RETRY_AFTER_MS = 100  # sent with every retryable error: when a client should try again

MAX_CLIENT_FRAME = 2 << 20
MAX_SELECTOR_CHARS = 4096
MAX_FIELD_FILTERS = 16
ErrorCode = Literal[
    "unavailable",
    "overloaded",
    "disk_full",
    "storage_failed",
    "shutting_down",
    "timeout",
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_leader",
    "refused",
]


def add_to_runs(runs: list[list[int]], i: int, index: int, term: int, n: int = 1) -> None:
    """Record that submitted records ``i .. i + n - 1`` were stored fresh at ``index ..`` in
    ``term``: extends the last run ``[i0, n0, index0, term]`` when they continue it, else
    starts a new one. The compact form of acks, for clients (``compact: true``) and for
    forwards alike."""
    r = runs[-1] if runs else None
    if r and r[0] + r[1] == i and r[2] + r[1] == index and r[3] == term:
        r[1] += n
    else:
        runs.append([i, n, index, term])


# ---------------------------------------------------------------- requests, typed

Req = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
Nat = Annotated[int, msgspec.Meta(ge=0, le=(1 << 62))]
I64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
Level = Literal["debug", "info", "warning", "error", "critical"]
Order = Literal["index", "event"]
Text = Annotated[str, msgspec.Meta(max_length=MAX_SELECTOR_CHARS)]


class Request(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind", kw_only=True
):
    v: Literal[1]
    req: Req


class Submit(Request, tag="submit", frozen=True):
    records: Annotated[list[Any], msgspec.Meta(max_length=MAX_BATCH_RECORDS)]
    ack: Literal["quorum", "leader"] = "quorum"
    clock_offset_ns: Annotated[
        int, msgspec.Meta(ge=-MAX_CLOCK_OFFSET_NS, le=MAX_CLOCK_OFFSET_NS)
    ] = 0
    compact: bool = False


class Select(Request, frozen=True):
    """What ``query`` and ``tail`` select (see ``state.scans.Filter``)."""

    from_index: Nat | None = None
    to_index: Nat | None = None
    since: I64 | None = None
    until: I64 | None = None
    level: Level | None = None
    source: Text | None = None
    grep: Text | None = None
    # (key, value as text) pairs a record's fields must all hold (``state.scans.field_text``)
    fields: Annotated[
        tuple[tuple[Text, Text], ...], msgspec.Meta(max_length=MAX_FIELD_FILTERS)
    ] = ()
    order: Order = "index"


class Query(Select, tag="query", frozen=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=(1 << 62))] = 1000  # the node caps a page


class Tail(Select, tag="tail", frozen=True):
    pass


class Cancel(Request, tag="cancel", frozen=True):
    pass


class Status(Request, tag="status", frozen=True):
    pass


class Time(Request, tag="time", frozen=True):
    t1: I64


class Member(Request, tag="member", frozen=True):
    """Membership (admin role): ``list``, or a change the leader makes (``raft.membership``)."""

    op: Literal["list", "add", "promote", "remove"]
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    address: Annotated[str, msgspec.Meta(min_length=3, max_length=256)] | None = None
    learner: bool = False  # add: stay a learner (else: promoted once it caught up)

    def __post_init__(self) -> None:
        if self.op != "list" and self.node is None:
            raise ValueError(f"member {self.op} needs a node id")
        if self.op == "add" and self.address is None:
            raise ValueError("member add needs the new node's address (host:port)")


ClientRequest = Submit | Query | Tail | Cancel | Status | Time | Member
_BY_KIND: dict[str, type[ClientRequest]] = kinds(ClientRequest)


def decode_request(raw: dict[str, Any]) -> ClientRequest:
    """A client frame's map (envelope checked) as a typed request; ``ProtocolError`` naming
    the kind and the field otherwise."""
    return typed(raw, _BY_KIND)


def request_id(raw: dict[str, Any]) -> int | None:
    """The frame's ``req`` if it is a usable request id (to answer even a malformed request)."""
    req = raw.get("req")
    if type(req) is int and 0 <= req < 1 << 63:
        return req
    return None
