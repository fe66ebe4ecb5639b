"""``p2plog query | head -2`` and the like: a reader that stops early ends the CLI quietly
(exit 0, nothing on stderr), for query (JSON and text) and tail. The CLI runs as a real
process (``python -m p2plog``) against the in-process cluster; every wait is bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from p2plog.cli import main
from p2plog.client import make_record, open_client

from .cluster import LocalCluster

TIMEOUT_S = 30.0  # a process start (imports) plus a connect, on a loaded machine
RECORDS = 20


def cli(cluster: LocalCluster, *argv: str) -> list[str]:
    return [sys.executable, "-m", "p2plog", *argv, "--addr", ",".join(cluster.addresses)]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("P2PLOG_")}


async def fill(cluster: LocalCluster) -> None:
    async with open_client(cluster.addresses) as c:
        await c.submit([make_record(f"record {i}") for i in range(RECORDS)])


@pytest.mark.parametrize(
    "argv",
    [
        ("query", "--json"),
        ("query",),
        ("tail", "--from-index", "1", "--limit", str(RECORDS), "--json"),
    ],
)
async def test_reader_gone_before_the_first_line(
    cluster: LocalCluster, argv: tuple[str, ...]
) -> None:
    await fill(cluster)
    r, w = os.pipe()
    os.close(r)  # nobody will read: the first write (or the flush at the end) gets EPIPE
    try:
        with trio.fail_after(TIMEOUT_S):
            done = await trio.run_process(
                cli(cluster, *argv), stdout=w, capture_stderr=True, check=False, env=env()
            )
    finally:
        os.close(w)
    assert (done.returncode, done.stderr.decode()) == (0, "")


async def test_tail_into_head_2(cluster: LocalCluster, tmp_path: Path) -> None:
    """``tail | head -2``: the reader leaves after two lines while tail waits for more; the
    next record tail writes finds the pipe closed, and tail ends quietly."""
    await fill(cluster)
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err, trio.fail_after(TIMEOUT_S):
        proc = await trio.lowlevel.open_process(
            cli(cluster, "tail", "--from-index", str(RECORDS - 1), "--json"),
            stdout=subprocess.PIPE,
            stderr=err,
            env=env(),
        )
        try:
            assert proc.stdout is not None
            got = b""
            while got.count(b"\n") < 2:
                chunk = await proc.stdout.receive_some()
                assert chunk, "tail ended before two lines"
                got += chunk
            await proc.stdout.aclose()  # head -2 exits
            await fill(cluster)  # tail has more to write
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert got.count(b"\n") == 2
    assert (code, err_path.read_text()) == (0, "")


def test_broken_pipe_inside_an_exception_group_is_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nursery may wrap the error; only a group of nothing but broken pipes is quiet."""

    def fail(group: BaseExceptionGroup[BaseException]) -> None:
        def dispatch(_: object) -> int:
            raise group

        monkeypatch.setattr("p2plog.cli._dispatch", dispatch)

    fail(ExceptionGroup("tail", [BrokenPipeError(32, "Broken pipe")]))
    assert main(["status"]) == 0
    fail(ExceptionGroup("tail", [BrokenPipeError(32, "Broken pipe"), KeyError("x")]))
    with pytest.raises(ExceptionGroup) as info:
        main(["status"])
    assert info.group_contains(KeyError)
