"""The serving engine's worker thread: a crash fails every request in flight, none hangs."""

from __future__ import annotations

import threading
import time
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


def test_an_endpoint_engine_leaves_waiting_requests_in_the_bounded_queue(
        smollm2_tokenizer: Any) -> None:
    """The endpoint engine takes only the rows it can run, so the server's queue (and its 429)
    still holds the rest, instead of every request becoming a task waiting inside the engine."""
    from frugal.endpoint_engine import EndpointConfig, EndpointEngine
    from frugal.serving.engine import QueueFull

    from ..completions_server import CompletionsServer
    from ..conftest import lively_model

    with CompletionsServer(lively_model(), smollm2_tokenizer, name="tiny") as server:
        engine = EndpointEngine(EndpointConfig(base_url=server.base_url, model="tiny",
                                               concurrency=1), smollm2_tokenizer)
        serving = ServingEngine(engine, max_batch_size=1, max_waiting=2)
        serving.start()
        finished = threading.Semaphore(0)
        refused = 0
        budget = BudgetConfig(max_thinking_tokens=400, max_answer_tokens=2)  # about a second
        for i in range(6):
            time.sleep(0.05)  # time enough for an engine that drains the queue to do so
            try:
                serving.submit(f"Question {i}", budget, adapter=None, seed=None,
                               on_done=lambda result: finished.release())
            except QueueFull:
                refused += 1
        assert refused >= 3  # one row in flight and two waiting, at most
        for _ in range(6 - refused):
            assert finished.acquire(timeout=60)
        serving.stop()
