"""p2plog: a fault-tolerant, time-synchronized, consistent distributed log.

``import p2plog`` stays cheap: the client names below load ``p2plog.client`` (trio,
trio-websocket, cbor2) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "Client",
    "ClientError",
    "ClientOptions",
    "LogHandler",
    "RecordsRejected",
    "SubmitError",
    "SubmitFailed",
    "SyncClient",
    "Unreachable",
    "make_record",
    "open_client",
]
_CLIENT_NAMES = frozenset(__all__)

if TYPE_CHECKING:
    from p2plog.client import (
        Ack,
        Client,
        ClientError,
        ClientOptions,
        LogHandler,
        RecordsRejected,
        SubmitError,
        SubmitFailed,
        SyncClient,
        Unreachable,
        make_record,
        open_client,
    )


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        import p2plog.client

        return getattr(p2plog.client, name)
    raise AttributeError(f"module 'p2plog' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_CLIENT_NAMES])
