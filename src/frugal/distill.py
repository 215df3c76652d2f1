"""`frugal distill`: ask a teacher for reasoning traces of the pool's questions.

Flow, under the run-directory lock: read `pool.jsonl`; charge any call a crashed run left
unsettled and bring the ledger up to what the teacher cache shows was paid; skip every question
whose response is already in `teacher-cache.sqlite` (and those that failed for good with the same
parameters, unless `retry_failed`); let the teacher answer the rest, each paid call reserved at
its worst case before it is sent and charged when it ends; then derive `traces.jsonl` from the
cache, grading every trace against the reference, and append what this invocation spent to
`ledger.json`. `max_cost` caps the dollars of the whole run directory: a call is not sent unless
everything paid, everything in flight and its own worst case fit under it.

The result says whether the stage is complete: an interrupted, capped, stopped or partly failed
distillation is partial, with what is missing and how to get it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugal.events import Bar, Events, QuietEvents
from frugal.grading import grade
from frugal.ledger import (
    LedgerEntry,
    TokenPrices,
    append_entry,
    compute_cost,
    read_ledger,
    reconcile_teacher_cache,
    teacher_dollars,
)
from frugal.pool import read_pool
from frugal.questions import Question
from frugal.run_files import TEACHER_CACHE, TRACES, Trace, TraceTokens, write_records
from frugal.run_lock import locks_run_dir
from frugal.settings.distill import DistillConfig
from frugal.teacher_cache import (
    BILLED,
    NOT_BILLED,
    WORST_CASE,
    Reservation,
    TeacherCache,
    base_key_of,
    cache_key,
)
from frugal.teachers.announce import announce_thinking
from frugal.teachers.base import Teacher, TeacherResponse, TeacherStopped, Usage
from frugal.teachers.configured import make_teacher
from frugal.teachers.thinking import FOUND_HIDDEN


@dataclass
class DistillResult:
    traces_path: Path
    traces: list[Trace]
    questions: int = 0  # how many the stage was asked to distill
    calls: int = 0  # usable responses received (and paid for) by this invocation
    failed: dict[str, str] = field(default_factory=dict)
    not_asked: int = 0
    dollars: float = 0.0
    teacher_dollars: float = 0.0
    possibly_billed: int = 0  # calls charged at their worst case: no usage, or lost in flight
    cap_message: str | None = None
    stopped: str | None = None  # why the teacher stopped the whole run
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def correct(self) -> int:
        return sum(t.correct for t in self.traces)

    @property
    def stopped_by_cost(self) -> bool:
        return self.cap_message is not None

    @property
    def complete(self) -> bool:
        return not self.failed and not self.not_asked

    def missing(self) -> str:
        """What a partial distillation lacks and how to get it, in one paragraph."""
        parts = [f"{len(self.traces)} of {self.questions} questions answered"]
        if self.failed:
            first = next(iter(self.failed.values()))
            parts.append(f"{len(self.failed)} failed (first: {first})")
        if self.not_asked:
            why = (
                "interrupted" if self.interrupted
                else self.stopped or self.cap_message or "the teacher stopped"
            )
            parts.append(f"{self.not_asked} not asked: {why}")
        fixes = ["re-run to continue (nothing answered is paid twice)"]
        if self.cap_message:
            fixes.append("raise distill.max_cost")
        if self.failed:
            fixes.append("set distill.retry_failed=true (--retry-failed) to ask failed "
                         "questions again")
        return "; ".join(parts) + ". Fix: " + ", or ".join(fixes) + "."


def teacher_request(teacher: Teacher, question: Question, params: dict[str, Any]) -> Any:
    """What is stored with a response as its request (and what its base key is made of)."""
    return {"messages": teacher.messages(question), "params": params}


class _CachingSink:
    """Reserves and charges every call in the cache, keeps the cap, and drives the progress."""

    def __init__(
        self,
        teacher: Teacher,
        cache: TeacherCache,
        keys: dict[str, str],
        params: dict[str, Any],
        prices: TokenPrices,
        max_cost: float | None,
        bar: Bar,
        events: Events,
    ) -> None:
        self.teacher, self.cache, self.keys, self.params = teacher, cache, keys, params
        self.prices, self.max_cost = prices, max_cost
        self.bar, self.events = bar, events
        self.paid_before = cache.total_cost()
        self.paid_elsewhere = 0.0  # in the ledger, no longer in the cache: still paid
        self.admitted: dict[str, float] = {}  # free teachers' per-question reservations
        self.calls = 0
        self.tokens = 0
        self.possibly_billed = 0
        self.failed: dict[str, str] = {}
        self.cap_message: str | None = None
        self.announced = False

    @property
    def spent(self) -> float:
        return self.cache.total_cost() - self.paid_before

    def _fits(self, estimate: float) -> bool:
        if self.cap_message is not None:
            return False
        committed = (self.cache.total_cost() + self.paid_elsewhere
                     + sum(self.admitted.values()))
        if self.max_cost is None or committed + estimate <= self.max_cost:
            return True
        self.cap_message = (
            f"stopped issuing teacher calls: the next one could cost up to ${estimate:.4f}, "
            f"which would cross max_cost ${self.max_cost:.4f} (committed in this run directory "
            f"${committed:.4f}, calls in flight counted at their worst case)"
        )
        return False

    def admit(self, question: Question, input_tokens: int, max_output_tokens: int) -> bool:
        estimate = self.prices.cost(input_tokens, max_output_tokens)
        if not self._fits(estimate):
            return False
        self.admitted[question.id] = estimate
        return True

    def reserve(
        self, question: Question, input_tokens: int, max_output_tokens: int
    ) -> Reservation | None:
        worst = self.prices.cost(input_tokens, max_output_tokens)
        if not self._fits(worst):
            return None
        # Durable before the request leaves: a crash from here on still charges the call.
        return self.cache.reserve(self.keys[question.id], question.id, worst)

    def put(
        self, question: Question, response: TeacherResponse,
        reservation: Reservation | None = None,
    ) -> None:
        cost = self.prices.cost(
            response.input_tokens, response.output_tokens, response.cached_input_tokens
        )
        status = BILLED
        if reservation is not None and response.extra.get("no_usage"):
            cost, status = reservation.worst_case, WORST_CASE
            self.possibly_billed += 1
        # Durable before anything else happens with it: this is the paid-for part.
        self.cache.put(
            self.keys[question.id],
            teacher=self.teacher.kind,
            model=self.teacher.model,
            question_id=question.id,
            request=teacher_request(self.teacher, question, self.params),
            response=response.to_dict(),
            cost=cost,
            reservation=reservation,
            status=status,
        )
        self.admitted.pop(question.id, None)
        self.calls += 1
        self.tokens += response.input_tokens + response.output_tokens
        if not self.announced:
            self.announced = bool(announce_thinking(self.teacher, [response], self.events))
        self._advance()

    def billed(self, reservation: Reservation, usage: Usage, reason: str) -> None:
        cost = self.prices.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens)
        self.cache.settle(reservation, BILLED, cost, reason)
        self.tokens += usage.input_tokens + usage.output_tokens
        self._refresh()

    def worst_case(self, reservation: Reservation, reason: str) -> None:
        self.cache.settle(reservation, WORST_CASE, reservation.worst_case, reason)
        self.possibly_billed += 1
        self._refresh()

    def not_billed(self, reservation: Reservation) -> None:
        self.cache.settle(reservation, NOT_BILLED, 0.0, "")

    def fail(self, question: Question, error: Exception, *, final: bool = False) -> None:
        self.admitted.pop(question.id, None)
        self.failed[question.id] = str(error)
        self.cache.record_failure(self.keys[question.id], question.id, str(error), final=final)
        self._advance()

    def notice(self, message: str) -> None:
        self.events.note(message, warning=True)

    def _advance(self) -> None:
        self.bar.advance(1, tokens=self.tokens, dollars=self.spent, failed=len(self.failed))

    def _refresh(self) -> None:
        self.bar.update(tokens=self.tokens, dollars=self.spent, failed=len(self.failed))


@dataclass
class Collected:
    """What one pass of a teacher over some questions did (responses live in the cache)."""

    keys: dict[str, str]
    calls: int
    tokens: int
    failed: dict[str, str]
    seconds: float
    cap_message: str | None
    interrupted: bool
    possibly_billed: int = 0
    stopped: str | None = None
    error: Exception | None = None


def collect(
    teacher: Teacher,
    questions: list[Question],
    cache: TeacherCache,
    *,
    prices: TokenPrices,
    max_cost: float | None,
    events: Events,
    label: str,
    retry_failed: bool = False,
    paid_elsewhere: float = 0.0,
) -> Collected:
    """Ask `teacher` about every question not yet in `cache`, caching each answer on arrival.

    Questions that failed for good with the same key are not asked again (their failure is
    reported as it was recorded) unless `retry_failed`. `paid_elsewhere`: dollars the ledger
    records that the cache no longer shows (a deleted cache); they still count against the cap.
    """
    # Once per run, not per question: local teachers fingerprint their weights on disk here.
    params = teacher.cache_params()
    keys = {
        q.id: cache_key(teacher.kind, teacher.model, teacher.messages(q), params)
        for q in questions
    }
    started = time.perf_counter()
    cached = cache.has(keys.values())
    # Answers stored under another output limit that they did not reach are the same answers:
    # raising max_tokens asks only the questions the old limit cut short.
    base_keys = {
        q.id: base_key_of(teacher.kind, teacher.model, teacher_request(teacher, q, params))
        for q in questions if keys[q.id] not in cached
    }
    within = cache.finished_within_limit(base_keys.values())
    for question_id, base in base_keys.items():
        if base in within:
            keys[question_id] = within[base]
            cached.add(within[base])
    final_failures = {} if retry_failed else {
        key: failure for key, failure in cache.failures(keys.values()).items() if failure.final
    }
    # What the replies cached already show about this teacher, said before any new call; a
    # teacher that hides its reasoning is not asked again (it would bill reasoning for nothing).
    earlier = [TeacherResponse.from_dict(r) for key in sorted(cached)
               if (r := cache.get(key)) is not None]
    found_in = announce_thinking(teacher, earlier, events)
    hides = found_in[FOUND_HIDDEN] > 0
    todo, asked = [], set()
    for q in questions:
        key = keys[q.id]
        # Two pool rows with the same question share a key: pay for it once.
        if key not in cached and key not in final_failures and key not in asked:
            todo.append(q)
            asked.add(key)
    # Answered before (cached, or failed for good) counts as done, not as speed.
    with events.progress(label, len(questions), len(questions) - len(todo), tokens=0,
                         dollars=0.0, failed=len(final_failures)) as bar:
        sink = _CachingSink(teacher, cache, keys, params, prices, max_cost, bar, events)
        sink.announced = bool(found_in)
        sink.paid_elsewhere = paid_elsewhere
        sink.failed.update({f.question_id: f.reason for f in final_failures.values()})
        interrupted = False
        stopped: str | None = None
        error: Exception | None = None
        try:
            if todo and hides:
                stopped = (f"not asking {teacher.model} again: a reply it gave before billed "
                           "reasoning tokens and returned no reasoning text. Fix: use a teacher "
                           "that returns its reasoning, or set distill.openai.thinking_source: "
                           "content")
            elif todo:
                teacher.run(todo, sink)
        except KeyboardInterrupt:
            interrupted = True  # everything received is already in the cache
        except TeacherStopped as stop:
            stopped = str(stop)
        except Exception as failure:  # the caller records the spending, then re-raises
            error = failure
    return Collected(
        keys=keys, calls=sink.calls, tokens=sink.tokens, failed=sink.failed,
        seconds=time.perf_counter() - started,
        cap_message=sink.cap_message,
        interrupted=interrupted,
        possibly_billed=sink.possibly_billed,
        stopped=stopped,
        error=error,
    )


@locks_run_dir
def run(
    config: DistillConfig, run_dir: Path, events: Events | None = None
) -> DistillResult:
    events = events or QuietEvents()
    run_dir = Path(run_dir)
    questions = read_pool(run_dir)
    if config.limit is not None:
        questions = questions[: config.limit]
    teacher = make_teacher(config)
    with TeacherCache(run_dir / TEACHER_CACHE) as cache:
        gap = _settle_crashed_calls(run_dir, cache)
        if gap:
            events.note(f"ledger: added ${gap:.6f} of teacher calls an interrupted run had "
                        "not recorded", warning=True)
        paid_at_start = cache.total_cost()
        try:
            got = collect(
                teacher, questions, cache, prices=config.prices, max_cost=config.max_cost,
                events=events, label=f"distill · {teacher.kind}",
                retry_failed=config.retry_failed,
                paid_elsewhere=max(0.0, teacher_dollars(read_ledger(run_dir)) - paid_at_start),
            )
        except BaseException:
            # A second Ctrl-C, or a failure outside the teacher: what was paid reaches the
            # ledger now, not only at the next start.
            reconcile_teacher_cache(run_dir, cache.total_cost(),
                                    reason="teacher calls of a distillation that stopped")
            raise
        paid_now = cache.total_cost() - paid_at_start
        traces = _derive_traces(cache, questions, got.keys, teacher)
        answered = {t.id for t in traces}
    traces_path = run_dir / TRACES
    write_records(traces_path, traces)
    local = config.teacher in ("hf", "self")
    compute_dollars = compute_cost(got.seconds, config.machine_price_per_hour) if local else 0.0
    append_entry(
        run_dir,
        LedgerEntry.model_validate({
            "stage": "distill",
            "kind": "teacher",
            "teacher": teacher.kind,
            "model": teacher.model,
            "calls": got.calls,
            "possibly_billed_calls": got.possibly_billed,
            "tokens": got.tokens,
            "teacher_dollars": paid_now,
            "compute_seconds": round(got.seconds, 3),
            "compute_dollars": compute_dollars,
            "dollars": paid_now + compute_dollars,
            "prices": config.prices.model_dump(),
            "machine_price_per_hour": config.machine_price_per_hour,
        }),
    )
    if got.error is not None:
        raise got.error
    failed = {qid: why for qid, why in got.failed.items() if qid not in answered}
    result = DistillResult(
        traces_path=traces_path,
        traces=traces,
        questions=len(questions),
        calls=got.calls,
        failed=failed,
        not_asked=len(questions) - len(answered) - len(failed),
        dollars=paid_now + compute_dollars,
        teacher_dollars=paid_now,
        possibly_billed=got.possibly_billed,
        cap_message=got.cap_message,
        stopped=got.stopped,
        interrupted=got.interrupted,
        seconds=got.seconds,
    )
    for line in (got.cap_message, got.stopped):
        if line:
            events.note(line, warning=True)
    if got.interrupted:
        events.note("interrupted: every response received is cached and charged; re-run to "
                    "continue", warning=True)
    return result


@locks_run_dir
def reconcile(run_dir: Path) -> float:
    """Charge what a crashed distillation left unsettled and bring the ledger up to the cache.

    Returns the dollars added to the ledger. Every distillation does this when it starts.
    """
    path = Path(run_dir) / TEACHER_CACHE
    if not path.is_file():
        return 0.0
    with TeacherCache(path) as cache:
        return _settle_crashed_calls(Path(run_dir), cache)


def _settle_crashed_calls(run_dir: Path, cache: TeacherCache) -> float:
    recovered = cache.recover_pending()
    return reconcile_teacher_cache(
        run_dir, cache.total_cost(),
        reason="teacher calls an interrupted run paid (or may have paid) but never wrote to "
        f"the ledger ({recovered} unsettled at the crash, charged at their worst case)",
    )


def _derive_traces(
    cache: TeacherCache, questions: list[Question], keys: dict[str, str], teacher: Teacher
) -> list[Trace]:
    """One graded trace per answered question, in pool order, rebuilt from the cache alone."""
    traces = []
    for question in questions:
        stored = cache.get(keys[question.id])
        if stored is None:
            continue
        response = TeacherResponse.from_dict(stored)
        # Split again under the current settings (where the thinking is read from).
        completions = teacher.completions(response)
        # Only the answer section counts: a trace cut off before answering is not correct
        # because its thinking happens to end on the right number.
        graded = [grade(c.answer, question.answer) for c in completions]
        if not graded:
            continue
        best = next((i for i, g in enumerate(graded) if g.correct), 0)
        completion = completions[best]
        trace = Trace(
            id=question.id, domain=question.domain, thinking=completion.thinking,
            answer=completion.answer, extracted=graded[best].extracted,
            correct=graded[best].correct, teacher=teacher.kind,
            model=response.model or teacher.model,
            tokens=TraceTokens(input=response.input_tokens,
                               output=completion.output_tokens or response.output_tokens,
                               cached_input=response.cached_input_tokens),
            thinking_from=completion.found_in or None,
        )
        if len(graded) > 1:
            trace.samples = len(graded)
            trace.pass_rate = sum(g.correct for g in graded) / len(graded)
        traces.append(trace)
    return traces


