"""One writer per run directory: an advisory lock that the OS releases when its holder dies.

Two processes writing one run directory would both pay the teacher for the same questions, lose
each other's ledger entries and each spend the whole cost cap. Every stage that writes takes
`.frugal.lock` in the run directory with `fcntl.flock` (exclusive, non-blocking): a second writer
fails at once with the holder's pid and command. A crash, SIGKILL included, closes the file and so
releases the lock; no stale lock is ever left to clean up. The lock is re-entrant within a process
(`frugal run` holds it while each stage takes it again). Readers (`frugal serve`, the report
read-outs) do not take it.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from frugal.names import check_run_dir
from frugal.run_files import LOCK_FILE

_held: dict[Path, tuple[int, int]] = {}  # resolved run dir -> (file descriptor, depth)
_guard = threading.Lock()

P = ParamSpec("P")
R = TypeVar("R")


class RunDirectoryBusy(OSError):
    """Another process holds the run directory (an OSError, like EBUSY)."""


@contextmanager
def hold(run_dir: str | Path) -> Iterator[None]:
    """Hold the run directory's lock for the body; raise RunDirectoryBusy if another has it."""
    run_dir = check_run_dir(run_dir)  # before anything is created in a parent directory
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
        else:
            _held[key] = (_acquire(key), 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                os.close(fd)  # closing releases the flock


def locks_run_dir(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function with a `run_dir` parameter: it runs holding that run directory."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        run_dir = signature.bind_partial(*args, **kwargs).arguments["run_dir"]
        with hold(run_dir):
            return function(*args, **kwargs)

    return wrapper


def locks_run_dir_on_main_rank(function: Callable[P, R]) -> Callable[P, R]:
    """Like `locks_run_dir`, for a stage that runs under torchrun/accelerate (training): the
    main process holds the lock for every rank; the other ranks write nothing it does not
    coordinate. Outside a distributed launch it is `locks_run_dir`."""
    locked = locks_run_dir(function)

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if distributed and int(os.environ.get("RANK", "0")) != 0:
            return function(*args, **kwargs)
        return locked(*args, **kwargs)

    return wrapper


def _acquire(run_dir: Path) -> int:
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _describe_holder(fd)
        os.close(fd)
        raise RunDirectoryBusy(
            f"{run_dir} is in use by {holder}. One process writes a run directory at a time: "
            "wait for it to finish or stop it, or use another run directory."
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # Who holds it, for the message a second writer gets; the lock itself is the flock.
    record = json.dumps({
        "pid": os.getpid(),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:300],
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode("utf-8"), 0)
    return fd


def _describe_holder(fd: int) -> str:
    try:
        info: dict[str, Any] = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} ({info.get('command', '?')}, since {info.get('since', '?')})"
    except (ValueError, KeyError, OSError):
        return "another process (its pid was not written yet)"
