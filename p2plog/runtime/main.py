"""``python -m p2plog run``: one node process, with clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from p2plog.config import Config, NodeConfig
from p2plog.errors import P2PLogError
from p2plog.runtime.node import Node

log = logging.getLogger("p2plog.node")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def run_node(config: Config, me: NodeConfig, data_dir: Path | None) -> None:
    """Run until a signal stops the node; an operating error exits 1 with one clear line."""
    node = Node(config, me, data_dir)
    failure: str | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, node)
            await node.run()
            nursery.cancel_scope.cancel()
    except* P2PLogError as eg:
        failure = str(_first(eg))
    except* OSError as eg:
        e = _first(eg)
        failure = f"cannot listen on {me.address}: {e}; is another node using that port?"
    if failure is not None:
        log.error("%s: %s", me.id, failure)
        print(f"p2plog run: node {me.id}: {failure}", file=sys.stderr)
        raise SystemExit(1)


def _first(eg: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _on_signals(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s: %s received; shutting down", node.me.id, signal.Signals(signum).name)
            await node.shutdown()
            return
