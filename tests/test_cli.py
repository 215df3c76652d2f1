"""The `frugal` command line, run in-process with typer's runner on a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from frugal.cli import app

from .conftest import tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    path = tmp_path_factory.mktemp("tiny-cli-model")
    tiny_model().save_pretrained(path)
    smollm2_tokenizer.save_pretrained(path)
    return path


def test_help_lists_generate() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "generate" in result.output


def test_generate_json_respects_the_budget(tiny_dir: Path) -> None:
    result = runner.invoke(
        app,
        ["generate", "What is 2+3?", "--model", str(tiny_dir), "--max-thinking-tokens", "8",
         "--max-answer-tokens", "5", "--reference", "5", "--json"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["thinking_tokens"] == 8 and record["forced_max"] is True
    assert record["answer_tokens"] <= 5
    assert record["format"] == "chatml-s1"
    assert record["correct"] is False  # a random-weight model does not know 2+3


def test_generate_prints_thinking_and_answer_apart(tiny_dir: Path) -> None:
    result = runner.invoke(
        app, ["generate", "Hi", "-m", str(tiny_dir), "--max-thinking-tokens", "4",
              "--max-answer-tokens", "3"],
    )
    assert result.exit_code == 0, result.output
    assert "Thinking: 4 tokens" in result.output and "Answer:" in result.output


def test_unknown_model_is_one_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", "Hi", "-m", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 1
    assert "GGUF file not found" in result.output


def test_inconsistent_budget_names_the_flag(tiny_dir: Path) -> None:
    result = runner.invoke(
        app, ["generate", "Hi", "-m", str(tiny_dir), "--max-thinking-tokens", "4",
              "--min-thinking-tokens", "9"],
    )
    assert result.exit_code == 1
    assert "min_thinking_tokens" in result.output


@pytest.mark.integration
def test_generate_on_smollm2() -> None:
    result = runner.invoke(
        app,
        ["generate", "Natalia sold 48 clips in April and half as many in May. How many in all?",
         "--max-thinking-tokens", "64", "--num-waits", "1", "--max-answer-tokens", "16", "--json"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["thinking_tokens"] <= 64 and record["answer_tokens"] <= 16
    assert record["waits"] <= 1
    assert record["answer"].startswith("Final Answer:") or not record["forced_max"]


@pytest.mark.integration
def test_generate_on_gemma3() -> None:
    result = runner.invoke(
        app,
        ["generate", "What is 12 times 7?", "-m", "gemma3-270m", "--max-thinking-tokens", "16",
         "--num-waits", "1", "--max-answer-tokens", "8", "--json"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["format"] == "plain"
    assert record["thinking_tokens"] <= 16 and record["answer_tokens"] <= 8


def test_pool_then_distill(tmp_path: Path) -> None:
    run = tmp_path / "run"
    made = runner.invoke(app, ["pool", "--run", str(run), "--per-family", "2",
                               "--families", "arithmetic,dates"])
    assert made.exit_code == 0, made.output
    assert len((run / "pool.jsonl").read_text().splitlines()) == 4
    distilled = runner.invoke(app, ["distill", "--run", str(run), "--teacher", "program"])
    assert distilled.exit_code == 0, distilled.output
    traces = [json.loads(line) for line in (run / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 4 and all(t["correct"] for t in traces)


def test_distill_without_a_pool_says_what_to_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["distill", "--run", str(tmp_path)])
    assert result.exit_code == 1
    assert "frugal pool" in result.output


def test_openai_teacher_needs_a_model(tmp_path: Path) -> None:
    runner.invoke(app, ["pool", "--run", str(tmp_path), "--per-family", "1"])
    result = runner.invoke(app, ["distill", "--run", str(tmp_path), "--teacher", "openai"])
    assert result.exit_code == 1
    assert "--model" in result.output
