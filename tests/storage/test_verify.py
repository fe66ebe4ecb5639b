"""``verify``: the offline check reports progress through a callback (storage never draws on a
terminal; the CLI does), and the CLI's bar stays off when asked or when stderr is no terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from p2plog import cli
from p2plog.progress_bar import ProgressBar
from p2plog.storage.segmented_log import SegmentedLog
from p2plog.storage.verify import verify

from .logdata import run


def make_dir(d: Path, n: int = 300) -> None:
    log = SegmentedLog(d, segment_bytes=1 << 16)
    try:
        log.append_batch(run(1, n), None, sync=True)
    finally:
        log.close()


def test_progress_reaches_the_total_in_steps_that_never_go_back(tmp_path: Path) -> None:
    make_dir(tmp_path)
    seen: list[tuple[int, int]] = []
    rep = verify(tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert rep.ok, rep.problems
    assert rep.last_index == 300
    assert seen, "no progress reported"
    dones = [d for d, _ in seen]
    assert dones == sorted(dones)
    assert seen[-1] == (rep.bytes, rep.bytes)
    assert {t for _, t in seen} == {rep.bytes}


def test_verify_without_a_callback(tmp_path: Path) -> None:
    make_dir(tmp_path, 10)
    assert verify(tmp_path).ok


def test_bar_draws_percentages_on_one_line() -> None:
    out = io.StringIO()
    bar = ProgressBar("verify", out)
    for done in (0, 5, 10, 500, 1000):
        bar.update(done, 1000)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 4  # 0% twice (0 and 5 of 1000) is drawn once
    assert text.endswith("100% 0.0/0.0 GB\n")


def test_cli_draws_no_bar_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_dir(tmp_path, 10)
    assert cli.main(["verify", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "OK" in captured.out
    assert "\r" not in captured.err
