"""A Wait row continued from its no-Wait row is the row run from the question, token for token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frugal import evaluate
from frugal.evaluate import EvalConfig
from frugal.evaluation.benchmarks import BenchmarkSpec
from frugal.evaluation.resume import merged, resumption, same_as_earlier
from frugal.generation import BudgetConfig, BudgetForcingEngine, GenerationResult, Job, ListSource
from frugal.ledger import read_ledger

from ..engine_cases import BRANCH_QUESTIONS


def run(engine: BudgetForcingEngine, jobs: list[Job]) -> dict[int, GenerationResult]:
    results: dict[int, GenerationResult] = {}
    engine.run_jobs(ListSource(jobs, engine.format.encode), 8,
                    lambda r: results.__setitem__(r.index, r))
    return results


def shown(result: GenerationResult) -> tuple[Any, ...]:
    return (result.token_ids, result.forced, result.sections, result.thinking, result.answer,
            result.thinking_tokens, result.answer_tokens, result.waits, result.forced_max,
            result.finish_reason)


@pytest.mark.parametrize("budget", [
    BudgetConfig(max_thinking_tokens=40, num_waits=1, max_answer_tokens=8),
    BudgetConfig(max_thinking_tokens=40, num_waits=3, max_answer_tokens=8),
    BudgetConfig(max_thinking_tokens=30, min_thinking_tokens=8, num_waits=2, max_answer_tokens=8),
    BudgetConfig(max_thinking_tokens=9, num_waits=2, max_answer_tokens=4),  # the cap cuts in
], ids=["one-wait", "three-waits", "minimum-and-waits", "short-cap"])
def test_a_continued_row_is_the_row_run_from_the_question(
        early_stopper: Any, smollm2_tokenizer: Any, budget: BudgetConfig) -> None:
    engine = BudgetForcingEngine(early_stopper, smollm2_tokenizer)
    prompts = [engine.format.generation_prompt(q) for q in BRANCH_QUESTIONS * 2]
    no_waits = budget.model_copy(update={"num_waits": 0})
    whole = run(engine, [Job(p, budget, index=i) for i, p in enumerate(prompts)])
    earlier = run(engine, [Job(p, no_waits, index=i) for i, p in enumerate(prompts)])

    copied, continued, jobs = [], {}, []
    for i, prompt in enumerate(prompts):
        if same_as_earlier(earlier[i], budget):
            copied.append(i)
            continue
        resumed = resumption(earlier[i], engine.format.encode(prompt), budget, engine.format)
        if resumed is not None:
            continued[i] = resumed
            jobs.append(Job(prompt, resumed.budget, index=i, prompt_ids=resumed.prompt_ids))
    later = run(engine, jobs)

    for i in copied:
        assert shown(earlier[i]) == shown(whole[i]), i
    for i, resumed in continued.items():
        assert shown(merged(resumed, later[i], engine.format)) == shown(whole[i]), i
    assert continued, "no row was continued: the test would prove nothing"
    if budget.max_thinking_tokens > 10:
        # Everything but a Wait the cap would cut short is taken over.
        assert len(copied) + len(continued) == len(prompts)


def test_a_sampled_row_is_never_continued(early_stopper: Any, smollm2_tokenizer: Any) -> None:
    engine = BudgetForcingEngine(early_stopper, smollm2_tokenizer)
    sampled = BudgetConfig(max_thinking_tokens=40, max_answer_tokens=4, temperature=0.7)
    prompt = engine.format.generation_prompt(BRANCH_QUESTIONS[0])
    earlier = run(engine, [Job(prompt, sampled)])[0]
    waited = sampled.model_copy(update={"num_waits": 1})
    assert resumption(earlier, engine.format.encode(prompt), waited, engine.format) is None


def test_the_wait_points_of_an_evaluation_match_a_sweep_from_the_questions(
        tmp_path: Path, early_dir: Path) -> None:
    settings = EvalConfig(model=str(early_dir),
                          benchmark=BenchmarkSpec(name="mini", per_family=2, difficulties=[1]),
                          max_thinking_tokens=[40], num_waits=[0, 1, 2], max_answer_tokens=6,
                          batch_size=4)
    swept = evaluate.run(settings.model_copy(update={"waits_at": "every-budget"}), tmp_path / "all")
    continued = evaluate.run(settings.model_copy(update={"waits_at": "best-budget"}),
                             tmp_path / "best")

    def rows(result: evaluate.EvalResult) -> dict[tuple[str, str], dict[str, Any]]:
        lines = (result.directory / evaluate.RESULTS).read_text().splitlines()
        return {(r["budget"], r["id"]): r for r in map(json.loads, lines)}

    assert rows(continued) == rows(swept)
    assert continued.generated == swept.generated == 36
    assert any(r["waits"] for r in rows(continued).values())
    # The ledger counts only the tokens generated: the continued Wait points wrote fewer.
    generated = {path: read_ledger(tmp_path / path).entries[-1].tokens
                 for path in ("all", "best")}
    assert generated["best"] < generated["all"]
