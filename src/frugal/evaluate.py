"""`frugal eval`: a model (base, or base + adapter) on a benchmark across thinking budgets.

Each budget point (a maximum number of thinking tokens and a number of Waits) runs every
question through the budget-forcing engine in batches. Every finished generation is appended to
`eval/<label>/results.jsonl` at once, so a killed evaluation resumes where it stopped; the
summary (accuracy with a 95% interval, mean thinking tokens, maj@k and pass@k with samples, and
s1's Control, Scaling and Performance over the sweep) goes to `eval/<label>/summary.json`, and
`plots/test-time-scaling.png` draws every evaluated model of the run on one chart.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from frugal.evaluation import metrics
from frugal.evaluation.benchmarks import BenchmarkSpec, load_questions, resolve, same_answer
from frugal.evaluation.contamination import Overlap, find_overlaps
from frugal.events import Events, QuietEvents
from frugal.ledger import LedgerEntry, append_entry, compute_cost
from frugal.names import check_name, path_inside
from frugal.questions import Question
from frugal.run_files import (
    EVAL_DIR,
    EVAL_SETTINGS,
    POOL,
    RESULTS,
    SCALING_PLOT,
    SELECTED,
    SUMMARY,
    EvalPoint,
    EvalRow,
    EvalSummary,
    RunFileError,
    Score,
    read_json,
    read_selected,
    read_summary,
    record_json,
    write_json,
)
from frugal.run_lock import locks_run_dir
from frugal.settings import DEFAULT_MODEL
from frugal.settings.evaluate import EvalConfig

if TYPE_CHECKING:
    from frugal.generation import GenerationResult


@dataclass(frozen=True)
class Point:
    """One budget of the sweep."""

    max_thinking_tokens: int
    num_waits: int

    @property
    def key(self) -> str:
        return f"think{self.max_thinking_tokens}-waits{self.num_waits}"


@dataclass
class EvalResult:
    label: str
    directory: Path
    summary: EvalSummary
    generated: int  # generations made by this invocation (the rest were resumed)
    overlaps: list[Overlap]
    plot: Path | None


class SettingsMismatchError(ValueError):
    pass


def points_of(config: EvalConfig) -> list[Point]:
    """The points known before any generation: the whole sweep, or with `waits_at:
    best-budget` only the budgets at the first `num_waits` value."""
    waits = list(dict.fromkeys(config.num_waits))
    budgets = list(dict.fromkeys(config.max_thinking_tokens))
    if config.waits_at == "best-budget":
        return [Point(budget, waits[0]) for budget in budgets]
    return [Point(budget, w) for w in waits for budget in budgets]


def later_waits(config: EvalConfig) -> list[int]:
    """The Wait counts that run at the best budget once the budget sweep is in."""
    if config.waits_at != "best-budget":
        return []
    return list(dict.fromkeys(config.num_waits))[1:]


def best_budget(
    rows: dict[tuple[str, str, int], EvalRow], points: list[Point], questions: list[Question],
    samples: int,
) -> int | None:
    """The budget whose point scored most (the smaller on a tie: the same accuracy for less
    thinking), or None while any of their generations is missing."""
    scores = []
    for point in points:
        marks = [rows.get((point.key, q.id, s)) for q in questions for s in range(samples)]
        if any(row is None for row in marks):
            return None
        scores.append((sum(row.correct for row in marks if row), -point.max_thinking_tokens))
    return -max(scores)[1] if scores else None


def all_points(
    config: EvalConfig, rows: dict[tuple[str, str, int], EvalRow], questions: list[Question]
) -> list[Point]:
    """Every point known so far: the budget sweep, then the Waits at its best budget once
    that is known."""
    first = points_of(config)
    best = best_budget(rows, first, questions, config.samples) if later_waits(config) else None
    return first + ([Point(best, w) for w in later_waits(config)] if best is not None else [])


@locks_run_dir
def run(
    config: EvalConfig,
    run_dir: Path,
    events: Events | None = None,
) -> EvalResult:
    """Evaluate, resuming finished generations; a progress bar of `events` follows them."""
    from frugal.adapters import base_model_of, find_adapter, load_with_adapters
    from frugal.endpoint_engine import EndpointEngine
    from frugal.evaluation.resume import Resumption, merged, resumption, same_as_earlier
    from frugal.generation import (
        BudgetConfig,
        BudgetForcingEngine,
        Engine,
        Job,
        ListSource,
    )
    from frugal.models import inference_dtype, load_tokenizer

    run_dir = Path(run_dir)
    spec = resolve(config.benchmark)
    adapters: dict[str, Path] = {}
    if config.adapter:
        name, path = find_adapter(run_dir, config.adapter)
        adapters[name] = path
    if config.route:
        from frugal.experts.naming import expert_adapters

        adapters = expert_adapters(run_dir)
    model = config.model or (
        base_model_of(next(iter(adapters.values()))) if adapters else DEFAULT_MODEL
    )
    label = config.label or ("experts" if config.route else
                             next(iter(adapters)) if adapters else "base")
    # A label taken from an adapter directory's own name must be safe as well.
    check_name(label, "evaluation label (--label)")
    questions = load_questions(spec, exclude_ids=_pool_ids(run_dir))
    if config.limit:
        questions = questions[: config.limit]
    if not questions:
        raise ValueError(f"benchmark {spec.name!r} has no questions left to evaluate")
    overlaps = _contamination(questions, run_dir, adapters)

    directory = path_inside(run_dir, EVAL_DIR, label)
    settings = _settings(config, spec, model, adapters)
    _check_settings(directory, settings, label)
    results_path = directory / RESULTS
    done = _read_results(results_path)
    first = points_of(config)
    waits_later = later_waits(config)
    known = all_points(config, done, questions)
    per_point = len(questions) * config.samples
    total = (len(first) + len(waits_later)) * per_point
    finished = sum(1 for point in known for q in questions for s in range(config.samples)
                   if (point.key, q.id, s) in done)
    correct = sum(
        1 for point in known for q in questions for s in range(config.samples)
        if (row := done.get((point.key, q.id, s))) is not None and row.correct
    )
    made: list[tuple[str, str, int]] = []  # generations of this invocation
    reused = 0  # tokens of those that a Wait point took over from its no-Wait row
    events = events or QuietEvents()
    started = time.perf_counter()
    routes: dict[str, str] = {}  # question id -> expert adapter, when routing
    with events.progress(f"eval {label}", total, finished,
                         accuracy=_accuracy(finished, correct)) as bar:
        if finished < total:
            if config.route:
                routes = _route(run_dir, questions, adapters)
            engine: Engine
            # The adapter every row asks for by name: a server serves each adapter under its own.
            served_adapter: str | None = None
            resources = ExitStack()  # an engine started for this evaluation
            if config.engine is not None:
                endpoint = config.engine
                if isinstance(endpoint, str):  # an engine started for this evaluation
                    from frugal.engine_servers import (
                        PROMPT_TOKENS_BOUND,
                        context_length,
                        managed_endpoint,
                    )

                    endpoint = resources.enter_context(managed_endpoint(
                        endpoint, model, adapters, dtype=config.dtype, llama_cpp=config.llama_cpp,
                        context_tokens=context_length(
                            PROMPT_TOKENS_BOUND, max(config.max_thinking_tokens),
                            config.max_answer_tokens)))
                try:
                    engine = EndpointEngine(endpoint, load_tokenizer(model))
                except BaseException:
                    resources.close()  # the engine it started must not outlive the error
                    raise
                if adapters and not config.route:
                    served_adapter = next(iter(adapters))
            else:
                loaded = load_with_adapters(model, adapters, dtype=inference_dtype(config.dtype))
                engine = BudgetForcingEngine(loaded.model, loaded.tokenizer)

            # This invocation's no-Wait results, which the Wait points continue (greedy only).
            generated: dict[tuple[str, str, int], GenerationResult] = {}

            def run_point(point: Point, earlier_key: str | None = None) -> None:
                rows = [(q, s) for q in questions for s in range(config.samples)
                        if (point.key, q.id, s) not in done]
                if not rows:
                    return
                budget = BudgetConfig(
                    max_thinking_tokens=point.max_thinking_tokens,
                    min_thinking_tokens=config.min_thinking_tokens,
                    num_waits=point.num_waits,
                    max_answer_tokens=config.max_answer_tokens,
                    temperature=config.temperature,
                    top_p=config.top_p,
                    seed=config.seed,
                )

                def record(result: Any, reused_tokens: int = 0) -> None:
                    nonlocal finished, correct, reused
                    question, sample = rows[result.index]
                    if earlier_key is None and config.temperature == 0:
                        generated[(point.key, question.id, sample)] = result
                    reused += reused_tokens
                    row = _result_row(spec, point, question, sample, result, config)
                    if routes:
                        row.expert = routes[question.id]
                    sink.write(json.dumps(record_json(row), ensure_ascii=False) + "\n")
                    # One line per generation: a kill loses at most the one in flight.
                    sink.flush()
                    done[(row.budget, row.id, row.sample)] = row
                    made.append((row.budget, row.id, row.sample))
                    finished += 1
                    correct += row.correct
                    bar.advance(1, accuracy=_accuracy(finished, correct))

                jobs = []
                continued: dict[int, Resumption] = {}  # job index -> the row it continues
                for i, (q, s) in enumerate(rows):
                    job = Job(engine.format.generation_prompt(spec.prompt(q), config.system),
                              budget, index=i, seed=_sample_seed(config.seed, q.id, s),
                              adapter=routes.get(q.id, served_adapter))
                    earlier = generated.get((earlier_key, q.id, s)) if earlier_key else None
                    if earlier is not None and same_as_earlier(earlier, budget):
                        record(replace(earlier, index=i), _generated_tokens(earlier))
                        continue
                    resumed = earlier and resumption(
                        earlier, engine.format.encode(job.prompt), budget, engine.format)
                    if resumed:
                        continued[i] = resumed
                        job = replace(job, prompt_ids=resumed.prompt_ids, budget=resumed.budget)
                    jobs.append(job)

                def finish(result: GenerationResult) -> None:
                    resumed = continued.get(result.index)
                    if resumed is None:
                        record(result)
                    else:  # the earlier row's thinking was not generated again
                        record(merged(resumed, result, engine.format),
                               len(resumed.thinking_ids))

                engine.run_jobs(ListSource(jobs, engine.format.encode), config.batch_size, finish)

            with resources, results_path.open("a", encoding="utf-8") as sink:
                for point in first:
                    run_point(point)
                # The budget sweep is complete now, so its best budget is known.
                for point in all_points(config, done, questions)[len(first):]:
                    run_point(point, Point(point.max_thinking_tokens, first[0].num_waits).key)
    seconds = time.perf_counter() - started
    points = all_points(config, done, questions)

    # `done`: what was read at the start plus every generation appended since.
    summary = summarize(done, points, questions, config, spec, label, model, adapters)
    summary.contamination = {
        "overlapping_questions": len(overlaps),
        "examples": [o.__dict__ for o in overlaps[:5]],
    }
    write_json(directory / SUMMARY, record_json(summary))
    if made:
        append_entry(run_dir, LedgerEntry.model_validate({
            "stage": "eval", "kind": "compute", "name": label, "benchmark": spec.name,
            "generations": len(made), "compute_seconds": round(seconds, 3),
            "machine_price_per_hour": config.machine_price_per_hour,
            "tokens": sum(done[key].thinking_tokens + done[key].answer_tokens for key in made)
            - reused,
            "dollars": round(compute_cost(seconds, config.machine_price_per_hour), 6),
        }))
    plot = plot_run(run_dir, spec.name)
    return EvalResult(label, directory, summary, len(made), overlaps, plot)


def _generated_tokens(result: GenerationResult) -> int:
    return result.thinking_tokens + result.answer_tokens


def _route(run_dir: Path, questions: list[Question], adapters: dict[str, Path]) -> dict[str, str]:
    from frugal.experts.router import route_to_experts

    chosen = route_to_experts(run_dir, [q.question for q in questions], list(adapters))
    return {q.id: name for q, name in zip(questions, chosen, strict=True)}


def _sample_seed(seed: int, question_id: str, sample: int) -> int:
    # Stable across resumes and batch compositions: a resumed sample draws what it would have.
    digest = hashlib.sha256(f"{seed}:{question_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _result_row(
    spec: BenchmarkSpec, point: Point, question: Question, sample: int, result: Any,
    config: EvalConfig,
) -> EvalRow:
    extracted, correct = spec.score(result.answer, question.answer)
    return EvalRow(
        id=question.id, budget=point.key, max_thinking_tokens=point.max_thinking_tokens,
        min_thinking_tokens=config.min_thinking_tokens, num_waits=point.num_waits,
        sample=sample, domain=question.domain, prompt=result.prompt, thinking=result.thinking,
        answer=result.answer, reference=question.answer, extracted=extracted,
        correct=bool(correct), thinking_tokens=result.thinking_tokens,
        answer_tokens=result.answer_tokens, waits=result.waits, forced_max=result.forced_max,
        finish_reason=result.finish_reason,
    )


def summarize(
    rows: dict[tuple[str, str, int], EvalRow],
    points: list[Point],
    questions: list[Question],
    config: EvalConfig,
    spec: BenchmarkSpec,
    label: str,
    model: str,
    adapters: dict[str, Path],
) -> EvalSummary:
    """Per-point accuracy, interval, thinking use, maj@k / pass@k, and s1's sweep metrics."""
    summary_points = []
    all_used, all_low, all_high = [], [], []
    for point in points:
        per_question: dict[str, list[EvalRow]] = defaultdict(list)
        for question in questions:
            for sample in range(config.samples):
                row = rows.get((point.key, question.id, sample))
                if row is not None:
                    per_question[question.id].append(row)
        generations = [r for samples in per_question.values() for r in samples]
        if not generations:
            continue
        right = sum(r.correct for r in generations)
        low, high = metrics.wilson_interval(right, len(generations))
        used = [r.thinking_tokens for r in generations]
        all_used += used
        all_low += [r.min_thinking_tokens for r in generations]
        all_high += [r.max_thinking_tokens for r in generations]
        voting = _voting(per_question, config.samples, spec.metric) if config.samples > 1 else {}
        summary_points.append(EvalPoint(
            budget=point.key, max_thinking_tokens=point.max_thinking_tokens,
            num_waits=point.num_waits, questions=len(per_question),
            generations=len(generations), correct=right, accuracy=right / len(generations),
            ci95=[low, high], mean_thinking_tokens=sum(used) / len(used),
            mean_answer_tokens=sum(r.answer_tokens for r in generations) / len(generations),
            by_domain=_by_domain(generations), **voting,
        ))
    curve = [(p.mean_thinking_tokens, 100 * p.accuracy) for p in summary_points]
    slope = metrics.scaling(curve)
    return EvalSummary(
        label=label, model=model,
        adapters={name: str(path) for name, path in adapters.items()},
        benchmark=spec.name, questions=len(questions), samples=config.samples,
        temperature=config.temperature, points=summary_points,
        control=metrics.control(all_used, all_low, all_high),
        scaling_per_1k_tokens=None if slope is None else 1000 * slope,
        performance=metrics.performance([p.accuracy for p in summary_points]),
    )


def _by_domain(generations: list[EvalRow]) -> dict[str, Score]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for row in generations:
        groups[row.domain or "(none)"].append(row.correct)
    return {
        domain: Score(n=len(marks), correct=sum(marks), accuracy=sum(marks) / len(marks),
                      ci95=list(metrics.wilson_interval(sum(marks), len(marks))))
        for domain, marks in sorted(groups.items())
    }


def _voting(
    per_question: dict[str, list[EvalRow]], k: int, metric: str
) -> dict[str, float]:
    majority_right = 0
    pass_k = 0.0
    for samples in per_question.values():
        winner = metrics.majority_vote(
            [r.extracted for r in samples], lambda a, b: same_answer(b, a, metric)
        )
        majority_right += winner is not None and samples[winner].correct
        pass_k += metrics.pass_at_k(len(samples), sum(r.correct for r in samples),
                                    min(k, len(samples)))
    return {f"maj@{k}": majority_right / len(per_question), f"pass@{k}": pass_k / len(per_question)}


def _pool_ids(run_dir: Path) -> set[str]:
    """The ids of the run's pool (held-out questions exclude them)."""
    if not (run_dir / POOL).is_file():
        return set()
    from frugal.pool import read_pool

    return {question.id for question in read_pool(run_dir)}


def _contamination(
    questions: list[Question], run_dir: Path, adapters: dict[str, Path]
) -> list[Overlap]:
    """Overlaps with the training set of an adapter trained in this run (the base model's own
    training data is unknown, so a base model is not checked)."""
    selected = run_dir / SELECTED
    in_run = any(path.resolve().parent.parent == run_dir.resolve() for path in adapters.values())
    if not adapters or not in_run or not selected.is_file():
        return []
    texts = [f"{r.question} {r.thinking} {r.answer}" for r in read_selected(run_dir)]
    return find_overlaps(questions, texts)


def _settings(
    config: EvalConfig, spec: BenchmarkSpec, model: str, adapters: dict[str, Path]
) -> dict[str, Any]:
    """What makes two evaluations comparable; budgets may change between resumes."""
    from frugal.adapters import adapter_fingerprint
    from frugal.endpoint_config import engine_key
    from frugal.models import fingerprint, inference_dtype

    fingerprints = {name: adapter_fingerprint(path) for name, path in adapters.items()}
    return {
        "model": model,
        "model_fingerprint": fingerprint(model),
        "adapters": fingerprints,
        "benchmark": spec.model_dump(),
        "min_thinking_tokens": config.min_thinking_tokens,
        "max_answer_tokens": config.max_answer_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "seed": config.seed,
        "system": config.system,
        "route": config.route,
        "dtype": inference_dtype(config.dtype),
        # Only when set, so evaluations from before engines existed still resume.
        **({"engine": engine_key(config.engine, config.llama_cpp)} if config.engine else {}),
    }


def _check_settings(directory: Path, settings: dict[str, Any], label: str) -> None:
    path = directory / EVAL_SETTINGS
    if path.is_file():
        before = read_json(path, default={}, fix=f"delete {path.parent} to evaluate afresh")
        changed = sorted(k for k in settings.keys() | before.keys()
                         if before.get(k) != settings.get(k))
        if changed:
            raise SettingsMismatchError(
                f"{directory} holds results made with other settings ({', '.join(changed)} "
                f"changed), so they cannot be resumed or mixed. Fix: pass another --label, or "
                f"delete {directory} to start over."
            )
        return
    directory.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def _read_results(path: Path) -> dict[tuple[str, str, int], EvalRow]:
    """Finished generations by (budget, question id, sample).

    Rows are appended a line at a time, so a kill, a crash or a full disk can only damage the
    end of the file: a last line without its newline (cut short, perhaps inside a UTF-8
    character), or NUL bytes where the filesystem had grown the file but the data never
    arrived. That torn tail is trimmed from the file, so its generations run again and new rows
    append after the last complete one. Damage before a valid row cannot come from a crash and
    is never skipped over (its rows would silently vanish): a RunFileError names the line."""
    if not path.is_file():
        return {}
    fix = (f"delete that line so its generation runs again, or delete {path} to "
           "re-evaluate everything")
    data = path.read_bytes()
    rows: dict[tuple[str, str, int], EvalRow] = {}
    good_bytes = 0  # the end of the last complete, valid line: the file is trimmed to it
    zeroed: int | None = None  # the first NUL-only line since then
    pieces = data.split(b"\n")
    offset = 0
    for number, piece in enumerate(pieces, start=1):
        offset += len(piece) + 1
        if number == len(pieces):
            break  # after the last newline: nothing, or a line cut short (trimmed below)
        if not piece.strip():
            continue  # a blank line holds no row
        if not piece.strip(b"\0 \t\r"):
            zeroed = zeroed or number  # lost data; torn tail unless a valid row follows
            continue
        row, problem, column = _parse_result(piece)
        if problem:
            raise RunFileError(path, problem, fix, line=number, column=column)
        if zeroed:
            raise RunFileError(path, "only NUL bytes: the rows written there were lost",
                               fix, line=zeroed)
        assert row is not None
        rows[(row.budget, row.id, row.sample)] = row
        good_bytes = offset
    if good_bytes != len(data):
        os.truncate(path, good_bytes)
    return rows


def _parse_result(line: bytes) -> tuple[EvalRow | None, str | None, int | None]:
    """One results.jsonl row, or why the line is not one (and the column, when known)."""
    try:
        data = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte {line[error.start]:#04x})", error.start + 1
    except json.JSONDecodeError as error:
        return None, f"not valid JSON ({error.msg})", error.colno
    if not (isinstance(data, dict) and isinstance(data.get("budget"), str)
            and isinstance(data.get("id"), str) and isinstance(data.get("sample"), int)):
        return None, "not a result row (a JSON object with budget, id and sample)", None
    try:
        return EvalRow.model_validate(data), None, None
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        return None, f"not a result row ({field}: {first['msg']})", None


def read_summaries(run_dir: Path, benchmark: str | None = None) -> dict[str, EvalSummary]:
    """Every evaluated model's summary in the run, by label (one benchmark when named)."""
    root = Path(run_dir) / EVAL_DIR
    found = {}
    for path in sorted(root.glob(f"*/{SUMMARY}")) if root.is_dir() else []:
        summary = read_summary(path)
        if benchmark is None or summary.benchmark == benchmark:
            found[path.parent.name] = summary
    return found


def plot_run(run_dir: Path, benchmark: str) -> Path | None:
    """Redraw the run's test-time-scaling plot with every model evaluated on `benchmark`."""
    from frugal.evaluation.plots import plot_scaling

    summaries = read_summaries(run_dir, benchmark)
    curves = {label: s.points for label, s in summaries.items() if s.points}
    if not curves:
        return None
    return plot_scaling(
        curves, Path(run_dir) / SCALING_PLOT, f"Test-time scaling on {benchmark}"
    )


def _accuracy(done: int, correct: int) -> str:
    return f"{100 * correct / done:.1f}%" if done else "-"
