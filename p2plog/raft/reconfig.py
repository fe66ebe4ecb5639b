"""Membership changes as the node lives them (``membership.py`` says why they are safe):
which configuration is in force, who a node takes messages from, who may campaign, and what a
leader does when a change adds, promotes or removes a member (itself too). Plain functions
over the node, like ``leader.py`` and ``follower.py``.
"""

from __future__ import annotations

import logging

from p2plog.raft.leader import append_entries, is_active, maybe_commit
from p2plog.raft.membership import (
    PROMOTE_MAX_LAG,
    ConfChange,
    ConfChangeRefused,
    ConfOp,
    apply_change,
    encode_conf,
)
from p2plog.raft.messages import (
    AppendEntries,
    Heartbeat,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from p2plog.raft.participant import Participant
from p2plog.raft.progress import Progress
from p2plog.raft.quorum import quorum_size
from p2plog.raft.types import ConfState, Entry, Index, Role

log = logging.getLogger("p2plog.raft")

LEADER_KINDS = (AppendEntries, Heartbeat, TimeoutNow, InstallSnapshot)


def propose(node: Participant, change: ConfChange) -> Index:
    """Append the configuration ``change`` makes; ``ConfChangeRefused`` says why not now."""
    why = conf_change_problem(node, change)
    if why:
        raise ConfChangeRefused(why)
    index = Index(node.log.last_index() + 1)
    append_entries(node, [Entry(node.term, index, encode_conf(apply_change(node.conf, change)))])
    follow(node)
    return index


def set_conf(node: Participant, conf: ConfState) -> None:
    node.conf = conf
    node.voters = conf.voters
    node.peers = tuple(m for m in conf.members() if m != node.id)
    node.quorum = quorum_size(len(conf.voters))


def follow(node: Participant) -> None:
    """After anything that appends or truncates: follow the newest configuration in the log
    (rule 1 in ``membership.py``); a leader removed by a committed change steps down."""
    conf = node.log.confs.current()
    if conf is not node.conf and conf != node.conf:  # (identity first: this runs per step)
        log.info("%s term=%d: configuration %s", node.id, node.term, conf)
        set_conf(node, conf)
        if node.role is Role.LEADER:
            conf_changed(node)
        elif node.role is not Role.FOLLOWER and node.id not in node.voters:
            node.become_follower(node.term, None)
    removed = node.role is Role.LEADER and node.id not in node.voters
    if removed and node.log.committed >= node.log.confs.last_index():
        step_down_removed(node)


def may_campaign(node: Participant) -> bool:
    """A voter may, and so may a node whose removal has not committed as far as it knows: it
    may hold entries the others lack (its own removal, appended as leader before a crash)
    and, with a vote the remaining voters need, no one else could win. It counts votes by its
    newest configuration, which need not include itself (thesis §4.2.2)."""
    lg = node.log
    return node.id in node.voters or node.id in lg.confs.at(lg.committed).voters


def accepts(node: Participant, m: Message) -> bool:
    """Votes count only from voters of this node's configuration, and a campaign is heard
    from them (a removed server must not disrupt the cluster, thesis §4.2.3); answers only from
    members the leader tracks. A leader's messages are taken from anyone: a new member hears
    from the leader before its own log names it, and a leader's term is checked."""
    if isinstance(m, RequestVote):
        # ... or from a candidate whose log is at least as up to date as this node's: a
        # node that has not caught up yet does not know every voter, and its vote may be the
        # one a candidate needs. A removed node stops receiving entries, so it falls behind
        # at once and is ignored before it can bump anybody's term.
        return m.src in node.voters or node.log.is_up_to_date(m.last_index, m.last_term)
    if isinstance(m, RequestVoteResponse):
        return m.src in node.voters
    if isinstance(m, LEADER_KINDS):
        return True
    return m.src in node.peers


def conf_change_problem(node: Participant, ch: ConfChange) -> str | None:
    """Why this leader may not propose ``ch`` now (``membership.py``'s rules), or None."""
    lg = node.log
    if node.role is not Role.LEADER:
        return f"{node.id} is not the leader (the leader is {node.leader or 'unknown'}): ask it"
    if node.lead_transferee is not None:
        return f"leadership is moving to {node.lead_transferee}: try again in a moment"
    if lg.term(lg.committed) != node.term:
        return "the new leader has not yet committed an entry of its term: try again in a moment"
    pending = lg.confs.last_index()
    if pending > lg.committed:
        return f"the change at index {pending} has not committed yet: one change at a time"
    try:
        apply_change(node.conf, ch)
    except ConfChangeRefused as e:
        return str(e)
    if ch.op is ConfOp.PROMOTE:
        pr = node.progress[ch.node]
        if pr.match + PROMOTE_MAX_LAG < lg.committed or not is_active(node, ch.node):
            return (
                f"{ch.node} has not caught up (it holds up to index {pr.match}, the cluster has "
                f"committed {lg.committed}): wait until `member list` shows it caught up"
            )
    return None


def conf_changed(node: Participant) -> None:
    """The leader's configuration changed: track new members (they count as active for an
    election timeout, as every member does when a leader starts) and forget removed ones."""
    members = {node.id, *node.peers}
    for m in members - node.progress.keys():
        pr = Progress(Index(node.log.last_index() + 1))
        pr.last_active = node.leader_ticks
        node.progress[m] = pr
    for m in node.progress.keys() - members:
        del node.progress[m]
    if node.lead_transferee is not None and node.lead_transferee not in node.voters:
        node.lead_transferee = None
    node.bcast_pending = True
    maybe_commit(node)


def step_down_removed(node: Participant) -> None:
    """The change that removed this leader committed: hand leadership to the voter that holds
    the most (at once, with TimeoutNow, when it holds everything) and step down, so the
    cluster does not wait an election timeout for a leader (thesis §4.2.2)."""
    best = max(node.voters, key=lambda v: (node.progress[v].match, v))
    if node.progress[best].match == node.log.last_index():
        node.send(TimeoutNow(node.id, best, node.term))
    node.become_follower(node.term, None)
