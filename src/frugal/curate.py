"""`frugal curate`: from a pool with traces to a small training set, the way s1 built s1K.

Stages, in order (docs/design.md, "Curation"), each recording why it dropped every item it dropped:
1. quality: a reference the grader can parse, a trace, graded correct, within the token limit,
   no formatting problem, not an exact (or, optionally, near) duplicate, and no word 8-gram shared
   with an evaluation set (decontamination);
2. difficulty: drop what any reference model already solves (s1), or keep a pass-rate band;
3. diversity: s1's domain-uniform, length-weighted sampler (or an ablation strategy) picks the
   target number of items.
Writes `selected.jsonl`, `selection.json` (funnel, every reason, histograms, length statistics)
and `plots/curation.png`.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugal.curation.diversity import Candidate, select
from frugal.curation.text_filters import (
    Decontaminator,
    FormattingFilter,
    exact_duplicates,
)
from frugal.events import Events, QuietEvents
from frugal.grading import reference_answer
from frugal.pool import read_pool
from frugal.questions import DEFAULT_FIELDS, Question, read_questions
from frugal.run_files import (
    CURATION_PLOT,
    SELECTED,
    SELECTION,
    TRACES,
    SelectedItem,
    Trace,
    read_records,
    write_json,
    write_records,
)
from frugal.run_lock import locks_run_dir
from frugal.settings.curate import CurateConfig
from frugal.teachers.thinking import DESCRIPTIONS, FOUND_HIDDEN, FOUND_NONE


@dataclass
class Item:
    """A pool question joined with its trace."""

    question: Question
    trace: Trace | None
    domain: str = ""
    tokens: int = 0
    embedding: Any = None  # computed at most once, shared by near-duplicates and clustering


@dataclass
class Funnel:
    """Counts in and out of every stage, and the reason for every dropped item."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    dropped: dict[str, dict[str, str]] = field(default_factory=dict)

    def apply(
        self, stage: str, items: list[Item], reasons: dict[str, str], seconds: float
    ) -> list[Item]:
        kept = [item for item in items if item.question.id not in reasons]
        for item_id, reason in reasons.items():
            self.dropped[item_id] = {"stage": stage, "reason": reason}
        self.steps.append({
            "stage": stage, "in": len(items), "out": len(kept), "dropped": len(reasons),
            "seconds": round(seconds, 3),
            "items_per_second": round(len(items) / seconds, 1) if seconds > 0 else None,
        })
        return kept


@dataclass
class CurateResult:
    selected: list[Item]
    funnel: Funnel
    selected_path: Path
    selection_path: Path
    plot_path: Path | None


@locks_run_dir
def run(config: CurateConfig, run_dir: Path, events: Events | None = None) -> CurateResult:
    events = events or QuietEvents()
    run_dir = Path(run_dir)
    items = _join(read_pool(run_dir), _read_traces(run_dir))
    funnel = Funnel()
    pool_items = list(items)
    started = time.perf_counter()
    _count_tokens(items, config.tokenizer)
    items = funnel.apply("trace tokens", items, {}, time.perf_counter() - started)
    for stage, check in _quality_checks(config, run_dir):
        started = time.perf_counter()
        reasons = check(items)
        items = funnel.apply(stage, items, reasons, time.perf_counter() - started)
    for model in config.reference_models:
        from frugal.curation.difficulty import solved_by

        started = time.perf_counter()
        solved = solved_by(
            [i.question for i in items], model, config.reference_budget, run_dir,
            events=events, engine=config.engine,
        )
        reasons = {
            i.question.id: f"solved by reference model {model}"
            for i in items if solved.get(i.question.id)
        }
        items = funnel.apply(f"difficulty: {model}", items, reasons, time.perf_counter() - started)
    if config.pass_rate_band is not None:
        from frugal.curation.difficulty import outside_band

        started = time.perf_counter()
        reasons = {}
        for item in items:
            why = outside_band(item.trace.pass_rate if item.trace else None,
                               config.pass_rate_band)
            if why:
                reasons[item.question.id] = why
        items = funnel.apply("difficulty: pass rate", items, reasons, time.perf_counter() - started)
    started = time.perf_counter()
    _assign_domains(items, config)
    items = funnel.apply("domains", items, {}, time.perf_counter() - started)
    candidates = list(items)
    started = time.perf_counter()
    picked = select(
        [Candidate(i.question.id, i.domain, i.tokens) for i in items],
        config.target, config.strategy, config.seed,
    )
    chosen = set(picked)
    reasons = {
        i.question.id: f"not sampled: {config.strategy} selection reached its target of "
        f"{config.target}" for i in items if i.question.id not in chosen
    }
    items = funnel.apply(f"selection: {config.strategy}", items, reasons,
                         time.perf_counter() - started)
    order = {item_id: n for n, item_id in enumerate(picked)}
    selected = sorted(items, key=lambda i: order[i.question.id])
    return _write_outputs(config, run_dir, pool_items, candidates, selected, funnel)


def _read_traces(run_dir: Path) -> dict[str, Trace]:
    path = run_dir / TRACES
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Fix: run `frugal distill --run {run_dir}` first."
        )
    fix = f"correct that line, or run `frugal distill --run {run_dir}` again"
    return {trace.id: trace for trace in read_records(path, Trace, fix=fix)}


def _join(questions: list[Question], traces: dict[str, Trace]) -> list[Item]:
    return [Item(question=q, trace=traces.get(q.id)) for q in questions]


def _count_tokens(items: list[Item], tokenizer_spec: str) -> None:
    from frugal.models import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_spec)
    with_trace = [i for i in items if i.trace]
    texts = [f"{i.trace.thinking}\n{i.trace.answer}" for i in with_trace if i.trace]
    for start in range(0, len(texts), 2048):
        encoded = tokenizer(texts[start : start + 2048], add_special_tokens=False)["input_ids"]
        for item, ids in zip(with_trace[start : start + 2048], encoded, strict=True):
            item.tokens = len(ids)


def _quality_checks(config: CurateConfig, run_dir: Path) -> list[tuple[str, Any]]:
    """The quality stages in order, each a function from items to {id: reason}."""
    checks: list[tuple[str, Any]] = [
        ("quality: reference", _check_reference),
        ("quality: has trace", _check_trace),
    ]
    if config.require_correct:
        checks.append(("quality: correct", lambda items: {
            i.question.id: f"trace graded incorrect (extracted {i.trace.extracted!r}, "
            f"reference {i.question.answer!r})" for i in items if i.trace and not i.trace.correct
        }))
    if config.max_trace_tokens is not None:
        limit = config.max_trace_tokens
        checks.append(("quality: length", lambda items: {
            i.question.id: f"trace of {i.tokens} tokens exceeds the limit of {limit}"
            for i in items if i.tokens > limit
        }))
    if config.format_patterns:
        formatting = FormattingFilter(config.format_patterns)
        checks.append(("quality: formatting", lambda items: formatting.filter(
            [(i.question.id, f"{i.question.question}\n{i.trace.thinking if i.trace else ''}")
             for i in items]
        )))
    checks.append(("quality: exact duplicates", lambda items: exact_duplicates(
        [(i.question.id, i.question.question) for i in items]
    )))
    if config.near_duplicate_threshold is not None:
        checks.append(("quality: near duplicates", lambda items: _near_duplicates(items, config)))
    if config.eval_sets:
        decontaminator = Decontaminator(_eval_texts(config.eval_sets))
        checks.append(("decontamination", lambda items: decontaminator.filter(
            [(i.question.id, i.question.question) for i in items]
        )))
    return checks


def _check_trace(items: list[Item]) -> dict[str, str]:
    reasons = {}
    for item in items:
        if item.trace is None:
            reasons[item.question.id] = "no trace: the teacher never answered it"
        elif not item.trace.thinking.strip():
            found = item.trace.thinking_from
            reasons[item.question.id] = "trace has no thinking" + (
                f" (the teacher's reply: {DESCRIPTIONS[found]})" if found in WITHOUT_THINKING
                else "")
        elif not item.trace.answer.strip():
            reasons[item.question.id] = "trace has no answer section (cut off while thinking?)"
    return reasons


WITHOUT_THINKING = (FOUND_NONE, FOUND_HIDDEN)
_PLACEHOLDER_ANSWERS = {"n/a", "na", "none", "null", "unknown", "?", "-", "tbd"}


def _check_reference(items: list[Item]) -> dict[str, str]:
    reasons = {}
    for item in items:
        reference = reference_answer(item.question.answer)
        if not any(ch.isalnum() for ch in reference):
            reasons[item.question.id] = f"reference answer {item.question.answer!r} is unparseable"
        elif reference.strip().casefold() in _PLACEHOLDER_ANSWERS:
            reasons[item.question.id] = f"reference answer {reference!r} is a placeholder"
    return reasons


def _near_duplicates(items: list[Item], config: CurateConfig) -> dict[str, str]:
    from frugal.curation.text_filters import near_duplicates

    _embed(items, config)
    assert config.near_duplicate_threshold is not None
    return near_duplicates([i.question.id for i in items],
                           np.stack([i.embedding for i in items]),
                           config.near_duplicate_threshold)


def _embed(items: list[Item], config: CurateConfig) -> None:
    from frugal.embeddings import embed

    todo = [i for i in items if i.embedding is None]
    if todo:
        for item, vector in zip(todo, embed([i.question.question for i in todo], config.embedder),
                                strict=True):
            item.embedding = vector


def _eval_texts(sources: list[str]) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for source in sources:
        questions = read_questions(source, DEFAULT_FIELDS)
        name = Path(source).stem if Path(source).exists() else source
        if name in texts:  # a/test.jsonl and b/test.jsonl: both count, under their paths
            name = source
        texts[name] = [q.question for q in questions]
    return texts


def _assign_domains(items: list[Item], config: CurateConfig) -> None:
    """The pool's domain, or a k-means cluster of the question's embedding where it has none."""
    missing = [i for i in items if not i.question.domain]
    for item in items:
        item.domain = item.question.domain or ""
    if missing:
        from frugal.embeddings import cluster

        _embed(missing, config)
        vectors = np.stack([i.embedding for i in missing])
        for item, label in zip(missing, cluster(vectors, config.clusters, config.seed),
                               strict=True):
            item.domain = f"cluster-{label}"


def _length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    return {
        "count": len(lengths), "min": min(lengths), "max": max(lengths),
        "mean": round(statistics.fmean(lengths), 1), "median": statistics.median(lengths),
    }


def _write_outputs(
    config: CurateConfig,
    run_dir: Path,
    pool: list[Item],
    candidates: list[Item],
    selected: list[Item],
    funnel: Funnel,
) -> CurateResult:
    selected_path = run_dir / SELECTED
    records = []
    for item in selected:
        assert item.trace is not None
        records.append(SelectedItem(
            id=item.question.id, question=item.question.question, answer=item.question.answer,
            domain=item.domain, thinking=item.trace.thinking, trace_answer=item.trace.answer,
            trace_tokens=item.tokens, teacher=item.trace.teacher, source=item.question.source,
        ))
    write_records(selected_path, records)
    pool_domains = Counter(i.question.domain or "(none)" for i in pool)
    selection = {
        "config": config.model_dump(),
        "funnel": [{"stage": "pool", "in": len(pool), "out": len(pool), "dropped": 0}]
        + funnel.steps,
        "selected": [i.question.id for i in selected],
        "dropped": funnel.dropped,
        "domains": {
            "pool": dict(sorted(pool_domains.items())),
            # After quality and difficulty, with clusters for questions that had no domain.
            "candidates": dict(sorted(Counter(i.domain for i in candidates).items())),
            "selected": dict(sorted(Counter(i.domain for i in selected).items())),
        },
        "trace_tokens": {
            "pool": _length_stats([i.tokens for i in pool if i.trace]),
            "selected": _length_stats([i.tokens for i in selected]),
        },
    }
    selection_path = run_dir / SELECTION
    write_json(selection_path, selection)
    from frugal.curation.plots import plot_selection

    plot_path = plot_selection(run_dir / CURATION_PLOT, pool, candidates, selected)
    return CurateResult(selected, funnel, selected_path, selection_path, plot_path)
