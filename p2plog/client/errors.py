"""What the client raises and returns: acks, per-record failures, and the error tree.

Retryable conditions (no leader yet, overload, timeouts, a lost connection) never reach the
caller directly: the client retries them with the same record ids until its attempts or its
deadline run out, then raises ``SubmitFailed`` naming the last reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2plog.errors import P2PLogError


@dataclass(frozen=True, slots=True)
class Ack:
    """A stored record: its id, log index and term; ``dup`` if the id was already stored (a
    retry), in which case ``index`` is the original one."""

    id: str
    index: int
    term: int
    dup: bool


@dataclass(frozen=True, slots=True)
class RecordFailure:
    """A record the node refused (not stored); ``i`` is its position in the submit."""

    i: int
    id: str
    error: str


class ClientError(P2PLogError):
    """Base of the errors of ``p2plog.Client``."""


class ClientClosed(ClientError):
    """The client was closed while this call was running (or before it started)."""


class ConnectError(ClientError):
    """One address could not be reached."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason


class AuthError(ClientError):
    """A node refused this client's token (unknown or revoked): retrying cannot help."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(
            f"{address} refused the token: {reason}; check --token or P2PLOG_TOKEN "
            f"(python -m p2plog token list shows the names of valid tokens)"
        )
        self.address = address
        self.reason = reason


class Unreachable(ClientError):
    """No address of the list answered; ``tried`` holds (address, reason) pairs."""

    def __init__(self, tried: Sequence[tuple[str, str]]) -> None:
        reasons = {r for _, r in tried}
        if len(reasons) == 1:
            detail = f"{', '.join(a for a, _ in tried)}: {reasons.pop()}"
        else:
            detail = "; ".join(f"{a}: {r}" for a, r in tried) or "no addresses"
        super().__init__(f"no node is reachable (tried {detail})")
        self.tried = list(tried)


class ConnectionLost(ClientError):
    """The connection closed while a request was waiting for its reply."""


class RequestTimeout(ClientError):
    """No reply within the request's deadline."""


class StreamOverflow(ClientError):
    """A tail's reader fell behind the client's bounded per-stream buffer."""


class ServerError(ClientError):
    """A node answered ``error``; ``code`` is one of ``p2plog.wire.client.ErrorCode``."""

    def __init__(self, code: str, msg: str, retry_after_ms: int | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.retry_after_ms = retry_after_ms


class SubmitError(ClientError):
    """A submit did not store every record.

    ``acks[i]`` is the ack of record ``i`` or None if it was not stored; ``errors`` lists the
    records that were not stored and why. ``code`` says what kind of failure this is.
    """

    code = "failed"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        acks: Sequence[Ack | None] = (),
        errors: Sequence[RecordFailure] = (),
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.reason = reason or message  # the last underlying error, without the preamble
        self.acks = list(acks)
        self.errors = list(errors)


class RecordsRejected(SubmitError):
    """Some records were invalid and not stored; every other record was stored (see ``acks``).
    Retrying the same records would fail the same way: fix them."""

    code = "rejected"


class SubmitFailed(SubmitError):
    """The batch could not be stored: a non-retryable error (``bad_request``, ``disk_full``)
    or retries exhausted (``code`` is the last reason: ``unavailable``, ``overloaded``,
    ``timeout``, ``unreachable``, ``connection_lost``...). Records in ``acks`` were stored;
    resubmitting the others with the same ids is safe (they dedup)."""
