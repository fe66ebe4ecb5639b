"""Fixture: a fresh 3-node cluster per test, stopped when the test ends."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from p2plog.testing.ports import free_ports

from .cluster import LocalCluster, cluster_config


@pytest.fixture
async def cluster(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[LocalCluster]:
    logging.getLogger("p2plog").setLevel(logging.WARNING)
    c = LocalCluster(cluster_config(tmp_path, free_ports(3)), nursery)
    for n in c.config.nodes:
        await c.start(n.id)
    await c.wait_leader()
    yield c
    nursery.cancel_scope.cancel()
