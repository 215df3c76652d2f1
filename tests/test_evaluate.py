"""`frugal eval` on a tiny model: the sweep, budgets, metrics, resume, contamination, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from peft import LoraConfig, get_peft_model
from typer.testing import CliRunner

from frugal import evaluate
from frugal.cli import app
from frugal.evaluate import EvalConfig
from frugal.evaluation.benchmarks import BenchmarkSpec, load_questions
from frugal.ledger import read_ledger
from frugal.run_files import RunFileError

from .conftest import tiny_model

REPO = Path(__file__).resolve().parents[1]
# Six questions, one per family, so every test evaluates the same small, varied set.
BENCH = BenchmarkSpec(name="mini", per_family=1, difficulties=[1])


def config(tiny_dir: Path, **overrides: Any) -> EvalConfig:
    settings: dict[str, Any] = {
        "model": str(tiny_dir), "benchmark": BENCH, "max_thinking_tokens": [4, 8, 16],
        "max_answer_tokens": 4, "batch_size": 4,
    }
    return EvalConfig(**(settings | overrides))


def results(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / evaluate.RESULTS).read_text().splitlines()]


def test_sweep_gives_one_point_per_budget_within_budget(tmp_path: Path, tiny_dir: Path) -> None:
    result = evaluate.run(config(tiny_dir, machine_price_per_hour=3.6), tmp_path)
    summary = result.summary
    assert [p.max_thinking_tokens for p in summary.points] == [4, 8, 16]
    assert all(p.questions == 6 and p.generations == 6 for p in summary.points)
    rows = results(result.directory)
    assert len(rows) == 18 and result.generated == 18
    for row in rows:
        assert row["thinking_tokens"] <= row["max_thinking_tokens"]
        assert {"prompt", "thinking", "answer", "extracted", "correct", "answer_tokens"} <= set(row)
    # A random model never ends its thinking: every budget is used in full, and enforced.
    assert [p.mean_thinking_tokens for p in summary.points] == [4, 8, 16]
    assert summary.control == 1.0
    assert summary.performance == max(p.accuracy for p in summary.points)
    low, high = summary.points[0].ci95
    assert 0 <= low <= summary.points[0].accuracy <= high <= 1
    assert (tmp_path / evaluate.SCALING_PLOT).stat().st_size > 1000
    assert json.loads((result.directory / evaluate.SUMMARY).read_text())["label"] == "base"
    entry = read_ledger(tmp_path).entries[-1]
    assert entry.stage == "eval" and entry.generations == 18 and entry.dollars > 0


def test_wait_sweep_and_minimum(tmp_path: Path, tiny_dir: Path) -> None:
    result = evaluate.run(
        config(tiny_dir, max_thinking_tokens=[12], num_waits=[0, 2], min_thinking_tokens=6),
        tmp_path,
    )
    assert [p.budget for p in result.summary.points] == ["think12-waits0", "think12-waits2"]
    assert all(6 <= r["thinking_tokens"] <= 12 for r in results(result.directory))
    assert result.summary.control == 1.0


def test_waits_run_at_the_best_budget_of_the_sweep(tmp_path: Path, tiny_dir: Path) -> None:
    # The budget sweep first; then mark budget 8 as the one that scored best (a random model
    # answers nothing right), as a resumed evaluation reads it back.
    first = evaluate.run(config(tiny_dir), tmp_path)
    path = first.directory / evaluate.RESULTS
    rows = results(first.directory)
    for row in rows:
        row["correct"] = row["max_thinking_tokens"] == 8 and row["id"] != rows[0]["id"]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    swept = evaluate.run(config(tiny_dir, num_waits=[0, 1, 2], waits_at="best-budget"), tmp_path)
    assert swept.generated == 12  # 6 questions at 1 and at 2 Waits, the sweep resumed
    assert [p.budget for p in swept.summary.points] == [
        "think4-waits0", "think8-waits0", "think16-waits0", "think8-waits1", "think8-waits2"]
    waited = [r for r in results(swept.directory) if r["num_waits"]]
    assert {r["max_thinking_tokens"] for r in waited} == {8}
    # A tie goes to the smaller budget: the same accuracy for less thinking.
    other = tmp_path / "tie"
    tied = evaluate.run(config(tiny_dir, num_waits=[0, 1], waits_at="best-budget"), other)
    assert [p.budget for p in tied.summary.points][-1] == "think4-waits1"


def test_sampling_reports_majority_and_pass_at_k(tmp_path: Path, tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="identical"):
        config(tiny_dir, samples=3)
    result = evaluate.run(
        config(tiny_dir, max_thinking_tokens=[4], samples=3, temperature=1.0), tmp_path
    )
    point = result.summary.points[0]
    assert point.generations == 18 and point.questions == 6
    assert 0 <= point.model_extra["maj@3"] <= point.model_extra["pass@3"] <= 1
    rows = results(result.directory)
    # Samples of one question differ (they are seeded apart).
    by_question: dict[str, set[str]] = {}
    for row in rows:
        by_question.setdefault(row["id"], set()).add(row["thinking"])
    assert any(len(texts) > 1 for texts in by_question.values())


def test_a_rerun_resumes_and_other_settings_are_refused(tmp_path: Path, tiny_dir: Path) -> None:
    first = evaluate.run(config(tiny_dir, max_thinking_tokens=[4]), tmp_path)
    assert first.generated == 6
    # A partial line left by a kill is trimmed and its generation made again.
    path = first.directory / evaluate.RESULTS
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]) + lines[4][:20])
    again = evaluate.run(config(tiny_dir, max_thinking_tokens=[4, 8]), tmp_path)
    assert again.generated == 2 + 6
    assert results(again.directory)[:4] == [json.loads(line) for line in lines[:4]]
    assert len(results(again.directory)) == 12
    with pytest.raises(evaluate.SettingsMismatchError, match="max_answer_tokens"):
        evaluate.run(config(tiny_dir, max_answer_tokens=8), tmp_path)


def test_killed_evaluation_resumes_without_recomputing(tmp_path: Path, tiny_dir: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "frugal.cli", "eval", "--run", str(run_dir), "--model",
        str(tiny_dir), "--benchmark", "tasks", "--limit", "40", "--max-thinking-tokens", "48",
        "--max-answer-tokens", "8", "--batch-size", "2",
    ]
    results_path = run_dir / "eval" / "base" / evaluate.RESULTS
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=os.environ | {"COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if results_path.is_file() and len(results_path.read_bytes().splitlines()) >= 5:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = results_path.read_bytes().splitlines()
    finished = [json.loads(line) for line in before if line.endswith(b"}")]
    assert 5 <= len(finished) < 40
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env=os.environ | {"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    after = results(results_path.parent)
    assert after[: len(finished)] == finished  # nothing finished was redone or rewritten
    assert len(after) == 40 and len({r["id"] for r in after}) == 40
    made = 40 - len(finished)
    assert f"{made} generations made, {len(finished)} resumed" in done.stdout


def make_adapter(run_dir: Path, tiny_dir: Path, name: str = "default") -> Path:
    model = get_peft_model(
        tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    path = run_dir / "adapters" / name
    model.save_pretrained(path)
    (path / "frugal-train.json").write_text(json.dumps({"base_model": str(tiny_dir)}))
    return path


def test_adapter_is_evaluated_and_contamination_is_flagged(tmp_path: Path, tiny_dir: Path) -> None:
    leaked = next(q for q in load_questions(BENCH) if len(q.question.split()) >= 8)
    (tmp_path / "selected.jsonl").write_text(json.dumps({
        "id": "x", "question": f"Restated: {leaked.question}", "thinking": "t", "answer": "a",
    }) + "\n")
    make_adapter(tmp_path, tiny_dir)
    base = evaluate.run(config(tiny_dir, max_thinking_tokens=[4]), tmp_path)
    tuned = evaluate.run(
        config(tiny_dir, model=None, adapter="default", max_thinking_tokens=[4]), tmp_path
    )
    assert tuned.summary.label == "default" and tuned.summary.model == str(tiny_dir)
    assert [o.question_id for o in tuned.overlaps] == [leaked.id]
    assert tuned.summary.contamination["overlapping_questions"] == 1
    assert base.overlaps == []  # a base model's training data is unknown
    # The adapter changes the outputs (its LoRA weights are random, not zero).
    assert [r["thinking"] for r in results(base.directory)] != [
        r["thinking"] for r in results(tuned.directory)
    ]
    assert set(evaluate.read_summaries(tmp_path)) == {"base", "default"}
    with pytest.raises(FileNotFoundError, match="found: default"):
        evaluate.run(config(tiny_dir, adapter="missing"), tmp_path)


def test_cli_prints_the_table_of_every_model(tmp_path: Path, tiny_dir: Path) -> None:
    make_adapter(tmp_path, tiny_dir, "tuned")
    runner = CliRunner()
    common = ["eval", "--run", str(tmp_path), "--limit", "3", "--max-thinking-tokens", "4,8",
              "--max-answer-tokens", "4"]
    assert runner.invoke(app, [*common, "--model", str(tiny_dir)]).exit_code == 0
    shown = runner.invoke(app, [*common, "--adapter", "tuned"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "base" in shown.output and "tuned" in shown.output and "think8-waits0" in shown.output
    assert "test-time-scaling.png" in shown.output
    bad = runner.invoke(app, [*common, "--model", str(tiny_dir), "--samples", "2"])
    assert bad.exit_code == 1 and "temperature" in bad.output


# -- a damaged results.jsonl -----------------------------------------------------------------------
# A crash can only damage the end of an append-only file: that tail is trimmed and re-generated.
TORN_TAILS = {
    "cut-short line": lambda row: row[:25],
    "NUL bytes": lambda row: b"\0" * 300,
    "cut short, then NUL bytes": lambda row: row[:25] + b"\0" * 100,
    "cut inside a UTF-8 character": lambda row: b'{"budget": "think4-waits0", "id": "caf\xc3',
}


@pytest.mark.parametrize("tail", list(TORN_TAILS))
def test_a_torn_tail_is_trimmed_and_resumed(tmp_path: Path, tiny_dir: Path, tail: str) -> None:
    first = evaluate.run(config(tiny_dir, max_thinking_tokens=[4]), tmp_path)
    path = first.directory / evaluate.RESULTS
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 6
    path.write_bytes(b"".join(lines[:4]) + TORN_TAILS[tail](lines[4]))
    assert len(evaluate._read_results(path)) == 4
    assert path.read_bytes() == b"".join(lines[:4])  # trimmed back to the last complete row
    path.write_bytes(b"".join(lines[:4]) + TORN_TAILS[tail](lines[4]))
    again = evaluate.run(config(tiny_dir, max_thinking_tokens=[4]), tmp_path)
    assert again.generated == 2
    after = path.read_bytes().splitlines(keepends=True)
    assert after[:4] == lines[:4] and len(after) == 6  # rows before kept, nothing left over
    assert {r["id"] for r in results(first.directory)} == {json.loads(x)["id"] for x in lines}


# Damage before a valid row is not a crash: an error names the line; no row is dropped.
BAD_MIDDLE_LINES = {
    "invalid JSON": (b'{"budget": "think4-waits0", "id": \n', "not valid JSON"),
    "invalid UTF-8": (b'{"budget": "think4-waits0", "id": "caf\xe9"}\n', "not UTF-8 text"),
    "not an object": (b'["think4-waits0", "q1", 0]\n', "not a result row"),
    "NUL bytes": (b"\0" * 40 + b"\n", "only NUL bytes"),
}


@pytest.mark.parametrize("bad", list(BAD_MIDDLE_LINES))
def test_a_bad_line_before_good_rows_is_a_clear_error(tmp_path: Path, bad: str) -> None:
    path = tmp_path / evaluate.RESULTS
    rows = [json.dumps({"budget": "think4-waits0", "id": f"q{i}", "sample": 0}).encode() + b"\n"
            for i in range(4)]
    line, problem = BAD_MIDDLE_LINES[bad]
    content = b"".join(rows[:2]) + line + b"".join(rows[2:])
    path.write_bytes(content)
    with pytest.raises(RunFileError) as raised:
        evaluate._read_results(path)
    assert str(raised.value).startswith(f"{path}, line 3")
    assert problem in str(raised.value) and "delete that line" in str(raised.value)
    assert path.read_bytes() == content  # nothing trimmed or rewritten


def test_cli_names_the_bad_results_line_and_the_bad_benchmark_spec(tmp_path: Path,
                                                                   tiny_dir: Path) -> None:
    runner = CliRunner()
    common = ["eval", "--run", str(tmp_path), "--model", str(tiny_dir), "--limit", "3",
              "--max-thinking-tokens", "4", "--max-answer-tokens", "4"]
    assert runner.invoke(app, common).exit_code == 0
    path = tmp_path / evaluate.EVAL_DIR / "base" / evaluate.RESULTS
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"{oops\n" + b"".join(lines[1:]))
    shown = runner.invoke(app, common)
    assert shown.exit_code == 1 and isinstance(shown.exception, SystemExit)  # no traceback
    assert f"error: {path}, line 2, column 2: not valid JSON" in shown.output
    assert "Fix: delete that line" in shown.output

    spec = tmp_path / "mine.yaml"
    spec.write_text("name: mine\nsource: tasks\nprompt_template: 'Q: {question}\nlimit: 2\n")
    shown = runner.invoke(app, [*common, "--label", "spec", "--benchmark", str(spec)])
    assert shown.exit_code == 1 and isinstance(shown.exception, SystemExit)
    assert f"error: {spec}, line 5, column 1: not valid YAML" in shown.output
    assert "Fix: correct the YAML" in shown.output
