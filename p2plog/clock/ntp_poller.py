"""The NTP poller: a trio task that queries the configured servers and feeds a ClockEstimator.

Each server (``host`` or ``host:port``; ``[v6addr]:port`` for IPv6) gets its own polling loop.
A query runs ntplib in a worker thread (``trio.to_thread.run_sync``: ntplib blocks) under
``trio.fail_after`` (ntplib's own socket timeout does not cover DNS). Schedule per server:

- start: ``burst`` quick polls ``burst_interval_s`` apart (chrony's ``iburst``), so the clock
  filter has several samples to choose from within seconds of starting;
- then one poll every ``poll_interval_s``;
- a server that does not answer (timeout, socket error, or a reply that says it is not
  synchronised: leap 3, stratum 0 or >= 16) is retried after ``retry_initial_s``, doubling per
  consecutive failure up to ``max_backoff_s``; the first answer resets it to the normal schedule.

Only the configured servers are ever contacted. With none configured the poller returns at once
and the estimator stays the identity (``status`` says the node runs on the system clock).

Clocks: ntplib measures the offset against the system clock (``wall_ns``). The estimator gets it
translated to the clock it is used with (``local_ns``): offset + (wall - local), read together.
With the default ``local_ns = time.time_ns`` that is the identity; with ``steady_wall_clock()``
(monotonic + a fixed anchor) the node's corrected time is immune to steps of the system clock.

All estimator calls happen on the trio thread between checkpoints, so they never interleave with
the runtime's own calls (``corrected_now``, ``status``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import ntplib
import trio

from p2plog.clock.estimator import ClockEstimator, NtpSample, Verdict
from p2plog.errors import ConfigError

log = logging.getLogger("p2plog.ntp")

NTP_PORT = 123
NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class NtpReply:
    """One server answer: ``offset_ns`` = server - system clock, ``delay_ns`` = round trip."""

    offset_ns: int
    delay_ns: int
    stratum: int = 2
    leap: int = 0


QueryFn = Callable[[str, int, float], Awaitable[NtpReply]]


def _ntplib_request(host: str, port: int, timeout_s: float) -> NtpReply:
    r = ntplib.NTPClient().request(host, version=4, port=port, timeout=timeout_s)
    return NtpReply(round(r.offset * NS_PER_S), round(r.delay * NS_PER_S), r.stratum, r.leap)


async def ntplib_query(host: str, port: int, timeout_s: float) -> NtpReply:
    """Query one server with ntplib in a worker thread (abandoned if the caller gives up)."""
    return await trio.to_thread.run_sync(
        partial(_ntplib_request, host, port, timeout_s), abandon_on_cancel=True
    )


def steady_wall_clock() -> Callable[[], int]:
    """A clock that reads the system time now and then runs with the monotonic clock, so it
    never steps (pass it as ``local_ns``, and use the same one for ``corrected_now``)."""
    anchor = time.time_ns() - time.monotonic_ns()
    return lambda: time.monotonic_ns() + anchor


def parse_server(spec: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (host, port)."""
    host, port = spec, NTP_PORT
    if spec.startswith("["):
        end = spec.find("]")
        rest = spec[end + 1 :] if end > 0 else "?"
        host = spec[1:end]
        if rest:
            if not rest.startswith(":"):
                host = ""
            port = _port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = _port(p, spec)
    if not host or any(c.isspace() for c in host):
        raise ConfigError(
            f'[ntp] servers: "{spec}" is not "host", "host:port" or "[ipv6]:port"; '
            'fix the entry, e.g. "127.0.0.1:11123"'
        )
    return host, port


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f'[ntp] servers: "{spec}" has port {text!r}; use a port 1..65535')
    return int(text)


@dataclass(slots=True)
class ServerState:
    spec: str
    host: str
    port: int
    answers: int = 0
    failures: int = 0  # consecutive
    backoff_s: float = 0.0  # 0 while the server answers
    next_poll_at: float = 0.0  # trio time
    last_error: str = ""
    last_offset_ns: int | None = None
    last_delay_ns: int | None = None
    attempted: bool = False


class NtpPoller:
    def __init__(
        self,
        servers: Sequence[str],
        estimator: ClockEstimator,
        *,
        poll_interval_s: float = 64.0,
        timeout_s: float = 2.0,
        retry_initial_s: float = 4.0,
        max_backoff_s: float = 1024.0,
        burst: int = 4,
        burst_interval_s: float = 2.0,
        query: QueryFn = ntplib_query,
        local_ns: Callable[[], int] = time.time_ns,
        wall_ns: Callable[[], int] = time.time_ns,
        node: str = "",
    ) -> None:
        assert poll_interval_s > 0
        assert timeout_s > 0
        assert burst >= 0
        assert burst_interval_s > 0
        assert 0 < retry_initial_s <= max_backoff_s
        self.servers = [ServerState(s, *parse_server(s)) for s in dict.fromkeys(servers)]
        self.estimator = estimator
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        # ntplib's socket timeout fires first; the deadline also covers a hanging DNS lookup.
        self.deadline_s = timeout_s + 1.0
        self.retry_initial_s = retry_initial_s
        self.max_backoff_s = max_backoff_s
        self.burst = burst
        self.burst_interval_s = burst_interval_s
        self.query = query
        self.local_ns = local_ns
        self.wall_ns = wall_ns
        self.where = f"{node} ntp" if node else "ntp"
        self._first_round = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled (start it with ``nursery.start``)."""
        if not self.servers:
            log.info("%s: no servers configured; running on the system clock", self.where)
            self._first_round.set()
            task_status.started()
            return
        async with trio.open_nursery() as nursery:
            for st in self.servers:
                nursery.start_soon(self._poll_loop, st)
            task_status.started()

    async def wait_first_round(self) -> None:
        """Return once every server has answered or failed once (at once with no servers).
        Callers that stamp times should wait for this, bounded, before handing out the first
        corrected time: until then the estimator may still step (see ClockEstimator)."""
        await self._first_round.wait()

    async def _poll_loop(self, st: ServerState) -> None:
        while True:
            ok = await self._poll_once(st)
            if ok:
                st.backoff_s = 0.0
                delay = self.burst_interval_s if st.answers < self.burst else self.poll_interval_s
            else:
                delay = st.backoff_s  # set by _failed
            st.attempted = True
            if all(s.attempted for s in self.servers):
                self._first_round.set()
            st.next_poll_at = trio.current_time() + delay
            await trio.sleep(delay)

    async def _poll_once(self, st: ServerState) -> bool:
        try:
            with trio.fail_after(self.deadline_s):
                reply = await self.query(st.host, st.port, self.timeout_s)
        except trio.TooSlowError:
            return self._failed(st, f"no answer within {self.deadline_s:g} s")
        except (OSError, ntplib.NTPException) as e:
            return self._failed(st, str(e) or type(e).__name__)
        wall, local = self.wall_ns(), self.local_ns()
        if reply.leap == 3 or not 0 < reply.stratum < 16:
            return self._failed(
                st, f"server is not synchronised (leap={reply.leap}, stratum={reply.stratum})"
            )
        sample = NtpSample(local, reply.offset_ns + (wall - local), reply.delay_ns, st.spec)
        verdict = self.estimator.add_sample(sample)
        if st.failures:
            log.info(
                "%s %s: answering again after %d failed polls", self.where, st.spec, st.failures
            )
        st.answers += 1
        st.failures = 0
        st.last_error = ""
        st.last_offset_ns, st.last_delay_ns = sample.offset_ns, sample.delay_ns
        msg = "%s %s: offset=%+.3f ms delay=%.3f ms stratum=%d: %s"
        args = (sample.offset_ns / 1e6, sample.delay_ns / 1e6, reply.stratum, verdict.value)
        if verdict is Verdict.RESTARTED:
            log.warning(msg + " (the clock stepped; filter restarted)", self.where, st.spec, *args)
        elif verdict in (Verdict.SUSPECT, Verdict.REJECTED):
            log.info(msg, self.where, st.spec, *args)
        else:
            log.debug(msg, self.where, st.spec, *args)
        return True

    def _failed(self, st: ServerState, why: str) -> bool:
        st.failures += 1
        st.last_error = why
        st.backoff_s = min(self.max_backoff_s, max(self.retry_initial_s, st.backoff_s * 2))
        # One warning per outage; the retries of a known outage go to debug.
        level = logging.WARNING if st.failures == 1 else logging.DEBUG
        log.log(
            level,
            "%s %s: %s; retry in %g s (failure %d)",
            self.where,
            st.spec,
            why,
            st.backoff_s,
            st.failures,
        )
        return False

    def statistics(self) -> dict[str, Any]:
        now = trio.current_time()
        return {
            "servers": [
                {
                    "server": st.spec,
                    "answers": st.answers,
                    "failures": st.failures,
                    "last_error": st.last_error,
                    "next_poll_in_s": (max(0.0, st.next_poll_at - now) if st.attempted else None),
                    "offset_ms": None if st.last_offset_ns is None else st.last_offset_ns / 1e6,
                    "delay_ms": None if st.last_delay_ns is None else st.last_delay_ns / 1e6,
                }
                for st in self.servers
            ]
        }
