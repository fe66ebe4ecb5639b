"""Helpers: a real p2plog cluster in this process (trio tasks, free 127.0.0.1 ports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2plog.config import Config, parse
from p2plog.runtime.node import Node

START_TIMEOUT_S = 10.0


def cluster_config(
    tmp_path: Path, ports: list[int], name: str = "test", tick_ms: int = 10
) -> Config:
    raw = {
        "cluster": {"name": name, "tick_ms": tick_ms},
        "node": [
            {"id": f"n{i + 1}", "address": f"127.0.0.1:{p}", "data_dir": f"data/n{i + 1}"}
            for i, p in enumerate(ports)
        ],
    }
    return parse(raw, tmp_path / "peers.toml")


def write_peers_toml(path: Path, ports: list[int], name: str = "test") -> None:
    lines = [f'[cluster]\nname = "{name}"\ntick_ms = 10\n']
    for i, p in enumerate(ports):
        lines.append(
            f'[[node]]\nid = "n{i + 1}"\naddress = "127.0.0.1:{p}"\ndata_dir = "data/n{i + 1}"\n'
        )
    path.write_text("\n".join(lines))


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
        node = Node(self.config, me)
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
                leaders = {n.loop.node.leader if n.loop else None for n in self.nodes.values()}
                if len(leaders) == 1 and None not in leaders:
                    leader = leaders.pop()
                    assert leader is not None
                    return leader
                await trio.sleep(0.01)
