"""A server in a child process: a free port for it, its start, the wait until it answers, its stop.

`emps up` (emps.supervisor) waits for its services with `wait_until_answers`; the tests and the
benches start the servers they drive or measure (the API, the dashboard, the model server) with
`serving`, so they start them the way the platform does and report a failed start alike.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


class ServerDidNotStart(RuntimeError):
    """A server exited, or did not answer its health URL in time; the message ends with its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (for a server; or closed, for a client)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(log: Path, lines: int = 15) -> str:
    """The last `lines` lines of a server's log, headed by its path, for an error message."""
    tail = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []
    return f"Last lines of {log}:\n" + "\n".join(tail)


def answers(url: str) -> bool:
    """The server at `url` answers without a server error (a 503 "not ready yet" is no answer)."""
    try:
        return httpx.get(url, timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def start(
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `argv` with `env` (and nothing on its stdin), its output appended to `log`; with
    `new_session`, in a process group of its own (a Ctrl-C in the terminal does not reach it)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


def wait_until_answers(
    name: str,
    process: subprocess.Popen[bytes],
    health_url: str,
    log: Path,
    timeout_s: float,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Return once `health_url` answers; raise ServerDidNotStart when `process` exits first or
    `timeout_s` passes. Return early, quietly, once `stopping()` says the wait is called off."""
    deadline = time.monotonic() + timeout_s
    while not stopping():
        if process.poll() is not None:
            raise ServerDidNotStart(
                f"{name} exited with code {process.returncode}. {log_tail(log)}"
            )
        if answers(health_url):
            return
        if time.monotonic() > deadline:
            raise ServerDidNotStart(
                f"{name} did not answer {health_url} within {timeout_s:.0f} s. {log_tail(log)}"
            )
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes], grace_s: float = 15) -> None:
    """Ask the process to stop (SIGTERM); kill it if it has not within `grace_s` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class Served:
    """A server `serving` started: its base URL and its process."""

    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def serving(
    name: str,
    argv: Sequence[str],
    port: int,
    health_path: str,
    log: Path,
    env: Mapping[str, str],
    timeout_s: float = 120,
    cwd: Path | None = None,
    grace_s: float = 15,
) -> Iterator[Served]:
    """Run `argv` (a server listening on 127.0.0.1:`port`) with `env`, its output appended to
    `log`; yield once `health_path` answers, stop it afterwards (SIGTERM, SIGKILL after
    `grace_s` seconds)."""
    process = start(argv, log, env, cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(name, process, url + health_path, log, timeout_s)
        yield Served(url, process)
    finally:
        stop(process, grace_s)
