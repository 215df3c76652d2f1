"""`frugal curate`: the s1K funnel on real files, with a reason for every decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frugal import curate, distill
from frugal.curate import CurateConfig
from frugal.distill import DistillConfig
from frugal.generation import BudgetConfig
from frugal.pool import PoolConfig
from frugal.pool import run as build_pool
from frugal.questions import FieldMap, question_id
from frugal.run_files import TEACHER_CACHE
from frugal.teacher_cache import TeacherCache, cache_key
from frugal.teachers.base import Completion, TeacherResponse
from frugal.teachers.local import HFTeacher, LocalTeacherConfig

from .conftest import tiny_model

EVAL_SENTENCE = "a farmer has seventeen sheep and all but nine run away from the farm"
PLANTED = {
    "duplicate": "WHAT is  12 times 7?",
    "figure": "As shown in the figure below, what is the area of the shaded square?",
    "wrong": "What is 2 + 2?",
    "contaminated": f"Puzzle: {EVAL_SENTENCE.upper()}. How many sheep are left?",
    "placeholder": "What is the colour of the number seven?",
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def curated_run(tmp_path: Path) -> Path:
    """A pool of task questions plus one planted problem of each kind, with dataset traces."""
    tasks = build_pool(PoolConfig(source="tasks", per_family=5), tmp_path / "tasks").questions
    rows = [
        {"question": q.question, "answer": q.answer, "domain": q.domain, "solution": q.solution}
        for q in tasks
    ]
    rows += [
        {"question": "What is 12 times 7?", "answer": "84", "domain": "arithmetic",
         "solution": "12 times 7 is 84.\nFinal Answer: 84"},
        {"question": PLANTED["duplicate"], "answer": "84", "domain": "arithmetic",
         "solution": "12 times 7 is 84.\nFinal Answer: 84"},
        {"question": PLANTED["figure"], "answer": "16", "domain": "geometry",
         "solution": "The side is 4, so the area is 16.\nFinal Answer: 16"},
        {"question": PLANTED["wrong"], "answer": "4", "domain": "arithmetic",
         "solution": "2 + 2 is 5.\nFinal Answer: 5"},
        {"question": PLANTED["contaminated"], "answer": "9", "domain": "puzzles",
         "solution": "All but nine run away, so nine are left.\nFinal Answer: 9"},
        {"question": PLANTED["placeholder"], "answer": "n/a", "domain": "puzzles",
         "solution": "Numbers have no colour.\nFinal Answer: n/a"},
    ]
    data = write_jsonl(tmp_path / "pool-source.jsonl", rows)
    run_dir = tmp_path / "run"
    build_pool(PoolConfig(source=str(data), fields=FieldMap(domain="domain",
                                                            solution="solution")), run_dir)
    distill.run(DistillConfig(teacher="dataset"), run_dir)
    write_jsonl(tmp_path / "eval.jsonl", [
        {"question": f"Riddle: {EVAL_SENTENCE}. How many are left?", "answer": "9"},
        {"question": "What is the capital of France?", "answer": "Paris"},
    ])
    return run_dir


def config(run_dir: Path, **overrides: Any) -> CurateConfig:
    settings = {"target": 12, "eval_sets": [str(run_dir.parent / "eval.jsonl")]}
    return CurateConfig(**{**settings, **overrides})


def test_every_planted_problem_is_dropped_for_its_reason(curated_run: Path) -> None:
    result = curate.run(config(curated_run), curated_run)
    dropped = result.funnel.dropped
    stage_of = {name: dropped[question_id(text)]["stage"] for name, text in PLANTED.items()}
    assert stage_of == {
        "duplicate": "quality: exact duplicates",
        "figure": "quality: formatting",
        "wrong": "quality: correct",
        "contaminated": "decontamination",
        "placeholder": "quality: reference",
    }
    assert "eval" in dropped[question_id(PLANTED["contaminated"])]["reason"]
    # The kept copy of the duplicate is the first one.
    assert question_id("What is 12 times 7?") not in {
        k for k, v in dropped.items() if v["stage"].startswith("quality")
    }


def test_counts_add_up_and_every_dropped_item_has_a_reason(curated_run: Path) -> None:
    result = curate.run(config(curated_run), curated_run)
    selection = json.loads(result.selection_path.read_text())
    funnel = selection["funnel"]
    pool_size = funnel[0]["in"]
    for before, after in zip(funnel, funnel[1:], strict=False):
        assert after["in"] == before["out"]
        assert after["in"] - after["dropped"] == after["out"]
    assert funnel[-1]["out"] == len(selection["selected"]) == 12
    assert len(selection["dropped"]) + len(selection["selected"]) == pool_size
    assert all(d["reason"] for d in selection["dropped"].values())
    assert not set(selection["dropped"]) & set(selection["selected"])
    lines = result.selected_path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == selection["selected"]
    assert result.plot_path is not None and result.plot_path.stat().st_size > 10_000


def test_same_seed_selects_the_same_items(curated_run: Path) -> None:
    first = curate.run(config(curated_run), curated_run).selected
    again = curate.run(config(curated_run), curated_run).selected
    other = curate.run(config(curated_run, seed=1), curated_run).selected
    ids = [[i.question.id for i in run] for run in (first, again, other)]
    assert ids[0] == ids[1] and ids[0] != ids[2]


@pytest.mark.parametrize("strategy", ["random", "longest", "diverse"])
def test_ablation_strategies_select_the_same_number(curated_run: Path, strategy: str) -> None:
    result = curate.run(config(curated_run, strategy=strategy), curated_run)
    assert len(result.selected) == 12
    if strategy == "longest":
        kept = [i.tokens for i in result.selected]
        assert min(kept) >= max(
            i.tokens for i in curate.run(config(curated_run, target=100), curated_run).selected
            if i.question.id not in {s.question.id for s in result.selected}
        )


def test_length_limit(curated_run: Path) -> None:
    result = curate.run(config(curated_run, max_trace_tokens=40, target=100), curated_run)
    assert all(i.tokens <= 40 for i in result.selected)
    reasons = [d["reason"] for d in result.funnel.dropped.values() if d["stage"] ==
               "quality: length"]
    assert reasons and all("exceeds the limit of 40" in r for r in reasons)


def test_reference_model_drops_what_it_solves(curated_run: Path, smollm2_tokenizer: Any,
                                              tmp_path: Path) -> None:
    model_dir = tmp_path / "reference-model"
    tiny_model().save_pretrained(model_dir)
    smollm2_tokenizer.save_pretrained(model_dir)
    budget = BudgetConfig(max_thinking_tokens=4, max_answer_tokens=3)
    # Record in the teacher cache that the reference model already answered one question
    # correctly; every other question it answers itself (a random model: wrongly).
    solved = question_id("What is 12 times 7?")
    teacher = HFTeacher(LocalTeacherConfig(model=str(model_dir), budget=budget))
    from frugal.pool import read_pool

    question = next(q for q in read_pool(curated_run) if q.id == solved)
    with TeacherCache(curated_run / TEACHER_CACHE) as cache:
        key = cache_key(teacher.kind, teacher.model, teacher.messages(question),
                        teacher.cache_params())
        cache.put(key, teacher="hf", model=teacher.model, question_id=solved, request={},
                  response=TeacherResponse([Completion("7 twelves", "Final Answer: 84")]).to_dict(),
                  cost=0.0)
    settings = config(curated_run, target=100, reference_models=[str(model_dir)],
                      reference_budget=budget)
    result = curate.run(settings, curated_run)
    assert result.funnel.dropped[solved]["stage"] == f"difficulty: {model_dir}"
    step = next(s for s in result.funnel.steps if s["stage"].startswith("difficulty"))
    assert step["dropped"] == 1  # the random model solved nothing itself
    # The reference answers are cached: a second curation generates nothing.
    with TeacherCache(curated_run / TEACHER_CACHE) as cache:
        cached = len(cache)
    curate.run(settings, curated_run)
    with TeacherCache(curated_run / TEACHER_CACHE) as cache:
        assert len(cache) == cached


def test_questions_without_domain_are_clustered(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "plain.jsonl", [
        {"question": f"What is {a} plus {a + 1}?", "answer": str(2 * a + 1),
         "solution": f"{a} + {a + 1} = {2 * a + 1}\nFinal Answer: {2 * a + 1}"}
        for a in range(1, 13)
    ] + [
        {"question": f"How many days are in {n} weeks?", "answer": str(7 * n),
         "solution": f"{n} x 7 = {7 * n}\nFinal Answer: {7 * n}"}
        for n in range(2, 14)
    ])
    build_pool(PoolConfig(source=str(data), fields=FieldMap(solution="solution")),
               tmp_path / "run")
    distill.run(DistillConfig(teacher="dataset"), tmp_path / "run")
    result = curate.run(CurateConfig(target=10, clusters=2), tmp_path / "run")
    by_cluster: dict[str, set[str]] = {}
    for item in result.selected:
        kind = "plus" if "plus" in item.question.question else "weeks"
        by_cluster.setdefault(item.domain, set()).add(kind)
    assert len(by_cluster) == 2 and all(len(kinds) == 1 for kinds in by_cluster.values())


def test_traces_without_thinking_or_answer_are_dropped() -> None:
    from frugal.curate import Item, _check_trace
    from frugal.questions import Question
    from frugal.run_files import Trace

    def item(qid: str, trace: dict[str, Any] | None) -> Item:
        return Item(Question(id=qid, question=f"q {qid}", answer="1", source="t"),
                    None if trace is None else Trace(id=qid, **trace))

    reasons = _check_trace([
        item("ok", {"thinking": "1 = 1", "answer": "Final Answer: 1"}),
        item("none", None),
        item("cut", {"thinking": "1 = 1 and then", "answer": ""}),
        item("empty", {"thinking": " ", "answer": "Final Answer: 1"}),
    ])
    assert set(reasons) == {"none", "cut", "empty"}
    assert "no answer" in reasons["cut"] and "no thinking" in reasons["empty"]
