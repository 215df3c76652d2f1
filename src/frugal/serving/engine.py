"""The serving engine: one decode loop in a worker thread, fed by a queue of requests.

Requests from any thread become `Job`s in a `QueueSource`. The worker runs the budget-forcing
engine's continuous batching over that source: when it is idle it waits for work and then a
short window for more (dynamic batching), and while it decodes, new requests take free slots at
once. Rows of different adapters share a batch (PEFT's mixed-batch LoRA). Each request gets its
tokens through a callback as they are decided (streaming) and its result when it ends; a request
whose client went away is dropped from the queue before its prompt is processed, or cancelled at
the next step when it is decoding. The queue is bounded: a full one refuses new requests
(`QueueFull`, which the API answers with 429) instead of letting waits grow without end. No web
framework is imported here.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from frugal.generation import Continuation, Engine, GenerationResult, Job


class QueueFull(Exception):
    """The queue holds its maximum of waiting requests; `retry_after_s` is a fair wait."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"{waiting} requests are waiting; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class QueueSource:
    """A bounded `JobSource` that requests are put into from other threads; jobs cancelled while
    they wait are handed to `on_dropped` instead of the decode loop."""

    def __init__(self, window_s: float = 0.01, max_waiting: int | None = None,
                 on_dropped: Callable[[Job], None] | None = None) -> None:
        self.window_s = window_s
        self.max_waiting = max_waiting
        self.on_dropped = on_dropped
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, job: Job, retry_after_s: Callable[[int], int] = lambda waiting: 1) -> None:
        with self._ready:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._drop_cancelled()
            if self.max_waiting is not None and len(self._jobs) >= self.max_waiting:
                raise QueueFull(len(self._jobs), retry_after_s(len(self._jobs)))
            self._jobs.append(job)
            self._ready.notify()

    def _drop_cancelled(self) -> None:
        """Forget the jobs whose clients left while they waited (the lock is held)."""
        if not any(job.cancelled and job.cancelled() for job in self._jobs):
            return
        kept: deque[Job] = deque()
        for job in self._jobs:
            if job.cancelled and job.cancelled():
                if self.on_dropped:
                    self.on_dropped(job)
            else:
                kept.append(job)
        self._jobs = kept

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def take(self, n: int, *, idle: bool) -> list[Job]:
        with self._ready:
            if idle:
                # Nothing is decoding: sleep until a request comes, then give its neighbours a
                # few milliseconds to arrive so they share the first forward pass.
                self._ready.wait_for(lambda: self._jobs or self._closed, timeout=0.5)
                if self._jobs and len(self._jobs) < n:
                    deadline = time.monotonic() + self.window_s
                    while len(self._jobs) < n and (left := deadline - time.monotonic()) > 0:
                        self._ready.wait(timeout=left)
            self._drop_cancelled()
            return [self._jobs.popleft() for _ in range(min(n, len(self._jobs)))]

    def waiting(self) -> int:
        return len(self._jobs)

    def exhausted(self) -> bool:
        return self._closed and not self._jobs


@dataclass
class Ticket:
    """A request in flight: its callbacks, and a flag the web layer sets when the client leaves."""

    on_token: Callable[[int, str, bool], None] | None
    on_done: Callable[[GenerationResult], None]
    on_error: Callable[[BaseException], None] | None = None
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    ended_by_stop: bool = False  # cancelled because its text reached a stop string


class ServingEngine:
    """Runs the decode loop in a daemon thread; `submit` may be called from any thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_size: int = 16,
        window_s: float = 0.01,
        max_waiting: int | None = None,
        on_step: Callable[[int], None] | None = None,
        on_cancelled: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.source = QueueSource(window_s, max_waiting, on_dropped=self._dropped)
        self.on_step = on_step
        self.on_cancelled = on_cancelled  # with "queued" or "decoding"
        self._finished_at: deque[float] = deque(maxlen=64)  # when recent requests ended
        self._tickets: dict[int, Ticket] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        # Busy time: seconds with at least one request in flight, for dollars per token.
        self._in_flight = 0
        self._busy_since = 0.0
        self.busy_seconds = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="frugal-decode", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.source.close()
        if self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(
        self,
        prompt: str,
        budget: Any,
        *,
        adapter: str | None,
        seed: int | None,
        on_done: Callable[[GenerationResult], None],
        on_token: Callable[[int, str, bool], None] | None = None,
        live: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
        prompt_ids: list[int] | None = None,
        continuation: Continuation | None = None,
    ) -> Ticket:
        """Queue one request; raises `QueueFull` when the queue is at its maximum."""
        if self.failure is not None:
            raise RuntimeError(f"the decode loop stopped: {self.failure!r}")
        ticket = Ticket(on_token=on_token, on_done=on_done, on_error=on_error)
        index = next(self._ids)

        def tokens(token_id: int, section: Any, forced: bool) -> None:
            if ticket.on_token:
                ticket.on_token(token_id, str(section), forced)

        with self._lock:
            self._tickets[index] = ticket
            if self._in_flight == 0:
                self._busy_since = time.monotonic()
            self._in_flight += 1
        try:
            self.source.put(Job(
                prompt, budget, index=index, seed=seed, adapter=adapter, on_token=tokens,
                live=live,
                cancelled=lambda: ticket.cancelled,
                on_error=lambda error: self._fail_one(index, error),
                prompt_ids=prompt_ids, continuation=continuation,
            ), self._retry_after)
        except BaseException:  # shutting down: the request never entered the queue
            self._forget(index)
            raise
        if self.failure is not None:  # the loop died while this was queued: nobody will answer
            self._fail_one(index, self.failure)
        return ticket

    def waiting(self) -> int:
        """Requests in the queue, not yet decoding."""
        return self.source.waiting()

    def _retry_after(self, waiting: int) -> int:
        """Seconds the waiting requests take to drain at the recent pace of completions."""
        finished = list(self._finished_at)
        if len(finished) < 2 or finished[-1] <= finished[0]:
            return 1
        per_second = (len(finished) - 1) / (finished[-1] - finished[0])
        return max(1, min(60, round(waiting / per_second)))

    def _dropped(self, job: Job) -> None:
        if self._forget(job.index) is not None and self.on_cancelled:
            self.on_cancelled("queued")

    def busy_now(self) -> float:
        """Busy seconds so far, the running stretch included."""
        with self._lock:
            running = time.monotonic() - self._busy_since if self._in_flight else 0.0
            return self.busy_seconds + running

    def _forget(self, index: int) -> Ticket | None:
        with self._lock:
            ticket = self._tickets.pop(index, None)
            if ticket is not None:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self.busy_seconds += time.monotonic() - self._busy_since
        return ticket

    def _fail_one(self, index: int, error: BaseException) -> None:
        """One request failed on its own (an engine server refused it): only it gets the error."""
        ticket = self._forget(index)
        if ticket is not None and ticket.on_error is not None:
            ticket.on_error(error)

    def _finish(self, result: GenerationResult) -> None:
        ticket = self._forget(result.index)
        if ticket is None:
            return
        if result.finish_reason == "cancelled" and not ticket.ended_by_stop:
            if self.on_cancelled:
                self.on_cancelled("decoding")
        else:
            self._finished_at.append(time.monotonic())
        ticket.on_done(result)

    def _loop(self) -> None:
        try:
            self.engine.run_jobs(
                self.source, self.max_batch_size, self._finish, on_step=self.on_step
            )
        except BaseException as error:  # the server reports it on /health and refuses work
            self.failure = error
            self.source.close()  # later requests are refused at once (503)
            # Nobody may wait forever: every request still in flight gets the error.
            for index in list(self._tickets):
                ticket = self._forget(index)
                if ticket is not None and ticket.on_error is not None:
                    ticket.on_error(error)
            raise
