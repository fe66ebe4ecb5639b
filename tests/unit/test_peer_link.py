"""PeerLink under trio's MockClock: queue bound, dial backoff, the membership handshake,
frame order, keepalive.

``open_websocket`` is replaced by a fake dialer that follows a script per attempt (refuse with
an exception, or accept with a fake connection that plays the acceptor's side of the
handshake) and records the virtual time of everything. No socket is opened. Every wait is
bounded in virtual time.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from random import Random
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import CloseReason, ConnectionClosed, HandshakeError

from p2plog.net import peer_link
from p2plog.net.peer_link import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    KEEPALIVE_S,
    KEEPALIVE_TIMEOUT_S,
    QUEUE_BYTES,
    QUEUE_FRAMES,
    LinkAuth,
    PeerLink,
)
from p2plog.wire import peer as wp
from p2plog.wire.envelope import encode
from p2plog.wire.peer_auth import hello_proof, welcome_proof

HELLO = b"hello-frame"  # what FakeWS records in place of the (random) hello it received
SECRET = b"s" * 32
CLUSTER = "demo"
CHALLENGE = b"c" * wp.NONCE_BYTES
EPS = 1e-6
WAIT_S = 60.0  # virtual seconds


class Recorder:
    """Wakes waiters whenever a fake records something, so tests wait on events, not polls."""

    def __init__(self) -> None:
        self._changed = trio.Event()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, pred: Callable[[], bool], within_s: float = WAIT_S) -> None:
        with trio.fail_after(within_s):
            while not pred():
                await self._changed.wait()


@dataclass(eq=False)
class FakeWS:
    """The acceptor's end: a challenge, then (once the hello came) a welcome whose proof is
    right unless ``secret`` is another cluster's."""

    rec: Recorder
    hang_ping: int | None = None  # this ping (0-based) never returns
    close_on_send: int | None = None  # this send (0-based, hello included) raises
    secret: bytes = SECRET
    sent: list[tuple[float, bytes]] = field(default_factory=list)
    pings: list[float] = field(default_factory=list)
    closed_at: float | None = None
    hello: wp.Hello | None = None
    received: int = 0

    async def send_message(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        if self.close_on_send == len(self.sent):
            raise ConnectionClosed(CloseReason(1006, "gone"))
        if self.hello is None:
            msg = wp.decode_peer(data)
            assert isinstance(msg, wp.Hello), msg
            self.hello, data = msg, HELLO
        self.sent.append((trio.current_time(), data))
        self.rec.changed()

    async def get_message(self) -> bytes:
        await trio.lowlevel.checkpoint()
        self.received += 1
        if self.received == 1:
            return encode("challenge", {"nonce": CHALLENGE})
        assert self.received == 2, "the dialer reads only the handshake"
        h = self.hello
        assert h is not None
        proof = welcome_proof(self.secret, CLUSTER, h.node, h.to, CHALLENGE, h.nonce)
        # Wake waiters now: the link sets ``connected`` before its next checkpoint.
        self.rec.changed()
        return encode("welcome", {"proof": proof})

    async def ping(self, payload: bytes | None = None) -> None:
        self.pings.append(trio.current_time())
        self.rec.changed()
        if self.hang_ping == len(self.pings) - 1:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()

    def frames(self) -> list[bytes]:
        return [d for _, d in self.sent]


Script = Callable[[int], "BaseException | FakeWS"]


class FakeDialer:
    """Stands in for ``trio_websocket.open_websocket``; ``script(attempt)`` decides each dial."""

    def __init__(self, rec: Recorder, script: Script) -> None:
        self.rec = rec
        self.script = script
        self.attempts: list[float] = []
        self.conns: list[FakeWS] = []
        self.args: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kw: Any) -> Any:
        return self._open(args, kw)

    @asynccontextmanager
    async def _open(self, args: tuple[Any, ...], kw: dict[str, Any]) -> AsyncIterator[FakeWS]:
        self.args.append((args, kw))
        self.attempts.append(trio.current_time())
        what = self.script(len(self.attempts) - 1)
        self.rec.changed()
        if isinstance(what, BaseException):
            raise what
        self.conns.append(what)
        try:
            yield what
        finally:
            what.closed_at = trio.current_time()
            self.rec.changed()


class MidRandom(Random):
    """Jitter factor 0.5 + 0.5 = 1.0: backoff delays exactly as computed."""

    def random(self) -> float:
        return 0.5


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def install(
    monkeypatch: pytest.MonkeyPatch, rec: Recorder, script: Script, *, jitter: bool = False
) -> FakeDialer:
    dialer = FakeDialer(rec, script)
    monkeypatch.setattr(peer_link, "open_websocket", dialer)
    if not jitter:
        monkeypatch.setattr(peer_link, "Random", MidRandom)
    return dialer


def new_link() -> PeerLink:
    return PeerLink("n1", "n2", "10.0.0.2", 7002, LinkAuth(CLUSTER, SECRET))


@asynccontextmanager
async def running(link: PeerLink) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.run)
        yield
        nursery.cancel_scope.cancel()


def refuse(_: int) -> BaseException:
    return OSError(111, "Connection refused")


def expected_delays(n: int) -> list[float]:
    """The backoff sleeps without jitter: BACKOFF_MIN_S doubling up to BACKOFF_MAX_S."""
    out, d = [], BACKOFF_MIN_S
    for _ in range(n):
        out.append(d)
        d = min(d * 2, BACKOFF_MAX_S)
    return out


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# ------------------------------------------------------------------ queue


def test_send_nowait_drops_when_the_queue_is_full() -> None:
    link = new_link()
    assert all(link.send_nowait(b"f%d" % i) for i in range(QUEUE_FRAMES))
    assert link.dropped == 0
    assert not link.send_nowait(b"one too many")
    assert not link.send_nowait(b"and another")
    assert link.dropped == 2
    assert link.sent == 0
    assert not link.connected


def test_send_nowait_drops_when_the_queue_is_full_by_bytes() -> None:
    link = new_link()
    big = b"x" * (QUEUE_BYTES // 4)
    assert all(link.send_nowait(big) for _ in range(4))
    assert link.queued_bytes == QUEUE_BYTES
    assert not link.send_nowait(b"y")
    assert link.dropped == 1
    link._take_nowait()
    assert link.queued_bytes == 3 * len(big)
    assert link.send_nowait(b"y")


def test_one_frame_over_the_byte_bound_still_goes_on_an_empty_queue() -> None:
    link = new_link()
    assert link.send_nowait(b"x" * (QUEUE_BYTES + 1))  # else it could never be sent
    assert not link.send_nowait(b"y")


# ------------------------------------------------------------------ dialing


async def test_unreachable_peer_backoff_doubles_up_to_the_cap(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    dialer = install(monkeypatch, rec, refuse)
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: len(dialer.attempts) >= 12)
        assert not link.connected
    assert dialer.attempts[0] == pytest.approx(0.0)
    got = gaps(dialer.attempts)[:11]
    assert got == pytest.approx(expected_delays(11))
    assert got[-1] == pytest.approx(BACKOFF_MAX_S)  # capped
    args, kw = dialer.args[0]
    assert args == ("10.0.0.2", 7002, "/peer")
    assert kw["use_ssl"] is False
    assert kw["connect_timeout"] == peer_link.CONNECT_TIMEOUT_S
    assert kw["max_message_size"] == wp.MAX_HANDSHAKE_FRAME  # peers only send the handshake


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_backoff_with_jitter_grows_and_stays_bounded(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    rec: Recorder,
    seed: int,
) -> None:
    seeds = itertools.count(seed)
    monkeypatch.setattr(peer_link, "Random", lambda: Random(next(seeds)))
    dialer = install(monkeypatch, rec, refuse, jitter=True)
    async with running(new_link()):
        await rec.wait_for(lambda: len(dialer.attempts) >= 20)
    got = gaps(dialer.attempts)
    for g, d in zip(got, expected_delays(len(got)), strict=True):
        assert 0.5 * d - EPS <= g <= 1.5 * d + EPS  # jitter of +-50 % around the delay
        assert g <= BACKOFF_MAX_S * 1.5 + EPS
    # it grew: the first redials (delay <= 0.04 s) all come sooner than any capped one
    assert max(got[:2]) < min(got[6:])


@pytest.mark.parametrize(
    "error",
    [
        OSError(113, "No route to host"),
        HandshakeError(),
        trio.TooSlowError(),
        ConnectionClosed(CloseReason(1001, "going away")),
    ],
    ids=["OSError", "HandshakeError", "TooSlowError", "ConnectionClosed"],
)
async def test_every_network_error_is_retried(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    rec: Recorder,
    error: BaseException,
) -> None:
    dialer = install(monkeypatch, rec, lambda n: error if n < 3 else FakeWS(rec))
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: link.connected)
    assert len(dialer.attempts) == 4


# ------------------------------------------------------------------ connected


async def test_hello_first_then_queued_frames_in_order(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    dialer = install(monkeypatch, rec, lambda n: FakeWS(rec))
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: link.connected)
        ws = dialer.conns[0]
        for f in (b"a", b"b", b"c", b"d", b"e"):  # queued faster than they are sent
            assert link.send_nowait(f)
        await rec.wait_for(lambda: len(ws.sent) == 6)
    assert ws.frames() == [HELLO, b"a", b"b", b"c", b"d", b"e"]
    assert link.sent == 5  # frames, not counting hello
    h = ws.hello
    assert h is not None
    assert (h.node, h.to) == ("n1", "n2")
    assert h.proof == hello_proof(SECRET, CLUSTER, "n1", "n2", CHALLENGE, h.nonce)
    assert link.dropped == 0
    assert len(dialer.attempts) == 1
    assert ws.closed_at is not None  # cancelling run() closed the connection


async def test_frames_queued_before_the_first_dial_are_discarded(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    dialer = install(monkeypatch, rec, lambda n: FakeWS(rec))
    link = new_link()
    assert link.send_nowait(b"before-any-connection")
    async with running(link):
        await rec.wait_for(lambda: link.connected)
        link.send_nowait(b"fresh")
        ws = dialer.conns[0]
        await rec.wait_for(lambda: len(ws.sent) == 2)
    assert ws.frames() == [HELLO, b"fresh"]


async def test_frames_queued_before_a_failed_dial_are_discarded(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    dialer = install(monkeypatch, rec, lambda n: refuse(n) if n < 2 else FakeWS(rec))
    link = new_link()
    link.send_nowait(b"stale-1")
    link.send_nowait(b"stale-2")
    async with running(link):
        await rec.wait_for(lambda: link.connected)
        ws = dialer.conns[0]
        link.send_nowait(b"fresh")
        await rec.wait_for(lambda: len(ws.sent) == 2)
    assert ws.frames() == [HELLO, b"fresh"]


async def test_lost_link_discards_queued_frames_and_redials(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    rec: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = FakeWS(rec, close_on_send=2)  # hello and one frame, then the peer goes away
    second = FakeWS(rec)
    dialer = install(monkeypatch, rec, lambda n: [first, second][n])
    link = new_link()
    with caplog.at_level(logging.WARNING, logger="p2plog.net"):
        async with running(link):
            await rec.wait_for(lambda: link.connected)
            for f in (b"1", b"2", b"3", b"4"):  # "2" fails; "3" and "4" are then stale
                link.send_nowait(f)
            await rec.wait_for(lambda: len(dialer.conns) == 2 and len(second.sent) == 1)
            link.send_nowait(b"5")
            await rec.wait_for(lambda: len(second.sent) == 2)
    assert first.frames() == [HELLO, b"1"]
    assert second.frames() == [HELLO, b"5"]  # a new hello on every connection
    assert first.closed_at is not None
    assert dialer.attempts[1] - first.closed_at == pytest.approx(BACKOFF_MIN_S)
    assert "n1: link to n2 lost: closed (1006 gone)" in caplog.text


async def test_frames_queued_during_backoff_are_discarded(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    dialer = install(monkeypatch, rec, lambda n: refuse(n) if n < 1 else FakeWS(rec))
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: len(dialer.attempts) == 1)  # the dial failed; now sleeping
        assert not link.connected
        link.send_nowait(b"queued-while-disconnected")
        await rec.wait_for(lambda: link.connected)
        ws = dialer.conns[0]
        link.send_nowait(b"fresh")
        await rec.wait_for(lambda: b"fresh" in ws.frames())
    assert ws.frames() == [HELLO, b"fresh"]


async def test_a_peer_without_the_secret_gets_nothing_and_is_redialled(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    rec: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node that answers the hello with a wrong welcome (another cluster's secret, or a
    stranger on the peer's address) is never sent a frame; the link keeps redialling."""
    impostors = [FakeWS(rec, secret=b"x" * 32) for _ in range(3)]
    dialer = install(monkeypatch, rec, lambda n: impostors[n] if n < 3 else FakeWS(rec))
    link = new_link()
    with caplog.at_level(logging.WARNING, logger="p2plog.net"):
        async with running(link):
            assert link.send_nowait(b"secret-record")
            await rec.wait_for(lambda: link.connected)
            link.send_nowait(b"fresh")
            await rec.wait_for(lambda: b"fresh" in dialer.conns[3].frames())
    for ws in impostors:
        assert ws.frames() == [HELLO], "only the hello went to an impostor"
        assert ws.closed_at is not None
    assert dialer.conns[3].frames() == [HELLO, b"fresh"]
    assert caplog.text.count("did not prove it holds this cluster's secret") == 1  # rate-limited


async def test_a_peer_that_sends_no_challenge_is_dropped(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    class Silent(FakeWS):
        async def get_message(self) -> bytes:
            await trio.sleep_forever()
            raise AssertionError

    silent = Silent(rec)
    dialer = install(monkeypatch, rec, lambda n: silent if n == 0 else FakeWS(rec))
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: link.connected)
    assert silent.sent == []
    assert silent.closed_at == pytest.approx(peer_link.SEND_TIMEOUT_S)
    assert len(dialer.attempts) == 2


# ------------------------------------------------------------------ keepalive


async def test_idle_link_pings_every_keepalive_interval(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    dialer = install(monkeypatch, rec, lambda n: FakeWS(rec))
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: len(dialer.conns) == 1 and len(dialer.conns[0].pings) >= 5)
    ws = dialer.conns[0]
    hello_at = ws.sent[0][0]
    assert ws.pings[0] - hello_at == pytest.approx(KEEPALIVE_S)
    assert gaps(ws.pings) == pytest.approx([KEEPALIVE_S] * (len(ws.pings) - 1))
    assert len(dialer.attempts) == 1  # answered pings keep the connection


async def test_busy_link_does_not_ping(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    dialer = install(monkeypatch, rec, lambda n: FakeWS(rec))
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: link.connected)
        for i in range(20):  # a frame every 0.6 * KEEPALIVE_S for 6 s
            link.send_nowait(b"%d" % i)
            await trio.sleep(0.6 * KEEPALIVE_S)
    assert dialer.conns[0].pings == []
    assert len(dialer.conns[0].sent) == 21


async def test_unanswered_ping_redials_after_the_keepalive_timeout(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    first = FakeWS(rec, hang_ping=2)  # two pongs, then the peer goes silent
    second = FakeWS(rec)
    dialer = install(monkeypatch, rec, lambda n: [first, second][n])
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: len(dialer.conns) == 2 and link.connected)
    assert len(first.pings) == 3
    assert first.closed_at is not None
    assert first.closed_at - first.pings[-1] == pytest.approx(KEEPALIVE_TIMEOUT_S)
    assert dialer.attempts[1] - first.closed_at == pytest.approx(BACKOFF_MIN_S)
    # a dead link is noticed and redialled within KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + backoff
    assert dialer.attempts[1] - first.pings[-2] <= KEEPALIVE_S + KEEPALIVE_TIMEOUT_S + 0.05


async def test_backoff_resets_after_a_successful_connection(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, rec: Recorder
) -> None:
    good = FakeWS(rec, hang_ping=0)  # connects after 6 refusals, then dies silently

    def script(n: int) -> BaseException | FakeWS:
        if n < 6:
            return refuse(n)
        return good if n == 6 else FakeWS(rec)

    dialer = install(monkeypatch, rec, script)
    link = new_link()
    async with running(link):
        await rec.wait_for(lambda: len(dialer.attempts) == 8)
    assert gaps(dialer.attempts[:7]) == pytest.approx(expected_delays(6))  # grew while down
    assert good.closed_at is not None
    # the link had been up: redial at once (BACKOFF_MIN_S), not after the grown delay (1 s)
    assert dialer.attempts[7] - good.closed_at == pytest.approx(BACKOFF_MIN_S)
