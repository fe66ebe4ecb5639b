"""The p2plog client side: async ``Client``, blocking ``SyncClient``, ``LogHandler``.

Import cost: this package pulls in trio and trio-websocket; ``import p2plog`` alone does not
(its names resolve lazily).
"""

from __future__ import annotations

from p2plog.client.client import Client, open_client
from p2plog.client.errors import (
    Ack,
    ClientClosed,
    ClientError,
    ConnectionLost,
    RecordFailure,
    RecordsRejected,
    RequestTimeout,
    ServerError,
    SubmitError,
    SubmitFailed,
    Unreachable,
)
from p2plog.client.handler import LogHandler
from p2plog.client.options import ClientOptions, ClientStatistics, ClockOffset
from p2plog.client.records import make_record
from p2plog.client.sync import SyncClient
from p2plog.client.tail import TailStream

__all__ = [
    "Ack",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientOptions",
    "ClientStatistics",
    "ClockOffset",
    "ConnectionLost",
    "LogHandler",
    "RecordFailure",
    "RecordsRejected",
    "RequestTimeout",
    "ServerError",
    "SubmitError",
    "SubmitFailed",
    "SyncClient",
    "TailStream",
    "Unreachable",
    "make_record",
    "open_client",
]
