"""Real storage faults for tests: loop-mounted ext4 images, power loss, strace injection.

Commands and their verified behaviour are in FAULTS.md sections 7 and 9 (shared notes):

- ``ext4_image`` makes a fresh ext4 image (``truncate`` + ``mkfs.ext4 -q -F``), loop-mounts it
  under the test's ``tmp_path`` and always unmounts it again (``umount`` retried, ``umount -l``
  as the last resort). ``mount -o loop`` sets autoclear, so the loop device goes with the mount.
- ``shutdown_fs`` is power loss: ``EXT4_IOC_SHUTDOWN`` with NOLOGFLUSH drops every write that
  was not fsync'd, and every later I/O on the mount fails with EIO. ``remount`` brings the image
  back the way a reboot would (journal replay).
- ``need_root_tools`` / ``need_strace`` return a skip reason, or None when the fault can run.

Every subprocess call has a timeout; only mounts under pytest's own temporary directory are
ever unmounted by the safety net ``unmount_leftovers``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2  # 0: sync first, 1: flush the log, 2: drop everything unsynced
CMD_TIMEOUT_S = 60.0
ROOT_TOOLS = ("truncate", "mkfs.ext4", "mount", "umount", "losetup", "strace")


def run(
    cmd: Sequence[str | os.PathLike[str]], *, timeout: float = CMD_TIMEOUT_S, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command without stdin, capturing its output; raise with the output on failure."""
    argv = [os.fspath(c) for c in cmd]
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


# ------------------------------------------------------------------ skip checks


def need_strace() -> str | None:
    """Why strace fault injection cannot run here, or None if it can."""
    if shutil.which("strace") is None:
        return "strace is not installed (apt-get install strace)"
    try:
        probe = run(["strace", "-f", "-qq", "-o", "/dev/null", "true"], timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"strace cannot run: {e}"
    if probe.returncode != 0:
        return f"strace cannot trace here (ptrace denied?): {probe.stderr.strip()}"
    return None


def need_root_tools() -> str | None:
    """Why loop-mounted ext4 faults cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (loop mounts, the ext4 shutdown ioctl)"
    missing = [t for t in ROOT_TOOLS if shutil.which(t) is None]
    if missing:
        return (
            f"missing tools: {', '.join(missing)} "
            f"(apt-get install strace e2fsprogs util-linux mount)"
        )
    try:
        probe = run(["losetup", "-f"], timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"losetup failed: {e}"
    if probe.returncode != 0 or not probe.stdout.strip():
        return f"no free loop device: {probe.stderr.strip() or 'losetup -f printed nothing'}"
    return need_strace()


# ----------------------------------------------------------------------- mounts


def _unescape(field: str) -> str:
    """/proc/self/mounts escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts() -> list[tuple[str, Path, str]]:
    """(source, mountpoint, fstype) of every mount this process sees."""
    out = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((_unescape(parts[0]), Path(_unescape(parts[1])), parts[2]))
    return out


def is_mounted(mountpoint: Path) -> bool:
    target = Path(os.path.realpath(mountpoint))
    return any(m == target for _, m, _ in mounts())


def mount_image(image: Path, mountpoint: Path) -> None:
    run(["mount", "-o", "loop", image, mountpoint])


def unmount(mountpoint: Path, *, attempts: int = 5) -> None:
    """Unmount, retrying while busy; ``umount -l`` (lazy detach) as the last resort."""
    last = ""
    for attempt in range(attempts):
        if not is_mounted(mountpoint):
            return
        proc = run(["umount", mountpoint], timeout=30, check=False)
        if proc.returncode == 0:
            return
        last = proc.stderr.strip()
        time.sleep(0.2 * (attempt + 1))
    if is_mounted(mountpoint):
        run(["umount", "-l", mountpoint], timeout=30, check=False)
        warnings.warn(
            f"{mountpoint} was still busy after {attempts} tries ({last}); lazily detached",
            stacklevel=2,
        )


def image_of(mountpoint: Path) -> Path:
    """The image file ``ext4_image`` made for ``mountpoint``."""
    return mountpoint.with_name(mountpoint.name + ".img")


@contextlib.contextmanager
def ext4_image(tmp_path: Path, size_mb: int, name: str = "disk") -> Iterator[Path]:
    """A fresh ``size_mb`` MB ext4 file system loop-mounted at ``tmp_path/name``; yields the
    mountpoint (its image is ``image_of(mountpoint)``) and always unmounts it."""
    mountpoint = tmp_path / name
    image = image_of(mountpoint)
    run(["truncate", "-s", f"{size_mb}M", image])
    run(["mkfs.ext4", "-q", "-F", image])
    mountpoint.mkdir()
    try:
        mount_image(image, mountpoint)
        yield mountpoint
    finally:
        unmount(mountpoint)


def shutdown_fs(mountpoint: Path) -> None:
    """Power loss (FAULTS.md 7.3): un-fsync'd writes are dropped; later I/O returns EIO."""
    fd = os.open(mountpoint, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
    finally:
        os.close(fd)


def remount(image: Path, mountpoint: Path) -> None:
    """Unmount (the shut-down file system) and mount the image again, like a reboot."""
    unmount(mountpoint)
    mount_image(image, mountpoint)


# ------------------------------------------------------------------ safety net


def sweep_mounts(root: Path) -> list[Path]:
    """Unmount everything mounted at or under ``root``, deepest first; returns what it found."""
    root = Path(os.path.realpath(root))
    found = [m for _, m, _ in mounts() if m == root or root in m.parents]
    for m in sorted(set(found), key=lambda p: len(p.parts), reverse=True):
        unmount(m)
    return found


@pytest.fixture(scope="session", autouse=True)
def unmount_leftovers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Session safety net: nothing stays mounted under this session's temporary directory.

    Only this session's base directory is swept, so concurrent pytest runs are never touched.
    """
    yield
    if os.geteuid() != 0:
        return
    left = sweep_mounts(tmp_path_factory.getbasetemp())
    if left:
        warnings.warn(f"unmounted leftovers: {[str(p) for p in left]}", stacklevel=1)
