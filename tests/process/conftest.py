"""Fixtures of the multi-process tests: a started 3-node cluster, torn down by pid, whose node
logs are attached to the report of any failing test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest

from .harness import Cluster

CLUSTER_KEY = pytest.StashKey[Cluster]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    rep = yield
    cluster = item.stash.get(CLUSTER_KEY, None)
    if rep.failed and cluster is not None:
        for nid in cluster.ids:
            rep.sections.append((f"node {nid} log (tail)", cluster.log_tail(nid, 80)))
    return rep


@contextlib.asynccontextmanager
async def started(c: Cluster, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Start ``c``, wait for a leader, and stop every node by pid afterwards; a failing
    test's report gets every node's log."""
    request.node.stash[CLUSTER_KEY] = c
    try:
        await c.start_all()
        await c.leader(timeout_s=15.0)
        yield c
    finally:
        await c.stop_all()


@pytest.fixture
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with started(Cluster(tmp_path), request) as c:
        yield c
