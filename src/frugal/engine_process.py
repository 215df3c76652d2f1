"""Start an inference engine's server as a child process, wait until it answers, stop it.

Shared by the engines frugal starts itself (`frugal.vllm_server`, `frugal.llama_cpp_server`):
a free loopback port, a log file, a child that dies with frugal (even by SIGKILL), a readiness
poll that reports the end of the log when the engine dies first, and a stop that takes down
the child's whole process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


class EngineStartError(RuntimeError):
    """An engine's server could not be started (or died); the message ends with its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_path(engine: str, port: int) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"frugal-{engine}-{port}.log"


def start(command: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Run `command` in its own session (so its whole group can be stopped), output to `log`."""
    with log.open("wb") as sink:
        return subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child: SIGTERM when frugal dies, even by SIGKILL, so no engine is left orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the caller's own stop still applies
        pass


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, *, engine: str,
               timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the log's end if the engine exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineStartError(
                f"{engine} exited with status {process.returncode} before it was ready; the "
                f"end of its log ({log}):\n{tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise EngineStartError(f"{engine} was not ready after {timeout:.0f} s; its log ({log}):\n"
                           f"{tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group (engines fork workers), then SIGKILL."""
    # The group even when the leader is gone: its workers may still be running.
    try:
        os.killpg(process.pid, signal.SIGTERM)  # start_new_session: the group id is its pid
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
