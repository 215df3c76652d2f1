"""Benchmarks: held-out task questions, the GSM8K dev split, spec files and scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugal.evaluation.benchmarks import BenchmarkSpec, load_questions, resolve
from frugal.pool import PoolConfig, in_gsm8k_dev_split, load_pool_questions, local_gsm8k


def test_task_benchmark_leaves_out_questions_of_the_pool() -> None:
    spec = BenchmarkSpec(name="t", families=["arithmetic"], per_family=20, difficulties=[1])
    first = load_questions(spec)
    assert len(first) == 20 and {q.domain for q in first} == {"arithmetic"}
    excluded = {q.id for q in first[:5]}
    again = load_questions(spec, exclude_ids=excluded)
    assert len(again) == 20 and not excluded & {q.id for q in again}


def test_task_benchmark_uses_another_seed_than_the_pool() -> None:
    pool = {q.id for q in load_pool_questions(PoolConfig(per_family=30))}
    held_out = load_questions(BenchmarkSpec(name="t", per_family=30))
    shared = pool & {q.id for q in held_out}
    # Low levels have few distinct questions, so a handful can coincide; the run excludes them.
    assert len(shared) < len(held_out) // 10
    assert not shared & {q.id for q in load_questions(BenchmarkSpec(name="t", per_family=30),
                                                       exclude_ids=pool)}


@pytest.mark.skipif(local_gsm8k() is None, reason="no local GSM8K (../shared/data)")
def test_gsm8k_dev_split_is_never_in_a_pool() -> None:
    dev = load_questions(BenchmarkSpec(name="g", source="gsm8k"))
    pool = load_pool_questions(PoolConfig(source="gsm8k"))
    assert 400 < len(dev) < 550 and all(in_gsm8k_dev_split(q) for q in dev)
    assert not {q.id for q in dev} & {q.id for q in pool}
    assert len(dev) + len(pool) == 7473
    assert len(load_questions(resolve("gsm8k"))) == 200  # the built-in spec's limit


def test_spec_file_is_validated_with_the_field_named(tmp_path: Path) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\nsource: tasks\nprompt_template: 'Q: {question}'\n")
    assert resolve(str(good)).prompt_template == "Q: {question}"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nprompt_template: 'no slot'\ncolour: red\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*prompt_template.*colour"):
        resolve(str(bad))
    with pytest.raises(ValueError, match="group"):
        BenchmarkSpec(name="x", answer_pattern="ANSWER")


def test_scoring_by_pattern_and_metric() -> None:
    spec = BenchmarkSpec(name="x", answer_pattern=r"ANSWER: (\w+)", metric="exact")
    assert spec.score("ANSWER: Paris ... ANSWER: Rome", "rome") == ("Rome", True)
    assert spec.score("no answer here", "rome") == (None, False)
    math = BenchmarkSpec(name="m")
    assert math.score("so the total is Final Answer: $72.00", "72") == ("$72.00", True)
    assert math.score("The answer is (B)", "B")[1]


def test_contamination_guard_ignores_template_wording() -> None:
    from frugal.evaluation.contamination import find_overlaps
    from frugal.questions import Question

    template = "A subscription starts on May {d}, 2020 and ends {n} days later. On what date?"
    training = [template.format(d=d % 28 + 1, n=d + 10) for d in range(300)]
    training.append("Leaked: the quick brown fox jumps over the lazy dog near the river bank")
    fresh = Question(id="a", question=template.format(d=3, n=999), answer="x", source="t")
    leaked = Question(id="b", question="The quick brown fox jumps over the lazy dog near the "
                      "river bank?", answer="x", source="t")
    found = find_overlaps([fresh, leaked], training)
    assert [o.question_id for o in found] == ["b"]
    assert found[0].shared == "the quick brown fox jumps over the lazy"  # its earliest 8-gram


@pytest.mark.parametrize(("content", "where", "problem"), [
    (b"name: mine\nsource: tasks\n  limit: 2\n", "line 3, column 8", "not valid YAML"),
    (b"name: mine\nsource: t\xe2sks\n", "line 2, column 10", "not UTF-8 text"),
    (b"- name: mine\n- source: tasks\n", "", "a benchmark spec is a mapping"),
])
def test_a_corrupt_spec_file_names_the_line_and_the_fix(tmp_path: Path, content: bytes,
                                                         where: str, problem: str) -> None:
    spec = tmp_path / "mine.yaml"
    spec.write_bytes(content)
    with pytest.raises(ValueError) as raised:
        resolve(str(spec))
    message = str(raised.value)
    assert message.startswith(f"{spec}{', ' if where else ''}{where}: {problem}")
    assert "Fix: correct the YAML" in message
