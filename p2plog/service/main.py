"""``python -m p2plog run``: one node process, with clean shutdown on SIGINT/SIGTERM.

This is where a node is built whole (``make_node``): the runtime's ``Node`` with this package's
client sessions plugged into its listener. The node sits below the sessions and never imports
them, so a record's path goes one way: session -> node -> Raft loop -> replica -> disk.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from p2plog.config import Config, NodeConfig
from p2plog.errors import P2PLogError
from p2plog.net.http import Site
from p2plog.runtime.node import Node
from p2plog.security.policy import NodeSecurity
from p2plog.service.session import serve_client

log = logging.getLogger("p2plog.node")
GC_GEN0_THRESHOLD = 20_000


def make_node(
    config: Config,
    me: NodeConfig,
    data_dir: Path | None = None,
    security: NodeSecurity | None = None,
) -> Node:
    """The node ``me`` of ``config``, serving clients with ``service.session``."""
    return Node(
        config,
        me,
        data_dir,
        security,
        serve_client=serve_client,
        http_handler=_http_site,
    )


def _http_site(node: Node) -> Site:
    """What the node's HTTP port serves. Imported here, when a node has one: the port's
    protocols (protobuf, the OTLP messages, RE2) cost a node without it memory it never uses."""
    from p2plog.service.http_api import handler_for

    return handler_for(node, node.grant_of)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def run_node(config: Config, me: NodeConfig, data_dir: Path | None) -> None:
    """Run until a signal stops the node; an operating error exits 1 with one clear line."""
    node = make_node(config, me, data_dir)
    failure: str | None = None
    # Fewer, larger young-generation collections: the hot path allocates many short-lived
    # containers per batch, and at the default threshold (700) gen-0 runs thousands of times
    # a second. Objects alive after start-up (config, the replayed state) are frozen out of
    # every later collection.
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 100)
    try:
        async with trio.open_nursery() as nursery:

            async def run_then_stop(task_status: trio.TaskStatus[int]) -> None:
                await node.run(task_status=task_status)
                nursery.cancel_scope.cancel()

            nursery.start_soon(_on_signals, node)
            await nursery.start(run_then_stop)
            gc.freeze()
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
