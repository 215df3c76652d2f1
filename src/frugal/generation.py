"""Budget-forced generation: one batched decode loop that keeps the KV cache (s1, section 3.1).

Each row of a batch carries its own state (section, token counts, Waits so far) and a queue of
forced tokens. Every step feeds exactly one token per live row: the next forced token if the
queue has one, else the token sampled from the model. So:
- when thinking reaches `max_thinking_tokens`, the end-of-thinking delimiter and the answer prefix
  ("Final Answer:") are queued and the model then writes the answer;
- when the model tries to end its thinking (samples the end-of-thinking marker or the end of turn)
  before `min_thinking_tokens`, or before `num_waits` Waits were inserted, the marker is dropped
  and "Wait" is queued instead.

Nothing is ever re-encoded: the prompt is prefilled once. Where the end-of-thinking marker is plain
text spanning several tokens, the tokens already fed are dropped by masking their cache slots
out of the attention, the same mechanism that hides left padding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from frugal.decode_batch import SlotBatch
from frugal.reasoning_format import ReasoningFormat
from frugal.settings.budget import BudgetConfig


class Section(StrEnum):
    THINKING = "thinking"
    DELIMITER = "delimiter"  # end-of-thinking marker: structure, counted in neither budget
    ANSWER = "answer"


@dataclass
class GenerationResult:
    """One row's output; `token_ids`, `forced` and `sections` are aligned token by token."""

    index: int  # position of the row in the caller's input list
    prompt: str
    text: str
    thinking: str
    answer: str
    thinking_tokens: int
    answer_tokens: int
    waits: int
    forced_max: bool
    finish_reason: str  # "end_of_turn", "max_answer_tokens" or "length" (step limit)
    token_ids: list[int]
    forced: list[bool]
    sections: list[str]

    @property
    def forced_token_ids(self) -> list[int]:
        return [t for t, f in zip(self.token_ids, self.forced, strict=True) if f]


TokenCallback = Callable[[int, Section, bool], None]


@dataclass
class Job:
    """One row of work: a prompt that ends with the opened thinking section, and how to run it.

    `adapter` names a PEFT adapter for this row alone ("__base__": none), so rows of different
    adapters share one batch (PEFT's mixed-batch LoRA); None runs the model as loaded.
    `on_token(token_id, section, forced)` sees every token as it is decided, and `cancelled()`
    returning True ends the row at its next step (finish reason "cancelled"). `live` says the
    caller needs the tokens while they are generated (a streaming client, or stop strings that
    end the row early): the local engine decides token by token anyway, but an endpoint engine
    then asks its server for a few tokens at a time rather than a whole section at once.
    `on_error(error)`, where an engine can fail one row alone (a server refusing one request),
    gets that row's failure and the other rows go on; without it the failure ends the run.
    `prompt_ids`, when given, are the prompt's tokens as the caller already has them (a served
    token-id prompt); `continuation` turns budget forcing off for this row.
    """

    prompt: str
    budget: BudgetConfig
    index: int = 0
    seed: int | None = None
    adapter: str | None = None
    on_token: TokenCallback | None = None
    live: bool = False
    cancelled: Callable[[], bool] | None = None
    on_error: Callable[[BaseException], None] | None = None
    prompt_ids: list[int] | None = None
    continuation: Continuation | None = None


@dataclass(frozen=True)
class Continuation:
    """A plain continuation of the prompt, as a completions server does it: up to
    `budget.max_answer_tokens` tokens, all in the answer section, ending at a token of
    `stop_token_ids` or at the end of turn (unless `ignore_eos`). The served `/v1/completions`
    uses it when its client drives the thinking itself (it stops on the end-of-thinking marker,
    as frugal's endpoint engine and s1's code do) or the prompt is not inside a thinking section.
    """

    stop_token_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False


class JobSource(Protocol):
    """Where the decode loop gets work: a fixed list, or a server's queue that never ends."""

    def take(self, n: int, *, idle: bool) -> list[Job]:
        """Up to `n` jobs; with `idle` (nothing decoding) it may block until work arrives."""
        ...

    def waiting(self) -> int:
        """Jobs ready to be taken now."""
        ...

    def exhausted(self) -> bool:
        """True when no job is waiting and none will ever come again."""
        ...


class ListSource:
    """A fixed list of jobs, shortest prompt first: newcomers are rarely longer than the cache,
    so joining a running batch rarely re-pads it."""

    def __init__(self, jobs: Sequence[Job], encode: Callable[[str], list[int]]) -> None:
        lengths = {id(job): len(job.prompt_ids or encode(job.prompt)) for job in jobs}
        self._pending = deque(sorted(jobs, key=lambda job: lengths[id(job)]))

    def take(self, n: int, *, idle: bool) -> list[Job]:
        return [self._pending.popleft() for _ in range(min(n, len(self._pending)))]

    def waiting(self) -> int:
        return len(self._pending)

    def exhausted(self) -> bool:
        return not self._pending


@dataclass
class _Row:
    """Decode state of one row; `cols` are the cache columns its generated tokens occupy."""

    index: int  # position in the caller's input list (seeds sampling)
    generator: torch.Generator | None
    job: Job
    prompt_ids: list[int]
    wait_ids: list[int]
    prefix_ids: list[int]
    warpers: LogitsProcessorList
    step_limit: int
    end_ids: set[int]  # tokens that end the row's answer (its turn, or a continuation's stops)
    section: Section = Section.THINKING
    token_ids: list[int] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    queue: deque[tuple[int, Section]] = field(default_factory=deque)
    thinking_tokens: int = 0
    answer_tokens: int = 0
    waits: int = 0
    forced_max: bool = False
    finish_reason: str | None = None
    position: int = 0  # position id of the next token fed
    steps: int = 0  # decode steps taken, refused markers included
    rollback: int = 0  # fed thinking tokens to drop before the next step (a refused marker)
    relabel: int = 0  # fed thinking tokens that turned out to start the model's own marker

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def budget(self) -> BudgetConfig:
        return self.job.budget


class Engine(ABC):
    """What every generating stage needs: budget-forced rows for prompts or jobs.

    Two implementations: `BudgetForcingEngine` (frugal's own decode loop on transformers, the
    default) and `frugal.endpoint_engine.EndpointEngine` (any OpenAI-compatible completions
    server, such as vLLM, with the same semantics driven from the client). Both own a
    `format` (the tokenizer's `ReasoningFormat`) and run `Job`s; the helpers below build jobs.
    """

    format: ReasoningFormat

    def generate(
        self,
        questions: Sequence[str],
        budget: BudgetConfig | None = None,
        *,
        system: str | None = None,
        batch_size: int = 8,
        logits_processor: LogitsProcessorList | None = None,
        on_row_done: Callable[[GenerationResult], None] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[GenerationResult]:
        """Generate for each question, in input order, `batch_size` rows at a time."""
        prompts = [self.format.generation_prompt(q, system) for q in questions]
        return self.generate_prompts(
            prompts,
            budget,
            batch_size=batch_size,
            logits_processor=logits_processor,
            on_row_done=on_row_done,
            seeds=seeds,
        )

    def generate_prompts(
        self,
        prompts: Sequence[str],
        budget: BudgetConfig | None = None,
        *,
        batch_size: int = 8,
        logits_processor: LogitsProcessorList | None = None,
        on_row_done: Callable[[GenerationResult], None] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[GenerationResult]:
        """Like `generate`, for prompts that already end with the opened thinking section.

        With sampling, row i is seeded by `seeds[i]` when given, else by `budget.seed` and i.

        Up to `batch_size` rows decode together; when a row finishes, the next prompt takes its
        slot at once (continuous batching). Results come back in input order.
        """
        budget = budget or BudgetConfig()
        jobs = [
            Job(prompt, budget, index=i, seed=seeds[i] if seeds else None)
            for i, prompt in enumerate(prompts)
        ]
        results: list[GenerationResult | None] = [None] * len(prompts)

        def finish(result: GenerationResult) -> None:
            results[result.index] = result
            if on_row_done:
                on_row_done(result)

        self.run_jobs(ListSource(jobs, self.format.encode), batch_size, finish, logits_processor)
        return [r for r in results if r is not None]

    def result_of(self, row: Any) -> GenerationResult:
        """A finished row as a result: its text parsed by the format, its counts as kept.

        `row` has the job and the per-token record every engine keeps (`token_ids`, `forced`,
        `sections`, the section counts, Waits, `forced_max`, `finish_reason`).
        """
        text = self.format.tokenizer.decode(row.token_ids)
        parsed = self.format.parse(text)
        return GenerationResult(
            index=row.job.index,
            prompt=row.job.prompt,
            text=text,
            thinking=parsed.thinking,
            answer=parsed.answer,
            thinking_tokens=row.thinking_tokens,
            answer_tokens=row.answer_tokens,
            waits=row.waits,
            forced_max=row.forced_max,
            finish_reason=row.finish_reason or "length",
            token_ids=row.token_ids,
            forced=row.forced,
            sections=[str(s) for s in row.sections],
        )

    @abstractmethod
    def run_jobs(
        self,
        source: JobSource,
        batch_size: int,
        finish: Callable[[GenerationResult], None],
        logits_processor: LogitsProcessorList | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Run every job `source` hands out, calling `finish` with each row's result."""


class BudgetForcingEngine(Engine):
    """Batched generation with budget forcing for one model and its reasoning format."""

    def __init__(self, model: Any, tokenizer: Any, fmt: ReasoningFormat | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.format = fmt or ReasoningFormat.for_tokenizer(tokenizer)
        self._stop_id = self.format.stop_token_id
        self._end_ids = self.format.end_of_turn_ids
        self._think_end_ids = self.format.encode(self.format.think_end)
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else next(iter(self._end_ids), 0)
        self._encoded: dict[str, list[int]] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def run_jobs(
        self,
        source: JobSource,
        batch_size: int,
        finish: Callable[[GenerationResult], None],
        logits_processor: LogitsProcessorList | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Decode every job `source` hands out, calling `finish` with each row's result as it
        ends and `on_step` with the number of rows of each forward pass; returns when the
        source is exhausted and the batch has drained."""
        with torch.inference_mode():
            self._decode(source, batch_size, logits_processor, finish, on_step)

    def _decode(
        self,
        source: JobSource,
        batch_size: int,
        logits_processor: LogitsProcessorList | None,
        finish: Callable[[GenerationResult], None],
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        batch = SlotBatch(self.model, self._pad_id, capacity=batch_size, adapter_of=_row_adapter)
        while True:
            free = batch.free_slots()
            jobs = source.take(free, idle=batch.live == 0) if free else []
            if jobs:
                rows = [self._new_row(job) for job in jobs]
                batch.admit([row.prompt_ids for row in rows], rows)
            if not batch.live:
                if source.exhausted():
                    return
                continue
            assert batch.logits is not None
            logits = batch.logits
            if logits_processor:
                logits = logits_processor(self._history(batch), logits)
            sampled = self._sample(logits, batch.owners)
            tokens: list[int | None] = []
            positions: list[int] = []
            for slot, row in enumerate(batch.owners):
                choice = None
                if row is not None and row.job.cancelled and row.job.cancelled():
                    row.finish_reason = "cancelled"
                elif row is not None and row.steps < row.step_limit:
                    row.steps += 1
                    choice = self._choose(row, sampled[slot])
                if choice is not None and not row.done:
                    self._record(row, *choice, column=batch.next_column)
                    if row.rollback:
                        self._roll_back(row, batch, slot)
                    tokens.append(choice[0])
                    positions.append(row.position - 1)
                    continue
                if row is not None:  # finished: end of turn, answer cap, limit or cancelled
                    if choice is not None:
                        self._record(row, *choice, column=batch.next_column)
                    row.finish_reason = row.finish_reason or "length"
                    finish(self._result(row))
                    batch.release(slot)
                tokens.append(None)
                positions.append(0)
            if any(t is not None for t in tokens):
                if batch.live < len(batch.owners) and not (source.waiting() and batch.free_slots()):
                    # Rows left and nobody takes their slots: stop computing for them.
                    keep = [s for s, row in enumerate(batch.owners) if row is not None]
                    batch.compact()
                    tokens = [tokens[s] for s in keep]
                    positions = [positions[s] for s in keep]
                batch.step(tokens, positions)
                if on_step:
                    on_step(sum(t is not None for t in tokens))
            else:
                batch.compact()

    def _new_row(self, job: Job) -> _Row:
        budget = job.budget
        prompt_ids = job.prompt_ids or self.format.encode(job.prompt)
        return _Row(
            index=job.index,
            generator=self._generator(budget, job.index, job.seed),
            job=job,
            prompt_ids=prompt_ids,
            wait_ids=self._encode_cached(budget.wait_text),
            prefix_ids=self._encode_cached(budget.answer_prefix) if budget.answer_prefix else [],
            warpers=self._warpers(budget),
            # Refused markers cost steps without adding tokens, so allow twice the token budget.
            step_limit=2 * (budget.max_thinking_tokens + budget.max_answer_tokens) + 64,
            end_ids=continuation_end_ids(job, self._end_ids),
            section=Section.ANSWER if job.continuation else Section.THINKING,
            position=len(prompt_ids),
        )

    def _encode_cached(self, text: str) -> list[int]:
        if text not in self._encoded:
            self._encoded[text] = self.format.encode(text)
        return self._encoded[text]

    @staticmethod
    def _history(batch: SlotBatch) -> torch.Tensor:
        """Prompt plus generated ids per slot, left padded: the input logits processors expect."""
        rows = [row.prompt_ids + row.token_ids if row is not None else [] for row in batch.owners]
        width = max(len(r) for r in rows)
        history = torch.full((len(rows), width), batch.pad_id, dtype=torch.long)
        for r, ids in enumerate(rows):
            if ids:
                history[r, width - len(ids) :] = torch.tensor(ids)
        return history.to(batch.device)

    # -- the budget-forcing policy -------------------------------------------------------------

    def _choose(self, row: _Row, sampled: int) -> tuple[int, Section, bool] | None:
        """The token this row feeds next as (id, section, forced), or None when it finished."""
        budget, wait_ids, prefix_ids = row.budget, row.wait_ids, row.prefix_ids
        if row.section == Section.THINKING and row.thinking_tokens >= budget.max_thinking_tokens:
            queued_thinking = row.queue and row.queue[0][1] == Section.THINKING
            if not row.queue or queued_thinking:  # the maximum beats a half-inserted Wait
                row.queue.clear()
                row.forced_max = True
                self._queue_answer_start(row, self._think_end_ids, prefix_ids)
        next_section = row.queue[0][1] if row.queue else row.section
        if next_section == Section.ANSWER and row.answer_tokens >= budget.max_answer_tokens:
            row.finish_reason = "max_answer_tokens"  # the cap holds for a forced prefix too
            return None
        if row.queue:
            token_id, section = row.queue.popleft()
            return token_id, section, True
        if row.section == Section.ANSWER:
            if sampled in row.end_ids:
                row.finish_reason = "end_of_turn"
            return sampled, Section.ANSWER, False
        # Thinking: does this token end it?
        ends_with_marker, rollback = self._ends_thinking(row, sampled)
        if not ends_with_marker and sampled not in self._end_ids:
            return sampled, Section.THINKING, False
        must_continue = row.thinking_tokens - rollback < budget.min_thinking_tokens
        if must_continue or row.waits < budget.num_waits:
            row.rollback = rollback
            row.waits += 1
            row.queue.extend((t, Section.THINKING) for t in wait_ids)
            token_id, section = row.queue.popleft()
            return token_id, section, True
        if ends_with_marker:
            # The model closed its thinking itself: keep its marker, complete the delimiter.
            row.relabel = rollback
            self._queue_answer_start(row, self._rest_of_delimiter(row, sampled, rollback), [])
            return sampled, Section.DELIMITER, False
        # It ended its turn inside thinking: open the answer section so it still answers.
        self._queue_answer_start(row, self._think_end_ids, prefix_ids)
        token_id, section = row.queue.popleft()
        return token_id, section, True

    def _ends_thinking(self, row: _Row, sampled: int) -> tuple[bool, int]:
        """Whether `sampled` completes the end-of-thinking marker, and how many already-fed
        thinking tokens belong to that marker (they are dropped or relabelled)."""
        if self._stop_id is not None:
            return sampled == self._stop_id, 0
        stop = self.format.think_end_stop
        tail = row.token_ids[-len(stop) :]  # a marker of n characters spans at most n tokens
        if stop not in self.tokenizer.decode(tail + [sampled]):
            return False, 0
        tail_sections = row.sections[-len(tail) :] if tail else []
        for k in range(len(tail) + 1):
            if k and tail_sections[-k] != Section.THINKING:
                break
            piece = self.tokenizer.decode(tail[len(tail) - k :] + [sampled])
            if stop in piece:
                return True, k
        return False, 0

    def _rest_of_delimiter(self, row: _Row, sampled: int, rollback: int) -> list[int]:
        """Delimiter tokens still to force after the model wrote the start of the marker."""
        written = self.tokenizer.decode(row.token_ids[len(row.token_ids) - rollback :] + [sampled])
        rest = self.format.think_end.split(self.format.think_end_stop, 1)[1]
        after_marker = written.split(self.format.think_end_stop, 1)[1]
        if not rest.startswith(after_marker):
            return []
        return self.format.encode(rest[len(after_marker) :])

    @staticmethod
    def _queue_answer_start(row: _Row, delimiter: list[int], prefix: list[int]) -> None:
        row.queue.extend((t, Section.DELIMITER) for t in delimiter)
        row.queue.extend((t, Section.ANSWER) for t in prefix)

    # -- bookkeeping ---------------------------------------------------------------------------

    @staticmethod
    def _record(
        row: _Row, token_id: int, section: Section, forced: bool, *, column: int
    ) -> None:
        if row.job.on_token:
            row.job.on_token(token_id, section, forced)
        row.token_ids.append(token_id)
        row.forced.append(forced)
        row.sections.append(section)
        row.cols.append(column)
        row.position += 1
        if section == Section.THINKING:
            row.thinking_tokens += 1
        elif section == Section.ANSWER:
            row.answer_tokens += 1
            row.section = Section.ANSWER
        else:
            row.section = Section.DELIMITER if row.queue else Section.ANSWER
        if row.relabel:  # the model's own marker began in tokens counted as thinking
            for i in range(len(row.sections) - 1 - row.relabel, len(row.sections) - 1):
                row.sections[i] = Section.DELIMITER
            row.thinking_tokens -= row.relabel
            row.relabel = 0

    @staticmethod
    def _roll_back(row: _Row, batch: SlotBatch, slot: int) -> None:
        """Drop the fed thinking tokens of a marker the row may not keep; the Wait just recorded
        after them stays and takes their place in the cache and in the position ids."""
        k, row.rollback = row.rollback, 0
        dropped = slice(len(row.token_ids) - 1 - k, len(row.token_ids) - 1)
        batch.hide(slot, row.cols[dropped])
        del row.token_ids[dropped], row.forced[dropped], row.sections[dropped], row.cols[dropped]
        row.thinking_tokens -= k
        row.position -= k

    def _result(self, row: _Row) -> GenerationResult:
        return self.result_of(row)

    # -- sampling ------------------------------------------------------------------------------

    @staticmethod
    def _generator(
        budget: BudgetConfig, index: int, seed: int | None = None
    ) -> torch.Generator | None:
        # One generator per input row, seeded by its index (or its own seed): a row samples
        # the same tokens whichever other rows share its batch.
        if budget.temperature == 0:
            return None
        if seed is None:
            seed = budget.seed * 1_000_003 + index
        return torch.Generator().manual_seed(seed)

    @staticmethod
    def _warpers(budget: BudgetConfig) -> LogitsProcessorList:
        warpers = LogitsProcessorList()
        if budget.temperature > 0:
            warpers.append(TemperatureLogitsWarper(budget.temperature))
            if budget.top_p < 1.0:
                warpers.append(TopPLogitsWarper(budget.top_p))
        return warpers

    @staticmethod
    def _sample(logits: torch.Tensor, rows: list[_Row | None]) -> list[int]:
        chosen = logits.argmax(dim=-1).tolist()  # greedy rows: every row at once
        for r, row in enumerate(rows):
            if row is not None and row.warpers:
                warped = row.warpers(None, logits[r : r + 1])
                probs = torch.softmax(warped, dim=-1)[0].cpu()
                chosen[r] = int(torch.multinomial(probs, 1, generator=row.generator))
        return chosen


def continuation_end_ids(job: Job, end_of_turn_ids: Iterable[int]) -> set[int]:
    """The tokens that end a row's answer: the end of turn, or a continuation's own stops."""
    if job.continuation is None:
        return set(end_of_turn_ids)
    ends = set() if job.continuation.ignore_eos else set(end_of_turn_ids)
    return ends | set(job.continuation.stop_token_ids)


def _row_adapter(row: _Row | None) -> str | None:
    return row.job.adapter if row is not None else None
