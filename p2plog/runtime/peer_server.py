"""One inbound peer link: the membership handshake, then every message a peer may send.

The acceptor side of ``p2plog.wire.peer_auth``: send a challenge, check the hello's proof
(and that it names a member other than this node, dialing this node), answer with a welcome;
only then may the link carry more than a handshake frame (``set_message_limit``). A stranger
is told "authentication failed" and nothing else (no cluster name, no member ids); the reason
goes to this node's log with the remote address.

After the handshake each frame is a typed message (``wire.peer.decode_peer``): Raft messages go
to the Raft loop, everything else to ``peer_rpc.PeerRpc``. A Raft message must come from the
authenticated peer and be addressed to this node; replies (``fwda``, ``cia``) are accepted only
from the peer the request went to. Whatever the peer does (close,
send garbage, stall), only this connection ends: ``ProtocolError`` closes it with 1008 and a
reason, and forward tasks handle their own errors.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Container

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from p2plog.net.peer_link import LinkAuth
from p2plog.net.server import remote_of, set_message_limit
from p2plog.raft.messages import Message
from p2plog.raft.types import NodeId
from p2plog.ratelog import RateLimitedLog
from p2plog.runtime.incarnations import Incarnations
from p2plog.runtime.peer_rpc import PeerRpc
from p2plog.wire.envelope import ProtocolError, encode
from p2plog.wire.peer import (
    MAX_HANDSHAKE_FRAME,
    MAX_PEER_FRAME,
    NONCE_BYTES,
    RAFT_TYPES,
    Ci,
    Cia,
    Fwd,
    Fwda,
    Hello,
    PeerMessage,
    Snap,
    St,
    Sta,
    Tp,
    Tpr,
    decode_peer,
    to_raft,
)
from p2plog.wire.peer_auth import hello_proof, same, welcome_proof
from p2plog.wire.peer_snapshot import Assembly

log = logging.getLogger("p2plog.node")
_refusals = RateLimitedLog(log, interval_s=10.0)

HELLO_TIMEOUT_S = 2.0  # one round trip: a stranger holds a handshake slot no longer
AUTH_FAILED = "authentication failed"


class Rejected(Exception):
    """An authenticated member that may not link now; ``reason`` is told to it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Refused(Exception):
    """The hello did not authenticate; ``detail`` is for this node's log only."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class PeerServer:
    """The inbound side of this node's peer links: ``serve`` is the listener's ``/peer``."""

    def __init__(
        self,
        me: NodeId,
        members: Container[str],
        auth: LinkAuth,
        rpc: PeerRpc,
        deliver: Callable[[Message], None],
        incarnations: Incarnations | None = None,
        voters: Callable[[], Container[str]] = tuple,
    ) -> None:
        """``members``: every member's id (this node's too); ``auth``: the cluster name and
        secret a hello must prove; ``deliver``: where Raft messages go (the Raft loop)."""
        self.me = me
        self.members = members
        self.auth = auth
        self.rpc = rpc
        self.deliver = deliver
        self.incarnations = incarnations
        self.voters = voters  # of the configuration in force (a lost voter is refused)

    async def serve(
        self, ws: WebSocketConnection, admit: Callable[[str], bool] = lambda _: True
    ) -> None:
        """Authenticate one inbound link, then read it until it ends. ``admit(member)`` is
        asked once the hello authenticated: False refuses the link (that member has enough)."""
        me = self.me
        remote = remote_of(ws)
        reason: str | None = None
        try:
            with trio.fail_after(HELLO_TIMEOUT_S):
                src = await self._handshake(ws, admit)
            assembly = Assembly()
            async with trio.open_nursery() as nursery:
                try:
                    while True:
                        msg = decode_peer(await ws.get_message())
                        if isinstance(msg, Snap):
                            self._on_chunk(src, msg, assembly)
                        else:
                            self._on_message(src, msg, nursery)
                except ProtocolError as e:
                    reason = f"{e}"
                    _refusals.warning("%s: closing peer link from %s (%s): %s", me, src, remote, e)
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
        except Refused as e:
            _refusals.warning("%s: refused a peer link from %s: %s", me, remote, e.detail)
            reason = AUTH_FAILED
        except Rejected as e:
            reason = e.reason
        except ProtocolError as e:
            _refusals.warning("%s: refused a peer link from %s: %s", me, remote, e)
            reason = AUTH_FAILED
        except trio.TooSlowError:
            _refusals.warning("%s: no hello from %s within %.0f s", me, remote, HELLO_TIMEOUT_S)
            reason = f"no hello within {HELLO_TIMEOUT_S:.0f} s"
        except ConnectionClosed:
            pass
        if reason is not None:
            with trio.move_on_after(1.0):
                await ws.aclose(1008, reason[:120])

    async def _handshake(self, ws: WebSocketConnection, admit: Callable[[str], bool]) -> NodeId:
        nonce = secrets.token_bytes(NONCE_BYTES)
        await ws.send_message(encode("challenge", {"nonce": nonce}))
        hello = decode_peer(await ws.get_message(), MAX_HANDSHAKE_FRAME)
        if not isinstance(hello, Hello):
            raise Refused(f"expected a hello, got {type(hello).__name__}")
        me, cluster = self.me, self.auth.cluster
        if hello.node not in self.members or hello.node == me:
            raise Refused(f"it claims to be {hello.node!r}, which is not a peer of this node")
        if hello.to != me:
            raise Refused(f"{hello.node} dialed {hello.to!r} but reached {me!r}")
        secret = self.auth.secret
        expect = hello_proof(secret, cluster, hello.node, me, nonce, hello.nonce)
        if not same(hello.proof, expect):
            raise Refused(
                f"it claims to be {hello.node} but its proof does not match: a different "
                f"[security] secret_file or [cluster] name than this node's {cluster!r}?"
            )
        if not admit(hello.node):
            raise ProtocolError(f"{hello.node} holds the most links this node takes from a member")
        await self._check_incarnation(hello)
        welcome = welcome_proof(secret, cluster, hello.node, me, nonce, hello.nonce)
        set_message_limit(ws, MAX_PEER_FRAME)  # before the welcome: frames follow it at once
        await ws.send_message(encode("welcome", {"proof": welcome}))
        log.debug("%s: peer link from %s (%s) authenticated", me, hello.node, remote_of(ws))
        return NodeId(hello.node)

    async def _check_incarnation(self, hello: Hello) -> None:
        inc = self.incarnations
        if inc is None:
            return
        why = inc.refusal(hello.node, hello.inc, self.voters())
        if why is not None:
            raise Rejected(why)
        if inc.needs_saving(hello.node, hello.inc):
            await trio.to_thread.run_sync(inc.remember, hello.node, hello.inc)

    def _on_chunk(self, src: NodeId, c: Snap, assembly: Assembly) -> None:
        if c.src != src or c.dst != self.me:
            raise ProtocolError(f"a snapshot from {c.src} to {c.dst} on the link from {src}")
        m = assembly.add(c)
        if m is not None:
            self.deliver(m)

    def _on_message(self, src: NodeId, m: PeerMessage, nursery: trio.Nursery) -> None:
        rpc = self.rpc
        if isinstance(m, RAFT_TYPES):
            if m.src != src or m.dst != self.me:
                raise ProtocolError(f"a message from {m.src} to {m.dst} on the link from {src}")
            self.deliver(to_raft(m))
        elif isinstance(m, Tp):
            rpc.answer_probe(src, m)
        elif isinstance(m, Tpr):
            rpc.probe_answered(src, m)
        elif isinstance(m, Ci):
            rpc.answer_commit_index(src, m)
        elif isinstance(m, Cia):
            rpc.reply_received(src, m.rid, m)
        elif isinstance(m, Fwd):
            nursery.start_soon(rpc.serve_forward, src, m)
        elif isinstance(m, Fwda):
            rpc.reply_received(src, m.fid, m)
        elif isinstance(m, St):
            rpc.answer_status(src, m)
        elif isinstance(m, Sta):
            rpc.reply_received(src, m.rid, m)
        else:
            raise ProtocolError(f"{type(m).__name__.lower()} after the handshake")
