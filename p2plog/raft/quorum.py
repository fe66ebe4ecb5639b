"""Quorum arithmetic as pure functions (etcd's quorum package, majority configs only)."""

from __future__ import annotations

from collections.abc import Iterable

from p2plog.raft.types import Index


def quorum_size(voters: int) -> int:
    """Smallest majority of ``voters``."""
    return voters // 2 + 1


def committed_index(match_indexes: Iterable[int]) -> Index:
    """The highest index that a majority has persisted: the median of the sorted matches."""
    matches = sorted(match_indexes, reverse=True)
    return Index(matches[quorum_size(len(matches)) - 1])


def vote_result(votes: dict[str, bool], voters: int) -> bool | None:
    """True once a majority granted, False once a majority refused, None while undecided."""
    need = quorum_size(voters)
    granted = sum(1 for v in votes.values() if v)
    if granted >= need:
        return True
    if len(votes) - granted >= need:
        return False
    return None
