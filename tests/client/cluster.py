"""Helpers: a real p2plog cluster in this process (trio tasks, free 127.0.0.1 ports)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2plog.config import Config, load
from p2plog.runtime.node import Node
from p2plog.service.main import make_node
from p2plog.testing.proc import local_nodes, write_peers_toml

START_TIMEOUT_S = 10.0


def write_config(
    path: Path,
    ports: list[int],
    name: str = "test",
    tick_ms: int = 10,
    sections: Sequence[str] = (),
) -> Path:
    """The ``peers.toml`` of a test cluster (``p2plog.testing.proc``'s writer): nodes n1.. on
    127.0.0.1 at ``ports``, data in ``data/nX`` beside the file."""
    return write_peers_toml(path, {"name": name, "tick_ms": tick_ms}, local_nodes(ports), sections)


def cluster_config(
    tmp_path: Path, ports: list[int], name: str = "test", tick_ms: int = 10
) -> Config:
    """Written to ``tmp_path/peers.toml`` and read back as a node would read it."""
    return load(write_config(tmp_path / "peers.toml", ports, name, tick_ms))


@dataclass
class LocalCluster:
    config: Config
    nursery: trio.Nursery
    nodes: dict[str, Node] = field(default_factory=dict)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.config.nodes]

    async def start(self, nid: str) -> None:
        me = self.config.by_id[nid]  # type: ignore[index]
        node = make_node(self.config, me)
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await node.run(task_status=task_status)

        self.nodes[nid] = node
        self.scopes[nid] = scope
        with trio.fail_after(START_TIMEOUT_S):
            await self.nursery.start(run)

    def stop(self, nid: str) -> None:
        self.scopes[nid].cancel()

    async def wait_leader(self) -> str:
        """Until every node knows the same leader (a follower learns it a heartbeat later)."""
        with trio.fail_after(START_TIMEOUT_S):
            while True:
                leaders = {n.loop.replica.leader if n.loop else None for n in self.nodes.values()}
                if len(leaders) == 1 and None not in leaders:
                    leader = leaders.pop()
                    assert leader is not None
                    return leader
                await trio.sleep(0.01)
