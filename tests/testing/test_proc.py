"""The process harness tested on its own (``p2plog.testing.proc``): the one peers.toml writer
gives what the node's config loader reads back, and the process side reaps, keeps CPU time,
tells a crash from a kill, and SIGKILLs a node that ignores SIGTERM. The "nodes" here are
small Python programs, so these tests need no cluster and take a few seconds."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import trio

from p2plog.config import load
from p2plog.testing.proc import (
    NodeEntry,
    ProcCluster,
    Secured,
    local_nodes,
    make_security,
    section,
    write_peers_toml,
)

TIMEOUT_S = 20.0


def test_the_written_peers_toml_is_what_the_node_reads(tmp_path: Path) -> None:
    sec = make_security(tmp_path, ["n1", "n2"], Secured(tokens={"w": "write"}))
    ntp = section("ntp", {"servers": ["127.0.0.1:1123"], "poll_interval_s": 2})
    keys = {"name": 'odd "name" \\ here', "tick_ms": 15, "max_conn_requests": 64}
    path = write_peers_toml(
        tmp_path / "peers.toml", keys, local_nodes([7001, 7002]), [*sec.sections, *ntp]
    )
    cfg = load(path)
    assert cfg.cluster.name == 'odd "name" \\ here'
    assert (cfg.cluster.tick_ms, cfg.cluster.max_conn_requests) == (15, 64)
    assert [(n.id, n.address) for n in cfg.nodes] == [
        ("n1", "127.0.0.1:7001"),
        ("n2", "127.0.0.1:7002"),
    ]
    assert cfg.nodes[1].data_dir == (tmp_path / "data" / "n2").resolve()
    assert cfg.ntp.servers == ("127.0.0.1:1123",)
    assert set(sec.tokens) == {"admin", "w"}


def test_a_node_without_data_dir_keeps_the_default(tmp_path: Path) -> None:
    path = write_peers_toml(tmp_path / "p.toml", {}, [NodeEntry("a", "127.0.0.1:9")])
    assert load(path).nodes[0].data_dir.name == "a"


class Programs(ProcCluster):
    """A cluster whose "nodes" run ``program`` instead of ``python -m p2plog run``."""

    program = "import time; time.sleep(60)"

    def node_command(self, nid: str) -> list[str]:
        return [sys.executable, "-c", self.program]


async def wait_logged(c: ProcCluster, text: str) -> None:
    """Until every node's log holds ``text`` (bounded by count and time)."""
    with trio.fail_after(TIMEOUT_S):
        for _ in range(int(TIMEOUT_S / 0.02) + 2):
            if all(text in c.logs(n) for n in c.ids):
                return
            await trio.sleep(0.02)


async def test_stop_all_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    c = Programs(tmp_path, n=1)
    c.program = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    await c.start_all()
    await wait_logged(c, "ready")
    with trio.fail_after(TIMEOUT_S):
        out = await c.stop_all(timeout_s=0.3)
    assert out == {"n1": {"exit_code": None, "killed": True}}
    assert not c.nodes["n1"].alive
    assert c.nodes["n1"].exit_codes == [-signal.SIGKILL]


async def test_a_killed_incarnation_keeps_its_cpu_and_is_no_crash(tmp_path: Path) -> None:
    c = Programs(tmp_path, n=2)
    c.program = (
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
        "print('busy done', flush=True)\ntime.sleep(60)"
    )
    await c.start_all()
    try:
        await wait_logged(c, "busy done")
        with trio.fail_after(TIMEOUT_S):
            c.kill("n1", signal.SIGKILL)
            assert await c.wait_exit("n1") == -signal.SIGKILL
            c.program = "raise SystemExit(3)"
            await c.restart("n1")
            assert await c.wait_exit("n1") == 3
        assert c.cpu_s("n1") >= 0.25  # the first incarnation's, read from wait4's rusage
        assert c.nodes["n1"].exit_codes == [-signal.SIGKILL, 3]
        assert c.dead() == [f"n1 (pid {c.pid('n1')}) exited with code 3"]
        assert c.live() == ["n2"]
        assert "===== harness: start #2 of n1" in c.logs("n1")
    finally:
        await c.stop_all()
    assert c.live() == []
