"""Trainer callbacks: the training bar (on the events channel) and `train-log.jsonl`.

Both read what the Trainer already tracks (`state.global_step`, `state.num_input_tokens_seen`,
the logged loss and learning rate); tokens per second count real tokens, which with packing and
padding-free batches is every token the model saw.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from frugal.events import Events
from frugal.run_files import write_jsonl


class _Rate:
    """Tokens per second since the start of this process's training."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_tokens: int | None = None

    def __call__(self, tokens: int) -> float:
        if self.first_tokens is None:  # a resumed run starts with the tokens seen before it
            self.first_tokens = tokens
            self.started = time.perf_counter()
            return 0.0
        elapsed = time.perf_counter() - self.started
        return (tokens - self.first_tokens) / elapsed if elapsed > 0 else 0.0


class EventsProgressCallback(TrainerCallback):
    """The training bar, on the events channel: steps, loss, learning rate, tokens per second."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.bar: Any = None
        self.steps = 0
        self.rate = _Rate()
        self._open = ExitStack()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps = state.global_step  # a resumed training starts where its checkpoint ended
        self.bar = self._open.enter_context(self.events.progress(
            "train", state.max_steps, self.steps, loss="-", lr="-", tokens_per_second=0))
        self.rate(int(state.num_input_tokens_seen))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.advance(state.global_step - self.steps,
                             tokens_per_second=round(self.rate(int(state.num_input_tokens_seen))))
            self.steps = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.update(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._open.close()
        self.bar = None


class AlreadyFinished(Exception):  # noqa: N818 - a signal, not an error
    """A resumed training whose checkpoint already holds every step: nothing to train."""


class StopIfFinished(TrainerCallback):
    """End a resume from the checkpoint of the last step before it trains anything.

    The Trainer checks for the end of training only after a step, so resumed at its last step
    it would train one step more than planned (and than an uninterrupted run). By the time
    `on_train_begin` runs, the checkpoint's weights and state are loaded; raising there leaves
    the trainer holding exactly the finished training. Added before the progress bar, so no
    live display is left running.
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise AlreadyFinished


class JsonlLogCallback(TrainerCallback):
    """Appends every log event (loss, learning rate, tokens/s) to a JSONL file, rank 0 only.

    Training starts at step 0 or at the step of the checkpoint it resumes from; what the log
    holds beyond that step was logged by an interrupted process and is about to be trained and
    logged again, so it is dropped first: every step appears once.
    """

    def __init__(self, path: Path, rank: int = 0) -> None:
        self.path = Path(path)
        self.rank = rank
        self.rate = _Rate()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rate(int(state.num_input_tokens_seen))
        if self.rank == 0:
            trim_log_to_step(self.path, state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if self.rank != 0 or not logs:
            return
        tokens = int(state.num_input_tokens_seen)
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            "tokens_seen": tokens,
            "tokens_per_second": round(self.rate(tokens), 2),
            **logs,
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def trim_log_to_step(path: Path, step: int) -> None:
    """Trim a training log to what happened up to `step`: its records of earlier steps, and
    the training record of `step` itself (logged before that step's checkpoint was saved).
    A line cut short by a kill is dropped too. The file is rewritten atomically."""
    if not path.is_file():
        return
    kept, changed = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            at = int(record["step"])
        except (ValueError, KeyError, TypeError):
            changed = True
            continue
        if at < step or (at == step and "loss" in record):
            kept.append(record)
        else:
            changed = True
    if changed:
        write_jsonl(path, kept)
