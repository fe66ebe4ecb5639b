"""The real poller against a real NTP server: chrony on 127.0.0.1 at a free non-default port.

Set up exactly as ../shared/FAULTS.md section 6: the config has no ``server``/``pool`` line, so
chronyd contacts nothing; ``-x`` leaves the system clock alone; ``-d`` keeps it in the
foreground, so the pid we hold is chronyd's own and we kill exactly that. Skipped unless chronyd
is installed (CI: ``.ci/run`` installs chrony) and we are root (chronyd drops to ``_chrony``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import ntplib
import pytest
import trio

from p2plog.clock.estimator import ClockEstimator
from p2plog.clock.ntp_poller import NtpPoller

CHRONYD = shutil.which("chronyd")
pytestmark = [
    pytest.mark.skipif(CHRONYD is None, reason="chronyd is not installed (apt-get install chrony)"),
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="needs root: chronyd started as root drops to _chrony (FAULTS.md section 6)",
    ),
]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def chrony_port(tmp_path: Path) -> Iterator[int]:
    assert CHRONYD is not None
    port = free_udp_port()
    assert port != 123
    conf = tmp_path / "chrony.conf"
    conf.write_text(
        f"port {port}\n"
        "bindaddress 127.0.0.1\n"
        "allow 127.0.0.0/8\n"
        "local stratum 8\n"
        "cmdport 0\n"
        "bindcmdaddress /\n"
        f"pidfile {tmp_path}/chronyd.pid\n"
        f"driftfile {tmp_path}/drift\n",
        encoding="utf-8",
    )
    (tmp_path / "chronyd.pid").unlink(missing_ok=True)
    with (tmp_path / "chrony.log").open("wb") as logf:
        proc = subprocess.Popen(
            [CHRONYD, "-x", "-d", "-f", str(conf)], stdout=logf, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:  # bounded wait until it answers
            assert proc.poll() is None, (tmp_path / "chrony.log").read_text()
            try:
                ntplib.NTPClient().request("127.0.0.1", version=4, port=port, timeout=0.2)
                break
            except (ntplib.NTPException, OSError):
                assert time.monotonic() < deadline, "chronyd did not answer within 10 s"
                time.sleep(0.1)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def test_real_poller_against_local_chrony(chrony_port: int) -> None:
    est = ClockEstimator()
    spec = f"127.0.0.1:{chrony_port}"
    poller = NtpPoller(
        [spec], est, poll_interval_s=1, timeout_s=1, burst=4, burst_interval_s=0.2, node="t"
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(poller.run)
            await poller.wait_first_round()
            for _ in range(300):  # the burst: 4 polls 0.2 s apart
                if len(est.samples) >= 4:
                    break
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    status = est.status(time.time_ns())
    assert status["synced"] is True
    assert status["source"] == spec
    assert status["samples"] >= 4
    # Same host, same clock: the true offset is 0; allow for thread scheduling on a busy CI box.
    assert abs(status["offset_ms"]) < 5, status
    assert 0 <= status["delay_ms"] < 50, status
    assert poller.statistics()["servers"][0]["failures"] == 0
