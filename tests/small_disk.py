"""Small file systems made by a test, so free space runs out for real: a tmpfs of a few MB.

`tmpfs` mounts one where every process sees it (PostgreSQL's server too); that needs root.
`run_on_small_disk` runs a scenario in a forked child with a mount namespace of its own: the
mount is the child's alone and vanishes with it, even when the test is killed. As root the
child only unshares its mounts; otherwise it also enters a user namespace in which it may mount
(what `unshare --user --map-root-user --mount` does). Only where neither works is the test
skipped, saying so.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MB = 1024 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_mb` MB at `path` (made if missing) until the block ends."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(path)], check=True)  # a file still open


def fill_until_free(folder: Path, free_bytes: int) -> Path:
    """A ballast file in `folder` taking all but about `free_bytes` of its file system."""
    ballast = folder / "ballast"
    size = shutil.disk_usage(folder).free - free_bytes
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if size > 0:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return ballast


def fill_up(folder: Path) -> Path:
    """A ballast file in `folder` taking every free byte of its file system."""
    ballast = folder / "ballast"
    with ballast.open("ab") as out:
        block = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                out.write(block)
                out.flush()
    return ballast


class _CannotMount(Exception):
    pass


def _own_mount_namespace() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS if os.geteuid() == 0 else CLONE_NEWNS | CLONE_NEWUSER
    if libc.unshare(flags) != 0:
        error = ctypes.get_errno()
        raise _CannotMount(
            f"cannot mount a small file system: not root, and no user namespace "
            f"(unshare: {os.strerror(error)}); run as root or allow unprivileged user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1)"
        )
    if flags & CLONE_NEWUSER:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    # Mounts made here must not propagate to the namespace the child came from.
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True)


def run_on_small_disk(
    path: Path, size_mb: int, scenario: Callable[[], None], timeout_s: float = 300
) -> None:
    """Run `scenario` in a forked child that sees a tmpfs of `size_mb` MB mounted at `path`
    (processes outside the child, PostgreSQL's server among them, do not). An exception in the
    scenario fails the test with the child's traceback."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        status = 1
        try:
            _own_mount_namespace()
            with tmpfs(path, size_mb):
                scenario()
            status = 0
        except _CannotMount as exc:
            os.write(write_end, f"SKIP {exc}".encode())
            status = 2
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(write_end)
    output = b""
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([read_end], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            output += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    if os.WIFSIGNALED(status):
        pytest.fail(f"the scenario did not end within {timeout_s:g} s (killed)\n{text}")
    code = os.WEXITSTATUS(status)
    if code == 2 and text.startswith("SKIP "):
        pytest.skip(text.removeprefix("SKIP "))
    if code:
        pytest.fail(f"the scenario on the small disk failed:\n{text}", pytrace=False)
