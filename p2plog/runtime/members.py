"""Who this node links to, and the ``member`` commands: the runtime side of ``raft.membership``.

``peers.toml`` gives the bootstrap configuration (every ``[[node]]`` not marked ``join``); from
then on the log holds the live one, and every node follows it (``RaftLoop.on_conf`` calls
``follow`` before any message of a Ready leaves): a link to each member, with the address the
configuration gives, and none to a removed one. Inbound links are accepted from any member of
the live configuration or of the file (``__contains__``, the peer server's membership test).

A node whose id the configuration does not name is not a member yet (or was removed): it says
so in its log, with the command that adds it, and waits; it answers the leader once added.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable
from functools import partial

import trio

from p2plog.config import Config, NodeConfig, split_address
from p2plog.net.peer_link import LinkAuth, PeerLink
from p2plog.raft.membership import bootstrap_conf
from p2plog.raft.types import ConfState, NodeId
from p2plog.runtime.incarnations import Incarnations

log = logging.getLogger("p2plog.node")


class Members:
    def __init__(
        self,
        me: NodeConfig,
        config: Config,
        auth: LinkAuth,
        links: dict[NodeId, PeerLink],
        on_peer_ip: Callable[[str], None] = lambda ip: None,
        incarnations: Incarnations | None = None,
    ) -> None:
        """``links`` is the node's own map (what ``_send_raft`` looks a peer up in);
        ``on_peer_ip``: an IP address a new member connects from (the listener reserves
        room for peers by address)."""
        self.me = me
        self.config = config
        self.auth = auth
        self.links = links
        self.on_peer_ip = on_peer_ip
        self.incarnations = incarnations
        self.bootstrap = bootstrap_conf(
            config.bootstrap_voters(), {n.id: n.address for n in config.nodes}
        )
        self.conf = self.committed = self.bootstrap
        self._scopes: dict[NodeId, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._said_waiting = False

    def __contains__(self, nid: object) -> bool:
        return nid in self.config.by_id or nid in self.conf.members()

    def address_of(self, nid: str) -> str | None:
        got = self.conf.address_of(NodeId(nid)) or self.committed.address_of(NodeId(nid))
        if got:
            return got
        n = self.config.by_id.get(NodeId(nid))
        return n.address if n is not None else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Home of the peer links' tasks, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for nid, link in self.links.items():
                self._start(nid, link)
            task_status.started()
            await trio.sleep_forever()

    def follow(self, conf: ConfState, committed: ConfState) -> None:
        """The configuration in force (or the last committed one) changed, or is first known:
        link to the members of both. A member the pending change removes (the leader, say)
        still needs this node's answers to commit that change."""
        changed = conf != self.conf
        self.conf, self.committed = conf, committed
        members = dict.fromkeys((*committed.members(), *conf.members()))
        want = {m: self.address_of(m) for m in members if m != self.me.id}
        for nid in list(self.links):
            link = self.links[nid]
            if nid not in want or want[nid] != f"{link.host}:{link.port}":
                self._stop(nid)
        for nid, address in want.items():
            if nid not in self.links and address:
                self._add(nid, address)
        inc = self.incarnations
        if inc is not None and self._nursery is not None:
            gone = [p for p in inc.seen if p not in members]
            if inc.forget(gone):  # a removed node may come back as a new incarnation
                self._nursery.start_soon(partial(trio.to_thread.run_sync, inc.save))
        if changed:
            log.info(
                "%s: configuration: voters %s, learners %s",
                self.me.id,
                ", ".join(conf.voters),
                ", ".join(conf.learners) or "none",
            )
        self._say_if_waiting()

    def _say_if_waiting(self) -> None:
        if self.me.id in self.conf.members():
            self._said_waiting = False
            return
        if not self._said_waiting:
            log.warning(
                "%s: not a member of the cluster (voters %s): waiting to be added; run "
                "`p2plog member add %s %s` against any member",
                self.me.id,
                ", ".join(self.conf.voters),
                self.me.id,
                self.me.address,
            )
            self._said_waiting = True

    def _add(self, nid: NodeId, address: str) -> None:
        try:
            host, port = split_address(address)
        except ValueError:
            log.error("%s: member %s has an unusable address %r", self.me.id, nid, address)
            return
        link = self.links[nid] = PeerLink(self.me.id, nid, host, port, self.auth)
        with contextlib.suppress(ValueError):  # a host name: not resolved here (no DNS on
            self.on_peer_ip(str(ipaddress.ip_address(host)))  # the event loop)
        if self._nursery is not None:
            self._start(nid, link)

    def _start(self, nid: NodeId, link: PeerLink) -> None:
        assert self._nursery is not None
        scope = self._scopes[nid] = trio.CancelScope()

        async def run() -> None:
            with scope:
                async with trio.open_nursery() as n:
                    n.start_soon(link.run)
                    n.start_soon(link.feed_bulk)

        self._nursery.start_soon(run)

    def _stop(self, nid: NodeId) -> None:
        self.links.pop(nid, None)
        scope = self._scopes.pop(nid, None)
        if scope is not None:
            scope.cancel()
