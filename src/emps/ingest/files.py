"""Opening claimed files safely, and the error that rejects a whole file. No pandas: the landing
watcher, a small always-on process, imports this through the landing zone module."""

from __future__ import annotations

import errno
import os
import stat
from typing import IO


class FileRejected(Exception):
    """The whole file is unusable; `reason` says why in the file owner's words."""

    def __init__(self, reason: str, **details):
        super().__init__(reason)
        self.reason = reason
        self.details = details


def open_regular(path: os.PathLike | str) -> IO[bytes]:
    """Open a claimed file for reading, never through a symbolic link and only if it is a
    regular file (a FIFO would block, a device has no end)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRejected(
                "the entry is a symbolic link; links are never followed: drop the file itself"
            ) from exc
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FileRejected("the entry is not a regular file (a pipe, socket or device)")
    return os.fdopen(fd, "rb")
