"""`frugal pool`: task families, GSM8K and files into pool.jsonl."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from frugal.pool import PoolConfig, local_gsm8k, read_pool, run
from frugal.questions import FieldMap, question_id


def test_task_pool_is_stable_and_keeps_generator_parameters(tmp_path: Path) -> None:
    config = PoolConfig(source="tasks", per_family=4, seed=3)
    first = run(config, tmp_path / "a")
    second = run(config, tmp_path / "b")
    assert first.path.read_text() == second.path.read_text()
    questions = read_pool(tmp_path / "a")
    assert len(questions) == 4 * len(first.domains) and len(first.domains) >= 5
    assert all(q.id == question_id(q.question) for q in questions)
    assert all(q.meta and q.meta["family"] == q.domain for q in questions)
    assert all(q.solution for q in questions)


def test_task_pool_filters_families_and_limits(tmp_path: Path) -> None:
    config = PoolConfig(source="tasks", families=["arithmetic", "dates"], per_family=5, limit=7)
    result = run(config, tmp_path)
    assert len(result.questions) == 7
    assert set(result.domains) <= {"arithmetic", "dates"}


@pytest.mark.skipif(local_gsm8k() is None, reason="no local GSM8K (../shared/data)")
def test_gsm8k_pool_keeps_the_human_solution(tmp_path: Path) -> None:
    result = run(PoolConfig(source="gsm8k", limit=10), tmp_path)
    first = read_pool(tmp_path)[0]
    assert len(result.questions) == 10
    assert first.answer == "72" and first.source == "gsm8k"
    assert first.solution and "<<" not in first.solution


def test_file_pool_with_mapped_columns(tmp_path: Path) -> None:
    data = tmp_path / "mine.csv"
    with data.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "target", "topic"])
        writer.writerow(["What is 6 times 7?", "42", "arithmetic"])
        writer.writerow(["What is 10 minus 3?", "7", "arithmetic"])
    config = PoolConfig(
        source=str(data), fields=FieldMap(question="prompt", answer="target", domain="topic")
    )
    result = run(config, tmp_path / "run")
    assert [q.answer for q in result.questions] == ["42", "7"]
    assert read_pool(tmp_path / "run") == result.questions


def test_missing_pool_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="frugal pool"):
        read_pool(tmp_path)
