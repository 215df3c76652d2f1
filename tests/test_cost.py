"""`frugal cost`: estimates from the recipe's own data and speeds measured here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from frugal.cli import app
from frugal.cost import estimate
from frugal.recipes import load_recipe


def write_recipe(tmp_path: Path, tiny_dir: Path, teacher: str) -> Path:
    path = tmp_path / "r.yaml"
    openai = ("  openai: {model: teacher-x, max_tokens: 1000}\n"
              "  prices: {input_per_million: 1.0, output_per_million: 4.0}\n"
              if teacher == "openai" else "")
    if teacher in ("hf", "self"):
        openai = (f"  local: {{model: {tiny_dir}, samples: 3, budget: {{max_thinking_tokens: 40, "
                  "max_answer_tokens: 10}}\n")
    pool = ("{source: gsm8k, limit: 30}" if teacher == "dataset"
            else "{per_family: 5, difficulties: [1]}")
    path.write_text(f"name: r\nmodel: {tiny_dir}\nmachine_price_per_hour: 1.8\n"
                    f"pool: {pool}\n"
                    f"distill:\n  teacher: {teacher}\n{openai}"
                    "curate: {target: 20}\ntrain: {epochs: 2}\n"
                    "eval: {benchmark: {name: m, per_family: 2}, max_thinking_tokens: [8, 16],"
                    " max_answer_tokens: 8}\n")
    return path


def test_program_teacher_costs_only_compute(tmp_path: Path, tiny_dir: Path) -> None:
    found = estimate(load_recipe(str(write_recipe(tmp_path, tiny_dir, "program"))))
    assert found.questions == 30 and found.teacher_dollars == 0.0
    assert found.train_examples == 20 and found.train_tokens > 20 * 2 * 20
    assert found.train_tokens_per_second > 0 and found.decode_tokens_per_second > 0
    # 12 questions x 2 budgets x 2 models, each at most (mean budget 12 + answer 8) tokens.
    assert found.eval_generations == 48 and found.eval_tokens == 48 * 20
    seconds = found.train_seconds + found.eval_seconds
    assert abs(found.compute_dollars - seconds / 3600 * 1.8) < 1e-9
    assert found.total_dollars == found.compute_dollars


def test_the_estimate_says_when_the_specialist_pays_for_itself(tmp_path: Path,
                                                               tiny_dir: Path) -> None:
    recipe = load_recipe(str(write_recipe(tmp_path, tiny_dir, "program")),
                         ["reference_api.prices.input_per_million=100",
                          "reference_api.prices.output_per_million=400"])
    found = estimate(recipe)
    assert found.prompt_tokens_per_request > 0 and found.output_tokens_per_request > 0
    assert found.reference_dollars_per_request == pytest.approx(
        (round(found.prompt_tokens_per_request) * 100
         + round(found.output_tokens_per_request) * 400) / 1e6)
    # The one-off cost is the teacher's and training's; each request is decoding time.
    assert found.one_off_dollars == pytest.approx(found.train_seconds / 3600 * 1.8)
    assert found.specialist_dollars_per_request == pytest.approx(
        found.output_tokens_per_request / found.decode_tokens_per_second / 3600 * 1.8)
    assert found.break_even_requests == pytest.approx(found.one_off_dollars / (
        found.reference_dollars_per_request - found.specialist_dollars_per_request))
    plot = tmp_path / "break-even.png"
    shown = CliRunner().invoke(app, [
        "cost", str(write_recipe(tmp_path, tiny_dir, "program")), "--plot", str(plot),
        "--set", "reference_api.prices.output_per_million=400"])
    assert shown.exit_code == 0, shown.output
    assert "pays for itself after" in shown.stdout and plot.stat().st_size > 1000
    # An API priced at nothing is never beaten.
    free = estimate(load_recipe(str(write_recipe(tmp_path, tiny_dir, "program")),
                                ["reference_api.prices.input_per_million=0",
                                 "reference_api.prices.output_per_million=0"]))
    assert free.break_even_requests is None


def test_api_teacher_is_priced_at_its_worst_case(tmp_path: Path, tiny_dir: Path) -> None:
    found = estimate(load_recipe(str(write_recipe(tmp_path, tiny_dir, "openai"))))
    assert found.teacher_output_tokens == 30 * 1000
    expected = found.teacher_input_tokens / 1e6 * 1.0 + 30_000 / 1e6 * 4.0
    assert abs(found.teacher_dollars - expected) < 1e-9
    assert found.total_dollars > found.teacher_dollars


def test_dataset_teacher_costs_only_compute(tmp_path: Path, tiny_dir: Path) -> None:
    found = estimate(load_recipe(str(write_recipe(tmp_path, tiny_dir, "dataset"))))
    assert found.questions == 30 and found.teacher_dollars == 0.0
    assert found.train_tokens > 20 * 2 * 50  # GSM8K solutions are longer than the prompts
    assert found.total_dollars == found.compute_dollars


@pytest.mark.parametrize(("teacher", "answers"), [("hf", 30), ("self", 90)])
def test_local_teachers_are_priced_at_their_decoding_time(
        tmp_path: Path, tiny_dir: Path, teacher: str, answers: int) -> None:
    found = estimate(load_recipe(str(write_recipe(tmp_path, tiny_dir, teacher))))
    # Every answer (three per question for self) thinks 40 tokens and answers 10, at most.
    assert found.teacher_output_tokens == answers * 50
    assert found.teacher_seconds > 0
    assert abs(found.teacher_dollars - found.teacher_seconds / 3600 * 1.8) < 1e-12
    assert found.total_dollars == found.teacher_dollars + found.compute_dollars
    assert found.train_tokens > 20 * 2 * 50  # traces priced at the budget, not a missing field


def test_cli_prints_json(tmp_path: Path, tiny_dir: Path) -> None:
    shown = CliRunner().invoke(app, ["cost", str(write_recipe(tmp_path, tiny_dir, "program")),
                                     "--json", "--set", "train.epochs=1"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout.strip().splitlines()[-1])["questions"] == 30
