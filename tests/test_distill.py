"""`frugal distill`: teachers, the cache that never loses a paid call, the cost cap, the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from frugal import distill
from frugal.distill import DistillConfig
from frugal.events import RecordedEvents
from frugal.ledger import TokenPrices, read_ledger
from frugal.pool import PoolConfig, local_gsm8k
from frugal.pool import run as build_pool
from frugal.run_files import TEACHER_CACHE
from frugal.teacher_cache import TeacherCache
from frugal.teachers.local import LocalTeacherConfig
from frugal.teachers.openai_teacher import OpenAITeacherConfig

from .conftest import tiny_model
from .teachers.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]


def task_pool(run_dir: Path, per_family: int = 2) -> int:
    return len(build_pool(PoolConfig(source="tasks", per_family=per_family), run_dir).questions)


def openai_config(server: FakeOpenAIServer, **overrides: Any) -> OpenAITeacherConfig:
    settings = {"base_url": server.base_url, "model": "fake-teacher", "concurrency": 4,
                "max_retries": 4, "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 5.0}
    return OpenAITeacherConfig(**{**settings, **overrides})


def read_traces(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "traces.jsonl").read_text().splitlines()]


def test_program_teacher_writes_correct_traces_and_never_pays_twice(tmp_path: Path) -> None:
    total = task_pool(tmp_path)
    first = distill.run(DistillConfig(teacher="program"), tmp_path)
    assert len(first.traces) == total and first.calls == total
    assert all(t.correct for t in first.traces)  # the families' own solutions are right
    assert all(t.thinking and t.answer.startswith("Final Answer:") for t in first.traces)
    again = distill.run(DistillConfig(teacher="program"), tmp_path)
    assert again.calls == 0 and again.traces == first.traces
    with TeacherCache(tmp_path / TEACHER_CACHE) as cache:
        assert len(cache) == total
    entries = read_ledger(tmp_path).entries
    assert [e.calls for e in entries] == [total, 0]


@pytest.mark.skipif(local_gsm8k() is None, reason="no local GSM8K (../shared/data)")
def test_dataset_teacher_uses_gsm8k_solutions(tmp_path: Path) -> None:
    build_pool(PoolConfig(source="gsm8k", limit=20), tmp_path)
    result = distill.run(DistillConfig(teacher="dataset"), tmp_path)
    assert len(result.traces) == 20 and all(t.correct for t in result.traces)
    assert "Natalia sold 48/2 = 24 clips in May." in result.traces[0].thinking


def test_program_teacher_refuses_questions_without_a_generator(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 6 times 7?", "answer": "42"}) + "\n")
    build_pool(PoolConfig(source=str(data)), tmp_path)
    result = distill.run(DistillConfig(teacher="program"), tmp_path)
    assert result.traces == [] and len(result.failed) == 1
    assert "dataset teacher" in next(iter(result.failed.values()))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    path = tmp_path_factory.mktemp("tiny-teacher")
    tiny_model().save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


def local(model: Path, **overrides: Any) -> LocalTeacherConfig:
    from frugal.generation import BudgetConfig

    budget = BudgetConfig(max_thinking_tokens=6, max_answer_tokens=4)
    return LocalTeacherConfig(model=str(model), budget=budget, batch_size=4, **overrides)


def test_hf_teacher_answers_through_the_engine(tmp_path: Path, tiny_dir: Path) -> None:
    total = task_pool(tmp_path, per_family=1)
    config = DistillConfig(teacher="hf", local=local(tiny_dir), machine_price_per_hour=3.6)
    result = distill.run(config, tmp_path)
    assert len(result.traces) == total and result.calls == total
    assert all(t.tokens.output > 0 and t.model == str(tiny_dir) for t in result.traces)
    entry = read_ledger(tmp_path).entries[-1]
    assert entry.compute_dollars == pytest.approx(entry.compute_seconds / 1000, abs=1e-6)
    assert distill.run(config, tmp_path).calls == 0


def test_self_teacher_samples_k_and_records_the_pass_rate(tmp_path: Path, tiny_dir: Path) -> None:
    total = task_pool(tmp_path, per_family=1)
    result = distill.run(DistillConfig(teacher="self", local=local(tiny_dir, samples=3)), tmp_path)
    assert len(result.traces) == total
    assert all(t.samples == 3 and 0.0 <= t.pass_rate <= 1.0 for t in result.traces)
    with TeacherCache(tmp_path / TEACHER_CACHE) as cache:
        stored = cache.get(cache_keys(tmp_path, result)[0])
    texts = [c["thinking"] + c["answer"] for c in stored["completions"]]
    assert len(texts) == 3 and len(set(texts)) > 1  # sampled, not three copies of one answer


def cache_keys(run_dir: Path, result: distill.DistillResult) -> list[str]:
    import sqlite3

    with sqlite3.connect(run_dir / TEACHER_CACHE) as db:
        return [row[0] for row in db.execute("SELECT key FROM responses")]


def test_openai_teacher_prices_each_call(tmp_path: Path) -> None:
    total = task_pool(tmp_path)
    prices = TokenPrices(
        input_per_million=1.0, output_per_million=4.0, cached_input_per_million=0.1
    )
    with FakeOpenAIServer(plan={}) as server:
        config = DistillConfig(teacher="openai", openai=openai_config(server), prices=prices)
        result = distill.run(config, tmp_path)
        assert sum(server.answered.values()) == total
    assert len(result.traces) == total
    expected = sum(
        prices.cost(t.tokens.input, t.tokens.output, t.tokens.cached_input)
        for t in result.traces
    )
    assert result.dollars == pytest.approx(expected)
    assert read_ledger(tmp_path).total_dollars == pytest.approx(expected, abs=1e-6)


def test_cost_cap_stops_issuing_calls_before_crossing_it(tmp_path: Path) -> None:
    task_pool(tmp_path, per_family=4)
    # Each call is estimated at (about 60 input + 100 output tokens) at $1000/M: ~$0.16.
    prices = TokenPrices(input_per_million=1000.0, output_per_million=1000.0)
    with FakeOpenAIServer(prices=(1000.0, 1000.0)) as server:
        config = DistillConfig(
            teacher="openai",
            openai=openai_config(server, max_tokens=100, concurrency=1),
            prices=prices,
            max_cost=0.5,
        )
        events = RecordedEvents()
        result = distill.run(config, tmp_path, events)
        calls, billed = server.total_calls, server.billed_dollars
    assert result.stopped_by_cost
    # What it said went through the events channel: the bar's dollars are what was paid,
    # and the cap is a warning note.
    (bar,) = events.bars
    assert bar.closed and bar.total == 24 and bar.figures["dollars"] == pytest.approx(billed)
    assert any("max_cost" in message and warning for message, warning in events.notes)
    assert billed <= 0.5 and read_ledger(tmp_path).total_dollars == pytest.approx(billed)
    assert 1 <= calls < len(result.traces) + 1 < 21 and result.calls == calls
    assert len(result.traces) == calls  # every call issued was paid and kept
    assert result.dollars <= 0.5
    assert read_ledger(tmp_path).total_dollars <= 0.5
    # The cap is for the run directory: a second run with the same cap pays for nothing more.
    with FakeOpenAIServer() as server:
        config.openai = openai_config(server, max_tokens=100, concurrency=1)
        again = distill.run(config, tmp_path)
        assert server.total_calls == 0
    assert again.stopped_by_cost and again.calls == 0


def test_a_crashing_teacher_still_writes_its_ledger_entry(
    tmp_path: Path, smollm2_tokenizer: Any
) -> None:
    broken = tmp_path / "broken-model"  # a config and a tokenizer, but no weights
    tiny_model().config.save_pretrained(broken)
    smollm2_tokenizer.save_pretrained(broken)
    run_dir = tmp_path / "run"
    task_pool(run_dir, per_family=1)
    config = DistillConfig(teacher="hf", local=LocalTeacherConfig(model=str(broken)))
    with pytest.raises(OSError):
        distill.run(config, run_dir)
    tmp_path = run_dir
    entry = read_ledger(tmp_path).entries[-1]
    assert entry.stage == "distill" and entry.calls == 0


def test_a_chat_teacher_that_reasons_in_its_answer_text_yields_traces_with_thinking(
    tmp_path: Path
) -> None:
    total = task_pool(tmp_path, per_family=1)
    prices = TokenPrices(input_per_million=1.0, output_per_million=2.0)
    with FakeOpenAIServer(reasoning_mode="content", prices=(1.0, 2.0)) as server:
        config = DistillConfig(teacher="openai", openai=openai_config(server), prices=prices)
        events = RecordedEvents()
        result = distill.run(config, tmp_path, events)
        billed = server.billed_dollars
    assert len(result.traces) == total
    assert all(t.thinking.startswith("Let me think about:") and t.thinking_from == "content"
               and t.answer == "Final Answer: 42" for t in result.traces)
    assert read_ledger(tmp_path).total_dollars == pytest.approx(billed)
    # The start says what this teacher gives, from its first reply.
    assert any("reasons in its reply's text" in note for note, _ in events.notes)
    # Read under another setting, the same cached replies are split again: no call is made.
    with FakeOpenAIServer() as server:
        config.openai = openai_config(server, thinking_source="field")
        again = distill.run(config, tmp_path)
        assert server.total_calls == 0
    assert all(t.thinking == "" and t.thinking_from == "none" for t in again.traces)


def test_a_hidden_reasoning_teacher_stops_distill_and_is_not_asked_again(tmp_path: Path) -> None:
    task_pool(tmp_path, per_family=1)
    prices = TokenPrices(input_per_million=1.0, output_per_million=2.0)
    with FakeOpenAIServer(reasoning_mode="hidden", prices=(1.0, 2.0)) as server:
        config = DistillConfig(teacher="openai", prices=prices,
                               openai=openai_config(server, concurrency=1))
        result = distill.run(config, tmp_path)
        calls, billed = server.total_calls, server.billed_dollars
    assert calls == 1 and result.stopped and "hides its reasoning" in result.stopped
    assert not result.complete and len(result.traces) == 1
    assert result.traces[0].thinking_from == "hidden"
    assert read_ledger(tmp_path).total_dollars == pytest.approx(billed)  # charged
    with FakeOpenAIServer(reasoning_mode="hidden") as server:
        config.openai = openai_config(server, concurrency=1)
        again = distill.run(config, tmp_path)
        assert server.total_calls == 0
    assert again.stopped and "not asking" in again.stopped


def test_the_chat_style_needs_a_server_and_is_for_the_hf_teacher() -> None:
    with pytest.raises(ValueError, match="chat-completions server.*--local-engine"):
        DistillConfig(teacher="hf", local={"style": "chat"})
    with pytest.raises(ValueError, match="for the hf teacher"):
        DistillConfig(teacher="self", local={"style": "chat", "engine": "llama.cpp"})
    assert DistillConfig(teacher="hf", local={"style": "chat", "engine": "vllm"}).local.engine
