"""The console in a real browser (issue 17): Debian's headless Chromium, driven by selenium
through chromium-driver, opens the console of a follower of a 3-node cluster; a record sent
with the CLI shows in the live tail within 2 s; killing the leader shows the new leader within
2 s; a screenshot is saved (``P2PLOG_ARTIFACTS`` if set, else the test's directory).

Selenium calls block, so each runs in a worker thread; every wait is bounded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from .conftest import started
from .harness import Cluster

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
T = TypeVar("T")

if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser test: apt-get install chromium chromium-driver")
    pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def _browser() -> Any:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM or ""
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    return driver


async def _in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(fn)


async def _until(what: str, check: Callable[[], T | None], timeout_s: float) -> tuple[T, float]:
    """Poll ``check`` (in a thread) until it returns a value; that value and the seconds it
    took. Bounded by ``timeout_s``."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        got = await _in_thread(check)
        if got is not None:
            return got, time.monotonic() - t0
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout_s} s")
        await trio.sleep(0.05)


async def test_console_shows_records_live_and_the_new_leader_after_a_kill(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    artifacts = Path(os.environ.get("P2PLOG_ARTIFACTS", tmp_path))
    await trio.Path(artifacts).mkdir(parents=True, exist_ok=True)
    c = Cluster(tmp_path, http=True)
    async with started(c, request):
        lead = await c.leader()
        viewer = next(n for n in c.ids if n != lead)
        driver = await _in_thread(_browser)
        try:
            url = f"http://127.0.0.1:{c.http_ports[viewer]}/"
            await _in_thread(lambda: driver.get(url))

            def rows() -> dict[str, str] | None:
                got = {
                    tr.get_attribute("data-node"): tr.get_attribute("data-role")
                    for tr in driver.find_elements(By.CSS_SELECTOR, "#cluster tr")
                }
                return got if len(got) == 3 and "leader" in got.values() else None

            seen, _ = await _until("the cluster table", rows, 15)
            assert {k for k, v in seen.items() if v == "leader"} == {lead}

            msg = f"hello console {uuid.uuid4()}"
            cmd = [sys.executable, "-m", "p2plog", "send", "--config", str(c.config_path), msg]
            with trio.fail_after(20):
                done = await trio.run_process(cmd, stdin=subprocess.DEVNULL, capture_stdout=True)
            assert done.returncode == 0

            def in_tail() -> bool | None:
                cells = driver.find_elements(By.CSS_SELECTOR, "#tail td.msg")
                return True if any(msg == td.text for td in cells) else None

            _, took = await _until("the sent record in the live tail", in_tail, 2.0)
            print(f"\nrecord in the live tail {took * 1000:.0f} ms after `send` returned")

            c.kill(lead, signal.SIGKILL)
            t_kill = time.monotonic()

            def new_leader() -> str | None:
                shown = driver.find_element(By.ID, "leader").text
                return shown if shown not in (lead, "none", "?", "") else None

            shown, _ = await _until("a new leader in the console", new_leader, 2.0)
            took = time.monotonic() - t_kill
            shot = artifacts / "console-leader-kill.png"
            await _in_thread(lambda: driver.save_screenshot(str(shot)))
            print(
                f"new leader {shown} shown {took * 1000:.0f} ms after the kill; screenshot {shot}"
            )
            assert shown in c.ids
            assert shot.stat().st_size > 10_000
        finally:
            await _in_thread(driver.quit)
