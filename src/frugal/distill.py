"""`frugal distill`: ask a teacher for reasoning traces of the pool's questions.

Flow: read `pool.jsonl`; skip every question whose response is already in
`teacher-cache.sqlite`; let the teacher answer the rest, writing each response to the cache the
moment it arrives (before it is graded or used); then derive `traces.jsonl` from the cache,
grading every trace against the reference, and append what this invocation spent to
`ledger.json`. `--max-cost` stops issuing calls before the next one could cross the cap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from frugal.grading import grade
from frugal.ledger import TokenPrices, append_entry, compute_cost
from frugal.pool import read_pool
from frugal.questions import Question
from frugal.run_files import TEACHER_CACHE, TRACES, write_jsonl
from frugal.teacher_cache import TeacherCache, cache_key
from frugal.teachers.base import Teacher, TeacherResponse
from frugal.teachers.local import LocalTeacherConfig
from frugal.teachers.openai_teacher import OpenAITeacherConfig

TeacherKind = Literal["openai", "hf", "program", "dataset", "self"]


class DistillConfig(BaseModel):
    """Which teacher answers, what it costs, and when to stop paying."""

    model_config = ConfigDict(extra="forbid")

    teacher: TeacherKind = Field("program", description="Who writes the traces.")
    openai: OpenAITeacherConfig | None = Field(
        None, description="Endpoint, model and retries of the openai teacher."
    )
    local: LocalTeacherConfig = Field(
        default_factory=LocalTeacherConfig, description="Model of the hf and self teachers."
    )
    prices: TokenPrices = Field(default_factory=TokenPrices, description="Teacher token prices.")
    machine_price_per_hour: float = Field(
        0.0, ge=0, description="Dollars per hour of this machine, for local teachers' compute."
    )
    max_cost: float | None = Field(
        None, ge=0, description="Stop issuing teacher calls before spending more dollars."
    )
    limit: int | None = Field(None, ge=1, description="Distill only the first N pool questions.")


@dataclass
class DistillResult:
    traces_path: Path
    traces: list[dict[str, Any]]
    calls: int = 0  # responses received (and paid for) by this invocation
    failed: dict[str, str] = field(default_factory=dict)
    dollars: float = 0.0
    stopped_by_cost: bool = False
    seconds: float = 0.0

    @property
    def correct(self) -> int:
        return sum(t["correct"] for t in self.traces)


def make_teacher(config: DistillConfig) -> Teacher:
    if config.teacher == "openai":
        if config.openai is None:
            raise ValueError(
                "the openai teacher needs an endpoint and a model. Fix: pass --model (and "
                "--base-url for a local server), or set distill.openai in the recipe."
            )
        from frugal.teachers.openai_teacher import OpenAITeacher

        return OpenAITeacher(config.openai)
    if config.teacher in ("hf", "self"):
        from frugal.teachers.local import HFTeacher, SelfTeacher

        return (HFTeacher if config.teacher == "hf" else SelfTeacher)(config.local)
    from frugal.teachers.offline import DatasetTeacher, ProgramTeacher

    return ProgramTeacher() if config.teacher == "program" else DatasetTeacher()


class _CachingSink:
    """Writes each response to the cache first, keeps the cost cap, and drives the progress."""

    def __init__(
        self,
        teacher: Teacher,
        cache: TeacherCache,
        keys: dict[str, str],
        params: dict[str, Any],
        prices: TokenPrices,
        max_cost: float | None,
        progress: Progress,
        task: Any,
    ) -> None:
        self.teacher, self.cache, self.keys, self.params = teacher, cache, keys, params
        self.prices, self.max_cost = prices, max_cost
        self.progress, self.task = progress, task
        self.spent = 0.0
        self.reserved: dict[str, float] = {}
        self.calls = 0
        self.tokens = 0
        self.failed: dict[str, str] = {}
        self.stopped_by_cost = False
        self.cap_message = ""
        self.paid_before = 0.0

    def admit(self, question: Question, input_tokens: int, max_output_tokens: int) -> bool:
        if self.stopped_by_cost:
            return False
        estimate = self.prices.cost(input_tokens, max_output_tokens)
        committed = self.paid_before + self.spent + sum(self.reserved.values())
        if self.max_cost is not None and committed + estimate > self.max_cost:
            self.stopped_by_cost = True
            self.cap_message = (
                f"stopped issuing teacher calls: the next one could cost up to ${estimate:.4f}, "
                f"which would cross --max-cost ${self.max_cost:.4f} "
                f"(paid ${self.paid_before + self.spent:.4f} in this run directory, in flight "
                f"${committed - self.paid_before - self.spent:.4f})"
            )
            return False
        self.reserved[question.id] = estimate
        return True

    def put(self, question: Question, response: TeacherResponse) -> None:
        cost = self.prices.cost(
            response.input_tokens, response.output_tokens, response.cached_input_tokens
        )
        # Durable before anything else happens with it: this is the paid-for part.
        self.cache.put(
            self.keys[question.id],
            teacher=self.teacher.kind,
            model=self.teacher.model,
            question_id=question.id,
            request={"messages": self.teacher.messages(question), "params": self.params},
            response=response.to_dict(),
            cost=cost,
        )
        self.reserved.pop(question.id, None)
        self.spent += cost
        self.calls += 1
        self.tokens += response.input_tokens + response.output_tokens
        self._advance()

    def fail(self, question: Question, error: Exception) -> None:
        self.reserved.pop(question.id, None)
        self.failed[question.id] = str(error)
        self._advance()

    def _advance(self) -> None:
        self.progress.update(
            self.task, advance=1, tokens=self.tokens, dollars=self.spent, failed=len(self.failed)
        )


@dataclass
class Collected:
    """What one pass of a teacher over some questions did (responses live in the cache)."""

    keys: dict[str, str]
    calls: int
    tokens: int
    spent: float
    failed: dict[str, str]
    seconds: float
    cap_message: str | None
    interrupted: bool
    error: Exception | None = None


def collect(
    teacher: Teacher,
    questions: list[Question],
    cache: TeacherCache,
    *,
    prices: TokenPrices,
    max_cost: float | None,
    console: Console,
    label: str,
) -> Collected:
    """Ask `teacher` about every question not yet in `cache`, caching each answer on arrival."""
    # Once per run, not per question: local teachers fingerprint their weights on disk here.
    params = teacher.cache_params()
    keys = {
        q.id: cache_key(teacher.kind, teacher.model, teacher.messages(q), params)
        for q in questions
    }
    started = time.perf_counter()
    cached = cache.has(keys.values())
    todo = [q for q in questions if keys[q.id] not in cached]
    with _progress(console) as progress:
        task = progress.add_task(
            label, total=len(questions), completed=len(questions) - len(todo),
            tokens=0, dollars=0.0, failed=0,
        )
        sink = _CachingSink(teacher, cache, keys, params, prices, max_cost, progress, task)
        # The cap covers the run directory, not one invocation: what earlier runs paid counts.
        sink.paid_before = cache.total_cost()
        interrupted = False
        error: Exception | None = None
        try:
            if todo:
                teacher.run(todo, sink)
        except KeyboardInterrupt:
            interrupted = True  # everything received is already in the cache
        except Exception as failure:  # the caller records the spending, then re-raises
            error = failure
    return Collected(
        keys=keys, calls=sink.calls, tokens=sink.tokens, spent=sink.spent, failed=sink.failed,
        seconds=time.perf_counter() - started,
        cap_message=sink.cap_message if sink.stopped_by_cost else None,
        interrupted=interrupted,
        error=error,
    )


def run(
    config: DistillConfig, run_dir: Path, *, console: Console | None = None
) -> DistillResult:
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    questions = read_pool(run_dir)
    if config.limit is not None:
        questions = questions[: config.limit]
    teacher = make_teacher(config)
    with TeacherCache(run_dir / TEACHER_CACHE) as cache:
        got = collect(
            teacher, questions, cache, prices=config.prices, max_cost=config.max_cost,
            console=console, label=f"distill · {teacher.kind}",
        )
        traces = _derive_traces(cache, questions, got.keys, teacher)
    traces_path = run_dir / TRACES
    write_jsonl(traces_path, traces)
    local = config.teacher in ("hf", "self")
    compute_dollars = compute_cost(got.seconds, config.machine_price_per_hour) if local else 0.0
    # Written even when the teacher crashed: what was paid must reach the ledger.
    append_entry(
        run_dir,
        {
            "stage": "distill",
            "kind": "teacher",
            "teacher": teacher.kind,
            "model": teacher.model,
            "calls": got.calls,
            "tokens": got.tokens,
            "teacher_dollars": round(got.spent, 6),
            "compute_seconds": round(got.seconds, 3),
            "compute_dollars": round(compute_dollars, 6),
            "dollars": round(got.spent + compute_dollars, 6),
            "prices": config.prices.model_dump(),
            "machine_price_per_hour": config.machine_price_per_hour,
        },
    )
    if got.error is not None:
        raise got.error
    if got.cap_message:
        console.print(f"[yellow]{got.cap_message}[/yellow]")
    if got.interrupted:
        console.print("[yellow]interrupted: every response received is cached; re-run to "
                      "continue[/yellow]")
    return DistillResult(
        traces_path=traces_path,
        traces=traces,
        calls=got.calls,
        failed=got.failed,
        dollars=got.spent + compute_dollars,
        stopped_by_cost=got.cap_message is not None,
        seconds=got.seconds,
    )


def _derive_traces(
    cache: TeacherCache, questions: list[Question], keys: dict[str, str], teacher: Teacher
) -> list[dict[str, Any]]:
    """One graded trace per answered question, in pool order, rebuilt from the cache alone."""
    traces = []
    for question in questions:
        stored = cache.get(keys[question.id])
        if stored is None:
            continue
        response = TeacherResponse.from_dict(stored)
        # Only the answer section counts: a trace cut off before answering is not correct
        # because its thinking happens to end on the right number.
        graded = [grade(c.answer, question.answer) for c in response.completions]
        if not graded:
            continue
        best = next((i for i, g in enumerate(graded) if g.correct), 0)
        completion = response.completions[best]
        trace: dict[str, Any] = {
            "id": question.id,
            "domain": question.domain,
            "thinking": completion.thinking,
            "answer": completion.answer,
            "extracted": graded[best].extracted,
            "correct": graded[best].correct,
            "teacher": teacher.kind,
            "model": response.model or teacher.model,
            "tokens": {
                "input": response.input_tokens,
                "output": completion.output_tokens or response.output_tokens,
                "cached_input": response.cached_input_tokens,
            },
        }
        if len(graded) > 1:
            trace["samples"] = len(graded)
            trace["pass_rate"] = sum(g.correct for g in graded) / len(graded)
        traces.append(trace)
    return traces


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TaskProgressColumn(show_speed=True),
        TextColumn("[cyan]{task.fields[tokens]:,} tok [green]${task.fields[dollars]:.4f}"),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeRemainingColumn(),
        console=console,
    )


