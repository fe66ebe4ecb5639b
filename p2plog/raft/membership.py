"""Cluster membership: configurations as log entries, changed one server at a time.

Why single-server changes (Raft thesis §4.1) and not joint consensus (§4.3, etcd's
``ConfChangeV2``): every change an operator makes here is one server (add a learner, promote
it, remove one), and adding or removing a single voter keeps every majority of the old
configuration overlapping every majority of the new one, so no intermediate joint
configuration is needed and a quorum is always a plain majority of one voter set. Joint
consensus buys atomic multi-server changes, which no command here offers.

The rules that make it safe, each enforced by ``RaftNode.propose_conf_change``:

1. **A configuration takes effect when it is appended, not when it commits** (§4.1): every node
   uses the latest configuration in its log, committed or not, and falls back to the previous
   one when a conflicting suffix truncates it (``ConfLog``). This is what keeps two leaders of
   one term from counting different majorities.
2. **One change at a time**: a leader proposes a change only once the previous one committed.
3. **A leader first commits an entry of its own term** (Ongaro's fix, raft-dev 2015, "bug in
   single-server membership changes"): without it, a new leader could append a change while an
   uncommitted change of an earlier leader still exists elsewhere, and the two sequences of
   single-server changes can yield disjoint majorities.

**Learners** receive the log but do not vote and do not count toward any quorum (etcd's
learners, thesis §4.2.1's non-voting members): a new server catches up as a learner, and is
promoted only when it holds what is committed, so adding a voter never stalls commits.
**Removing the leader**: it keeps leading until the entry that removes it commits (it does not
count itself meanwhile, §4.2.2), then hands leadership to the most caught-up voter
(``TimeoutNow``) and steps down. The configuration at a snapshot's index travels in the
snapshot (``Snapshot.conf``).

The entry payload is ``0x04`` followed by the configuration as UTF-8 JSON (stdlib, and rare
enough that its size does not matter). Member addresses ride along, opaque to the core: every
node learns where to reach a new member from the log itself.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass

from p2plog.raft.types import ConfState, Entry, Index, NodeId

KIND_CONF = 0x04
MAX_MEMBERS = 64
MAX_ID_LEN = 64
MAX_ADDRESS_LEN = 256
# A learner is caught up (may be promoted) when it holds all but at most this many committed
# entries and answered within an election timeout: under steady writes some entries are
# always in flight to it, so "holds everything committed" may never be seen (etcd asks 90%
# of the leader's index; a fixed gap does not loosen as the log grows).
PROMOTE_MAX_LAG = 128


class ConfChangeRefused(ValueError):
    """A membership change this node cannot make now; the message says why and what to do."""


class ConfOp(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    op: ConfOp
    node: NodeId
    address: str = ""  # for ADD_LEARNER: where the members reach it


def bootstrap_conf(
    voters: Sequence[NodeId], addresses: dict[NodeId, str] | None = None
) -> ConfState:
    """The configuration before any change is in the log (``peers.toml``'s nodes)."""
    addrs = addresses or {}
    return ConfState(
        tuple(sorted(voters)), (), tuple(sorted((v, addrs.get(v, "")) for v in voters))
    )


def apply_change(conf: ConfState, ch: ConfChange) -> ConfState:
    """The configuration after ``ch``; ``ConfChangeRefused`` when it does not apply to ``conf``."""
    voters, learners = set(conf.voters), set(conf.learners)
    addrs = dict(conf.addresses)
    n = ch.node
    if ch.op is ConfOp.ADD_LEARNER:
        if n in voters or n in learners:
            raise ConfChangeRefused(
                f"{n} is already a member; to re-add a host that lost its data, remove {n} "
                f"first and add it again (or add it under a new id)"
            )
        _check_member(n, ch.address)
        if len(voters) + len(learners) >= MAX_MEMBERS:
            raise ConfChangeRefused(f"the cluster already has {MAX_MEMBERS} members")
        learners.add(n)
        addrs[n] = ch.address
    elif ch.op is ConfOp.PROMOTE:
        if n not in learners:
            raise ConfChangeRefused(f"{n} is not a learner (add it with `member add {n} ADDR`)")
        learners.discard(n)
        voters.add(n)
    else:
        if n not in voters and n not in learners:
            raise ConfChangeRefused(f"{n} is not a member")
        if voters == {n}:
            raise ConfChangeRefused(f"{n} is the only voter: promote another member first")
        voters.discard(n)
        learners.discard(n)
        addrs.pop(n, None)
    return ConfState(tuple(sorted(voters)), tuple(sorted(learners)), tuple(sorted(addrs.items())))


def _check_member(n: str, address: str) -> None:
    if not n or len(n) > MAX_ID_LEN or not n.isprintable() or n != n.strip():
        raise ConfChangeRefused(f"bad node id {n!r}: 1 to {MAX_ID_LEN} printable characters")
    if len(address) > MAX_ADDRESS_LEN or not address.isprintable():
        raise ConfChangeRefused(f"bad address {address!r} for {n}")


def encode_conf(conf: ConfState) -> bytes:
    d: dict[str, object] = {"voters": list(conf.voters), "learners": list(conf.learners)}
    d["addresses"] = dict(conf.addresses)
    return bytes([KIND_CONF]) + json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def is_conf(data: bytes) -> bool:
    return data[:1] == b"\x04"


def decode_conf(data: bytes) -> ConfState:
    """Parse a configuration entry's payload; ``ValueError`` names what is wrong (an entry from
    a peer is checked with this before it is appended)."""
    if not is_conf(data):
        raise ValueError("not a configuration entry")
    try:
        d = json.loads(data[1:])
        voters, learners, addrs = d["voters"], d["learners"], d["addresses"]
        ok = isinstance(voters, list) and isinstance(learners, list) and isinstance(addrs, dict)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"a malformed configuration entry: {e}") from e
    if not ok or not all(isinstance(x, str) for x in [*voters, *learners, *addrs.values()]):
        raise ValueError("a malformed configuration entry: lists and strings expected")
    members = [*voters, *learners]
    if not voters or len(set(members)) != len(members) or len(members) > MAX_MEMBERS:
        raise ValueError("a configuration with no voter, a member twice, or too many members")
    if set(addrs) != set(members):
        raise ValueError("a configuration whose addresses do not name its members")
    for m in members:
        _check_member(m, addrs[m])
    return ConfState(
        tuple(NodeId(v) for v in sorted(voters)),
        tuple(NodeId(v) for v in sorted(learners)),
        tuple(sorted((NodeId(k), str(v)) for k, v in addrs.items())),
    )


class ConfLog:
    """The configuration entries of a log past its snapshot, and the one in force (the latest,
    committed or not: rule 1 of the module docstring)."""

    __slots__ = ("base", "entries")

    def __init__(self, base: ConfState, entries: Sequence[Entry] = ()) -> None:
        self.base = base  # the snapshot's configuration, or the bootstrap one
        self.entries: list[tuple[Index, ConfState]] = []
        self.appended(entries)

    def current(self) -> ConfState:
        return self.entries[-1][1] if self.entries else self.base

    def last_index(self) -> Index:
        """Index of the newest configuration entry (0: none past the snapshot)."""
        return self.entries[-1][0] if self.entries else Index(0)

    def at(self, index: Index) -> ConfState:
        """The configuration in force at ``index`` (for a snapshot taken there)."""
        conf = self.base
        for i, c in self.entries:
            if i > index:
                break
            conf = c
        return conf

    def appended(self, entries: Sequence[Entry]) -> None:
        """``entries`` were appended (after truncating from ``entries[0].index`` if needed)."""
        if not entries:
            return
        self.truncated_from(entries[0].index)
        for e in entries:
            if is_conf(e.data):
                self.entries.append((e.index, decode_conf(e.data)))

    def truncated_from(self, index: Index) -> None:
        while self.entries and self.entries[-1][0] >= index:
            self.entries.pop()

    def restored(self, conf: ConfState) -> None:
        """The log was replaced by a snapshot whose configuration is ``conf``."""
        self.base = conf
        self.entries = []
