"""Real-clock test rig: a local chrony NTP server and per-process faked wall clocks.

``ChronyServer`` runs ``chronyd`` on 127.0.0.1 at a free non-default UDP port, serving this
machine's real clock (``local stratum 8``, no ``server``/``pool`` line, so it contacts nothing;
``-x`` so it never touches the system clock; ``-d`` so the pid we hold is chronyd's own and we
kill exactly that). See ../shared/FAULTS.md section 6.

``faketime_env`` builds the environment of a child process whose *wall* clock is faked by the
PyPI ``libfaketime`` package's vendored ``.so`` (LD_PRELOAD), with the monotonic clock left
alone (``FAKETIME_DONT_FAKE_MONOTONIC=1``; faking it breaks thread timeouts, FAULTS.md
section 5). A clock is an offset, a rate (drift: ``x1.0001`` is +100 ppm) and optionally a
timestamp file that can be rewritten while the process runs to make its clock jump.

``need_clock_tools()`` says why these tests cannot run here (``None`` when they can).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import ntplib

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_SO_RELPATH = ("vendor", "libfaketime", "src", "libfaketime.so.1")


def free_udp_port(host: str = HOST) -> int:
    """A free UDP port on ``host`` (never 123)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if port != 123:
            return port
    raise RuntimeError("no free UDP port found")


def chronyd_path() -> str | None:
    return shutil.which("chronyd") or next(
        (p for p in ("/usr/sbin/chronyd", "/sbin/chronyd") if os.access(p, os.X_OK)), None
    )


def libfaketime_so() -> Path | None:
    """The path of the PyPI ``libfaketime`` package's vendored ``libfaketime.so.1``, found
    without importing the package (its import has side effects on some versions)."""
    spec = importlib.util.find_spec("libfaketime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        so = Path(loc).joinpath(*_SO_RELPATH)
        if so.is_file():
            return so
    return None


def need_clock_tools() -> str | None:
    """A reason to skip the real-clock tests, or ``None`` if root, chronyd and libfaketime are
    all here."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: chronyd started as root drops to _chrony (FAULTS.md section 6)"
    if chronyd_path() is None:
        return "chronyd is not installed (apt-get install chrony)"
    if libfaketime_so() is None:
        return "the PyPI libfaketime package is not installed (pip install libfaketime)"
    return None


# ------------------------------------------------------------------------------- faketime


def faketime_spec(offset_s: float = 0.0, rate: float = 1.0) -> str:
    """A libfaketime relative spec: ``+3s``, ``-5.25s``, ``+0s x1.0001``."""
    spec = f"{offset_s:+.6f}".rstrip("0").rstrip(".") + "s"
    if rate != 1.0:
        spec += f" x{rate:.9f}".rstrip("0")
    return spec


def write_timestamp_file(path: Path, offset_s: float, rate: float = 1.0) -> None:
    """(Re)write a ``FAKETIME_TIMESTAMP_FILE``: a process reading it with
    ``FAKETIME_NO_CACHE=1`` follows the new offset within a fraction of a second.

    Written to a temp file and renamed, so a reader never sees it half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(faketime_spec(offset_s, rate) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def faketime_env(
    offset_s: float = 0.0,
    rate: float = 1.0,
    *,
    timestamp_file: Path | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a process whose wall clock reads true time + ``offset_s`` and runs
    at ``rate`` (its monotonic clock is untouched). With ``timestamp_file`` the spec is read
    from that file on every clock read (``FAKETIME_NO_CACHE=1``); the file is written here
    with ``offset_s``/``rate`` and may be rewritten later with ``write_timestamp_file`` to jump.
    """
    so = libfaketime_so()
    if so is None:
        raise RuntimeError("the PyPI libfaketime package is not installed")
    env = dict(os.environ if base is None else base)
    for k in ("FAKETIME", "FAKETIME_TIMESTAMP_FILE", "FAKETIME_NO_CACHE"):
        env.pop(k, None)
    preload = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = f"{so}:{preload}" if preload else str(so)
    env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    env["DONT_FAKE_MONOTONIC"] = "1"
    if timestamp_file is not None:
        write_timestamp_file(timestamp_file, offset_s, rate)
        env["FAKETIME_TIMESTAMP_FILE"] = str(timestamp_file)
        env["FAKETIME_NO_CACHE"] = "1"
    else:
        env["FAKETIME"] = faketime_spec(offset_s, rate)
    return env


# --------------------------------------------------------------------------------- chrony


@dataclass(slots=True)
class ChronyServer:
    """chronyd serving the real clock on ``127.0.0.1:port``; ``start()``/``stop()`` or use it
    as a context manager. Its config, pidfile, driftfile and log live in ``rundir`` (a fresh
    temp dir unless given)."""

    rundir: Path | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _own_dir: bool = False

    @property
    def spec(self) -> str:
        """The ``[ntp] servers`` entry for this server."""
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.rundir is not None
        return self.rundir / "chrony.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return ""

    def start(self, timeout_s: float = START_TIMEOUT_S) -> int:
        """Start chronyd and wait (bounded) until it answers an NTP query; returns the port."""
        chronyd = chronyd_path()
        if chronyd is None:
            raise RuntimeError("chronyd is not installed")
        if self.proc is not None:
            raise RuntimeError(f"chronyd already running (pid {self.proc.pid})")
        if self.rundir is None:
            self.rundir = Path(tempfile.mkdtemp(prefix="p2plog-chrony-"))
            self._own_dir = True
        # chronyd drops to _chrony: let it write its pidfile/driftfile there.
        os.chmod(self.rundir, 0o777)
        self.port = self.port or free_udp_port()
        conf = self.rundir / "chrony.conf"
        pidfile = self.rundir / "chronyd.pid"
        conf.write_text(
            f"port {self.port}\n"
            f"bindaddress {HOST}\n"
            "allow 127.0.0.0/8\n"
            "local stratum 8\n"
            "cmdport 0\n"
            "bindcmdaddress /\n"
            f"pidfile {pidfile}\n"
            f"driftfile {self.rundir}/drift\n",
            encoding="utf-8",
        )
        pidfile.unlink(missing_ok=True)
        with self.log_path.open("wb") as logf:
            self.proc = subprocess.Popen(
                [chronyd, "-x", "-d", "-f", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        client = ntplib.NTPClient()
        for _ in range(10_000):  # bounded by count and by the deadline
            if self.proc.poll() is not None:
                out = self.log_text()
                self.proc = None
                raise RuntimeError(f"chronyd exited at start:\n{out}")
            try:
                client.request(HOST, version=4, port=self.port, timeout=0.2)
                return self.port
            except (ntplib.NTPException, OSError):
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"chronyd did not answer within {timeout_s} s:\n{self.log_text()}")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Kill chronyd by its pid (SIGTERM, a bounded wait, then SIGKILL); remove an own dir."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if self._own_dir and self.rundir is not None:
            shutil.rmtree(self.rundir, ignore_errors=True)
            self.rundir = None
            self._own_dir = False

    def __enter__(self) -> ChronyServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "ChronyServer",
    "chronyd_path",
    "faketime_env",
    "faketime_spec",
    "free_udp_port",
    "libfaketime_so",
    "need_clock_tools",
    "write_timestamp_file",
]
