"""Fixtures of the storage tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2plog.storage.segmented_log import SegmentedLog

from .logdata import SEG


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Callable[..., SegmentedLog]]:
    """Open logs in tmp_path; every log still open at the end is closed."""
    logs: list[SegmentedLog] = []

    def _open(**kw: object) -> SegmentedLog:
        kw.setdefault("segment_bytes", SEG)
        lg = SegmentedLog(tmp_path, **kw)  # type: ignore[arg-type]
        logs.append(lg)
        return lg

    yield _open
    for lg in logs:
        if lg.segments:
            lg.close()
