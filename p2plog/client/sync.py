"""``SyncClient``: the async ``Client`` for threaded code.

A dedicated thread runs ``trio.run`` with one ``Client`` inside; each method hands its call to
that loop with ``trio.from_thread.run`` and blocks the calling thread until it returns. Every
call is bounded by the client's own deadlines; startup and ``close()`` are bounded too. Any
number of threads may call in at once (their calls run concurrently on the loop, and single
record submits coalesce into frames there).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import trio

from p2plog.client.client import Client, open_client
from p2plog.client.errors import Ack, ClientClosed, ClientError
from p2plog.client.options import ClientOptions, ClientStatistics, ClockOffset
from p2plog.client.records import Record
from p2plog.client.tail import TailStream
from p2plog.config import Config

T = TypeVar("T")
START_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0


class SyncClient:
    def __init__(
        self,
        nodes: str | Path | Config | Sequence[str],
        options: ClientOptions | None = None,
        *,
        lazy: bool = False,
        thread_name: str = "p2plog-client",
    ) -> None:
        """Start the loop thread and connect (``lazy``: on first use); raises ``Unreachable``
        if no node answers."""
        self._nodes = nodes
        self._options = options
        self._lazy = lazy
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._client: Client | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, name=thread_name, daemon=True)
        self._thread.start()
        timeout = START_TIMEOUT_S + (options or ClientOptions()).connect_timeout_s
        if not self._ready.wait(timeout):
            raise ClientError(f"the client thread did not start within {timeout:.0f} s")
        if self._error is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
            raise self._error

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def _main(self) -> None:
        try:
            trio.run(self._amain)
        except ClientError as e:  # the connect failed: hand it to the constructor
            self._error = e
        finally:
            self._ready.set()

    async def _amain(self) -> None:
        async with open_client(self._nodes, self._options, lazy=self._lazy) as client:
            self._client = client
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self._token is None or not self._thread.is_alive():
            raise ClientClosed("the client is closed")
        try:
            return trio.from_thread.run(partial(fn, *args, **kwargs), trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled):
            raise ClientClosed("the client closed during the call") from None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise ClientClosed("the client is closed")
        return self._client

    def submit(self, records: Record | Sequence[Record], ack: str = "quorum") -> list[Ack]:
        return self._run(self.client.submit, records, ack)

    def query(self, *, limit: int = 1000, **selectors: Any) -> list[dict[str, Any]]:
        return self._run(self.client.query, limit=limit, **selectors)

    def status(self) -> dict[str, Any]:
        return self._run(self.client.status)

    def clock_offset(self, samples: int = 5) -> ClockOffset:
        return self._run(self.client.clock_offset, samples)

    def statistics(self) -> ClientStatistics:
        return self.client.statistics()

    def tail(self, **selectors: Any) -> Iterator[dict[str, Any]]:
        """Live records, blocking between them; close the generator to stop the tail."""
        stream: TailStream = self.client.tail(**selectors)
        try:
            while True:
                try:
                    yield self._run(stream.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            if self._thread.is_alive():
                with contextlib.suppress(ClientClosed):
                    self._run(stream.aclose)

    def close(self) -> None:
        """Stop the loop (in-flight calls end with ``ClientClosed``) and join its thread."""
        token, stop = self._token, self._stop
        self._token = None
        if token is not None and stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=token)
        if threading.current_thread() is not self._thread:
            self._thread.join(CLOSE_TIMEOUT_S)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
