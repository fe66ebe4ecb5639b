"""Client options, statistics and the retry schedule shared by submit, reads and tails."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import trio

from p2plog.client.errors import ServerError
from p2plog.client.records import DEFAULT_FRAME_BYTES, DEFAULT_FRAME_RECORDS

# Error codes a request (query page, status, time) or a submit frame retries on; the second
# set on another node. A tail keeps its own set (``p2plog.client.tail.RETRY_CODES``).
RETRY_CODES = frozenset({"unavailable", "overloaded", "timeout"})
FAILOVER_CODES = frozenset({"shutting_down", "storage_failed", "not_leader"})


@dataclass(frozen=True, slots=True)
class ClientOptions:
    connect_timeout_s: float = 3.0
    request_timeout_s: float = 15.0  # above the node's own 10 s commit timeout
    submit_deadline_s: float = 30.0
    max_attempts: int = 10
    backoff_min_s: float = 0.05
    backoff_max_s: float = 2.0
    linger_ms: float = 2.0
    frame_records: int = DEFAULT_FRAME_RECORDS
    frame_bytes: int = DEFAULT_FRAME_BYTES
    max_inflight_frames: int = 8
    queue_records: int = 10_000
    max_pending: int = 1024
    tail_reconnect_s: float = 60.0
    token: str | None = field(default=None, repr=False)  # else P2PLOG_TOKEN; never logged
    ca: str | None = None  # the cluster CA for wss:// (else P2PLOG_CA, or the config's [tls])
    tls: bool = False  # wss:// even without a CA given (the system trust store)
    insecure: bool = False  # allow sending the token over ws:// to a host other than this one


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    frames_sent: int
    records_sent: int
    coalesced_frames: int
    retries: int
    failovers: int
    connects: int
    address: str | None


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """The node's clock minus this host's (ns), from the probe with the smallest round trip."""

    offset_ns: int
    delay_ns: int


class Backoff:
    """Attempts under a count and a deadline, with exponential sleeps and jitter."""

    def __init__(
        self, opts: ClientOptions, deadline_s: float | None = None, max_attempts: int = 0
    ) -> None:
        self.opts = opts
        self.deadline = trio.current_time() + (deadline_s or opts.submit_deadline_s)
        self.max_attempts = max_attempts or opts.max_attempts
        self.attempt = 0
        self.delay_s = opts.backoff_min_s
        self.last = "no attempt made"
        self.last_code = "timeout"

    def remaining_s(self) -> float:
        return self.deadline - trio.current_time()

    def next(self) -> bool:
        self.attempt += 1
        return self.attempt <= self.max_attempts and self.remaining_s() > 0

    async def wait(self, reason: str, code: str, retry_after_ms: int | None = None) -> None:
        self.last, self.last_code = reason, code
        delay = max(self.delay_s, (retry_after_ms or 0) / 1000) * (0.5 + random.random())
        await trio.sleep(max(0.0, min(delay, self.remaining_s())))
        self.delay_s = min(self.delay_s * 2, self.opts.backoff_max_s)


def server_error(reply: dict[str, Any]) -> ServerError:
    ra = reply.get("retry_after_ms")
    return ServerError(
        str(reply.get("code")), str(reply.get("msg", "")), ra if isinstance(ra, int) else None
    )
