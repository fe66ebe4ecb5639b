"""``python -m p2plog run``: one node process, with clean shutdown on SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import trio

from p2plog.config import Config, NodeConfig
from p2plog.runtime.node import Node

log = logging.getLogger("p2plog.node")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def run_node(config: Config, me: NodeConfig, data_dir: Path | None) -> None:
    node = Node(config, me, data_dir)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_on_signals, node)
        await node.run()
        nursery.cancel_scope.cancel()


async def _on_signals(node: Node) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s: %s received; shutting down", node.me.id, signal.Signals(signum).name)
            await node.shutdown()
            return
