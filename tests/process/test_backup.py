"""``p2plog backup`` of a running cluster under load, ``p2plog restore`` of it into every node of
a fresh cluster: every record acked before the backup's index is there, identical, and the new
cluster takes writes. The backup runs as the operator would run it, as a command on the node's
host while the node runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

from .conftest import started
from .harness import Cluster, WriterStats, make_records, write_records


async def _cli(*args: str) -> tuple[int, str]:
    with trio.fail_after(60):
        p = await trio.run_process(
            [sys.executable, "-m", "p2plog", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return p.returncode, (p.stdout + p.stderr).decode()


async def test_backup_under_load_restores_into_a_fresh_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bk = tmp_path / "backup"
    for d in ("old", "new"):
        (tmp_path / d).mkdir()
    old = Cluster(tmp_path / "old", cluster_keys={"segment_bytes": 1 << 18})
    stats = WriterStats()
    async with started(old, request):
        lead = await old.leader()
        node = next(n for n in old.ids if n != lead)  # a follower: its applied index lags
        backed_up = trio.Event()

        async def load() -> None:  # until the backup is done (at most 100 x 2,000 records)
            for k in range(100):
                chunk = make_records(2_000, f"load{k}")
                await write_records(old.port(lead), chunk, stats, batch=200, concurrency=2)
                if backed_up.is_set():
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            await trio.sleep(1.0)
            rc, out = await _cli(
                "backup", "--config", str(old.config_path), "--node", node, str(bk)
            )
            backed_up.set()
            assert rc == 0, out
        manifest = json.loads((bk / "manifest.json").read_text())
        upto = manifest["record_index"]
        assert 0 < upto < max(a[0] for a in stats.acked.values()), "no write after the backup"
        before = [r for r in await old.query_all(lead) if r["index"] <= upto]

    rc, out = await _cli("verify", str(bk))
    assert rc == 0, out
    new = Cluster(tmp_path / "new")
    for nid in new.ids:
        rc, out = await _cli("restore", str(bk), "--data-dir", str(new.nodes[nid].data_dir))
        assert rc == 0, out
    async with started(new, request):
        after = {}
        for nid in new.ids:
            rows = await new.query_all(nid)
            after[nid] = [r for r in rows if r["index"] <= upto]
        for nid, rows in after.items():
            assert rows == before, f"{nid}: {len(rows)} records vs {len(before)} before"
        acked = {i: (a[0], a[1]) for i, a in stats.acked.items() if a[0] <= upto}
        stored = {r["id"]: (r["index"], r["term"]) for r in before}
        missing = [i for i in acked if stored.get(i) != acked[i]]
        assert not missing, f"{len(missing)} records acked before the backup index are not there"
        fresh = make_records(100, "fresh")
        more = WriterStats()
        await write_records(new.port(await new.leader()), fresh, more, batch=50, concurrency=1)
        assert len(more.acked) == 100
        assert min(a[0] for a in more.acked.values()) > upto
