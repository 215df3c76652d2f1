"""The serving engine's worker thread: a crash fails every request in flight, none hangs."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from frugal.generation import BudgetConfig
from frugal.serving.engine import ServingEngine


class Crashes:
    """A decode engine that takes one job and then fails, like a kernel error mid-batch."""

    def run_jobs(self, source: Any, batch_size: int, finish: Any, on_step: Any = None) -> None:
        while not source.take(batch_size, idle=True):
            pass
        raise RuntimeError("kernel failure")


def test_a_crash_reaches_every_waiting_request_and_refuses_new_ones() -> None:
    engine = ServingEngine(Crashes(), max_batch_size=4)  # type: ignore[arg-type]
    errors: list[BaseException] = []
    failed = threading.Event()

    def on_error(error: BaseException) -> None:
        errors.append(error)
        failed.set()

    engine.submit("prompt", BudgetConfig(), adapter=None, seed=None,
                  on_done=lambda result: None, on_error=on_error)
    engine.start()
    assert failed.wait(10)
    engine._thread.join(10)  # type: ignore[union-attr]
    assert "kernel failure" in str(errors[0]) and engine._in_flight == 0
    assert not engine.alive and engine.failure is not None
    with pytest.raises(RuntimeError, match="decode loop stopped"):
        engine.submit("again", BudgetConfig(), adapter=None, seed=None, on_done=lambda r: None)
