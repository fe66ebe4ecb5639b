"""NtpPoller under trio's MockClock (autojump): schedule, backoff, recovery, estimator feed.

The query is injected: a fake async function that answers, fails or hangs per script, and
records who was asked when. No packet leaves the process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import trio
import trio.testing

from p2plog.clock.estimator import ClockEstimator
from p2plog.clock.ntp_poller import NtpPoller, NtpReply, parse_server
from p2plog.errors import ConfigError

MS = 1_000_000
S = 1000 * MS


def mock_ns() -> int:
    return round(trio.current_time() * S)


class FakeServers:
    """``behaviour(host, port, call_number) -> NtpReply | "fail" | "hang"``."""

    def __init__(self, behaviour: Callable[[str, int, int], NtpReply | str]) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[float, str, int]] = []

    async def query(self, host: str, port: int, timeout_s: float) -> NtpReply:
        n = sum(1 for _, h, p in self.calls if (h, p) == (host, port))
        self.calls.append((trio.current_time(), host, port))
        what = self.behaviour(host, port, n)
        if what == "hang":
            await trio.sleep_forever()
        if what == "fail":
            await trio.sleep(timeout_s)
            raise TimeoutError(f"No response received from {host}.")
        assert isinstance(what, NtpReply)
        await trio.sleep(what.delay_ns / S)
        return what

    def times(self, host: str) -> list[float]:
        return [round(t, 6) for t, h, _ in self.calls if h == host]


def poller(
    servers: list[str], fake: FakeServers, est: ClockEstimator | None = None, **kw: float
) -> NtpPoller:
    opts: dict[str, float] = {
        "poll_interval_s": 64,
        "timeout_s": 2,
        "retry_initial_s": 4,
        "max_backoff_s": 32,
        "burst": 0,
        "burst_interval_s": 2,
    } | kw
    return NtpPoller(
        servers,
        est or ClockEstimator(),
        query=fake.query,
        local_ns=mock_ns,
        wall_ns=mock_ns,
        node="n1",
        poll_interval_s=opts["poll_interval_s"],
        timeout_s=opts["timeout_s"],
        retry_initial_s=opts["retry_initial_s"],
        max_backoff_s=opts["max_backoff_s"],
        burst=int(opts["burst"]),
        burst_interval_s=opts["burst_interval_s"],
    )


async def run_for(p: NtpPoller, seconds: float) -> None:
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            await nursery.start(p.run)


async def test_burst_then_poll_interval(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeServers(lambda h, p, n: NtpReply(5 * MS, 0))
    p = poller(["10.0.0.1"], fake, burst=3, burst_interval_s=2)
    await run_for(p, 300)
    assert fake.times("10.0.0.1") == [0, 2, 4, 68, 132, 196, 260]
    assert p.estimator.status(mock_ns())["synced"] is True


async def test_backoff_doubles_up_to_the_cap(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeServers(lambda h, p, n: "fail")  # each failure takes the 2 s socket timeout
    p = poller(["ntp.invalid:1123"], fake)
    with caplog.at_level(logging.DEBUG, logger="p2plog.ntp"):
        await run_for(p, 200)
    # failures end at +2 s; retry after 4, 8, 16, 32, 32, ...
    assert fake.times("ntp.invalid") == [0, 6, 16, 34, 68, 102, 136, 170]
    assert all(port == 1123 for _, _, port in fake.calls)
    assert p.estimator.status()["synced"] is False
    st = p.statistics()["servers"][0]
    assert st["failures"] == 8
    assert "No response" in st["last_error"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "n1 ntp ntp.invalid:1123: No response received from ntp.invalid.; retry in 4 s (failure 1)"
    ]


async def test_hanging_server_is_cut_off_by_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeServers(lambda h, p, n: "hang")
    p = poller(["10.0.0.9"], fake, timeout_s=2)  # deadline = timeout + 1 s
    await run_for(p, 40)
    assert fake.times("10.0.0.9") == [0, 7, 18, 37]
    assert "no answer within 3 s" in p.statistics()["servers"][0]["last_error"]


async def test_recovery_returns_to_the_normal_schedule(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeServers(lambda h, p, n: "fail" if n < 3 else NtpReply(-7 * MS, MS))
    p = poller(["10.0.0.1"], fake)
    with caplog.at_level(logging.INFO, logger="p2plog.ntp"):
        await run_for(p, 200)
    # fail at 0, 6, 16; answer at 34 (+1 ms delay); then every 64 s
    assert fake.times("10.0.0.1") == [0, 6, 16, 34, 98.001, 162.002]
    st = p.statistics()["servers"][0]
    assert st["failures"] == 0
    assert st["answers"] == 3
    assert st["offset_ms"] == -7.0
    assert any("answering again after 3 failed polls" in r.getMessage() for r in caplog.records)
    assert p.estimator.offset_at(mock_ns()) == -7 * MS


async def test_unsynchronised_server_counts_as_not_answering(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeServers(lambda h, p, n: NtpReply(3 * S, MS, stratum=16, leap=3))
    p = poller(["10.0.0.1"], fake)
    await run_for(p, 10)
    assert p.estimator.samples == ()
    assert "not synchronised" in p.statistics()["servers"][0]["last_error"]


async def test_several_servers_only_those_are_asked_and_min_delay_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    replies = {
        ("10.0.0.1", 123): NtpReply(10 * MS, 8 * MS),
        ("10.0.0.2", 11123): NtpReply(12 * MS, 2 * MS),
        ("::1", 11124): NtpReply(11 * MS, 4 * MS),
    }
    fake = FakeServers(lambda h, p, n: replies[h, p])
    est = ClockEstimator()
    p = poller(["10.0.0.1", "10.0.0.2:11123", "[::1]:11124", "10.0.0.1"], fake, est)
    await run_for(p, 150)
    assert {(h, port) for _, h, port in fake.calls} == set(replies)
    assert len(fake.calls) == 9  # 3 servers x polls at 0, 64, 128 (duplicate entry ignored)
    assert est.best is not None
    assert est.best.server == "10.0.0.2:11123"
    assert est.status()["source"] == "10.0.0.2:11123"


async def test_wait_first_round(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeServers(lambda h, p, n: NtpReply(MS, MS) if h == "10.0.0.1" else "hang")
    p = poller(["10.0.0.1", "10.0.0.2"], fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
        await p.wait_first_round()
        assert trio.current_time() == 3  # the hanging server's deadline
        assert len(p.estimator.samples) == 1
        nursery.cancel_scope.cancel()


async def test_no_servers_runs_on_the_system_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeServers(lambda h, p, n: NtpReply(0, 0))
    p = poller([], fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(p.run)
    await p.wait_first_round()
    assert fake.calls == []
    assert "system clock" in p.estimator.status()["source"]


async def test_offset_is_translated_to_the_local_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeServers(lambda h, p, n: NtpReply(-3 * S, 0))  # system clock 3 s fast
    est = ClockEstimator()
    p = NtpPoller(
        ["10.0.0.1"],
        est,
        query=fake.query,
        burst=0,
        wall_ns=lambda: mock_ns() + 3 * S,
        local_ns=mock_ns,  # a steady clock that is right
    )
    await run_for(p, 1)
    assert est.offset_at(mock_ns()) == 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pool.ntp.org", ("pool.ntp.org", 123)),
        ("127.0.0.1:11123", ("127.0.0.1", 11123)),
        ("[::1]:11123", ("::1", 11123)),
        ("[::1]", ("::1", 123)),
        ("fe80::1", ("fe80::1", 123)),
    ],
)
def test_parse_server(spec: str, expected: tuple[str, int]) -> None:
    assert parse_server(spec) == expected


@pytest.mark.parametrize("spec", ["", "host:", "host:0", "host:70000", "host:ntp", "[::1]x", " a"])
def test_parse_server_refuses(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"\[ntp\] servers"):
        parse_server(spec)
