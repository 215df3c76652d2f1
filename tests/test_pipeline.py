"""`frugal run` end to end on the tiny model: every stage, skipping, re-running, the report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from frugal import pipeline
from frugal.cli import app
from frugal.ledger import read_ledger
from frugal.recipes import load_recipe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def tiny_recipe(tmp_path: Path, tiny_dir: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny
model: {tiny_dir}
machine_price_per_hour: 3.6
pool: {{per_family: 2, difficulties: [1]}}
distill: {{teacher: program}}
curate: {{target: 8}}
train: {{max_steps: 2, batch_size: 2, save_steps: 1}}
eval:
  benchmark: {{name: mini, per_family: 1, difficulties: [1]}}
  max_thinking_tokens: [4, 8]
  max_answer_tokens: 4
""")
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    tmp = tmp_path_factory.mktemp("pipeline")
    recipe = load_recipe(str(tiny_recipe(tmp, tiny_dir)))
    result = pipeline.run(recipe, tmp / "run")
    assert result.ran == list(pipeline.STAGES)
    return tmp / "run"


def test_every_stage_writes_its_outputs(finished_run: Path) -> None:
    for name in ("recipe.yaml", "pool.jsonl", "traces.jsonl", "selected.jsonl",
                 "adapters/default/adapter_config.json", "eval/base/summary.json",
                 "eval/default/summary.json", "plots/test-time-scaling.png",
                 "plots/training-loss.png", "report.md", "report.html"):
        assert (finished_run / name).is_file(), name
    stages = {e["stage"] for e in read_ledger(finished_run)["entries"]}
    assert {"pool", "distill", "curate", "train", "eval", "report"} <= stages
    report = (finished_run / "report.md").read_text()
    for heading in ("## Headline", "## What ran", "## Data funnel", "## Training",
                    "## Evaluation", "## Cost ledger", "## Serve it"):
        assert heading in report
    assert "frugal serve" in report and "per correct answer" in report


def test_a_rerun_skips_finished_stages_and_a_change_reruns_what_follows(
    finished_run: Path, tmp_path: Path, tiny_dir: Path
) -> None:
    recipe_path = tiny_recipe(tmp_path, tiny_dir)
    again = pipeline.run(load_recipe(str(recipe_path)), finished_run)
    assert again.skipped == ["pool", "distill", "curate", "train", "eval"]
    assert again.ran == ["report"]
    changed = pipeline.run(load_recipe(str(recipe_path), ["eval.max_thinking_tokens=[4]"]),
                           finished_run)
    assert changed.skipped == ["pool", "distill", "curate", "train"]
    assert changed.ran == ["eval", "report"]
    summary = json.loads((finished_run / "eval/default/summary.json").read_text())
    assert [p["max_thinking_tokens"] for p in summary["points"]] == [4]


def test_an_interrupted_stage_resumes(tmp_path: Path, tiny_dir: Path) -> None:
    recipe = load_recipe(str(tiny_recipe(tmp_path, tiny_dir)))
    run_dir = tmp_path / "run"
    calls: list[str] = []
    original = pipeline._STAGE_RUNNERS["eval"]

    def crash(*args: object) -> None:
        calls.append("eval")
        raise KeyboardInterrupt

    pipeline._STAGE_RUNNERS["eval"] = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(recipe, run_dir)
    finally:
        pipeline._STAGE_RUNNERS["eval"] = original
    state = json.loads((run_dir / pipeline.STATE).read_text())
    assert state["train"]["status"] == "done" and state["eval"]["status"] == "running"
    resumed = pipeline.run(recipe, run_dir)
    assert resumed.skipped == ["pool", "distill", "curate", "train"]
    assert resumed.ran == ["eval", "report"]


def test_cli_runs_a_recipe_and_prints_the_table(finished_run: Path, tmp_path: Path,
                                                tiny_dir: Path) -> None:
    recipe_path = tiny_recipe(tmp_path, tiny_dir)
    shown = CliRunner().invoke(app, ["run", str(recipe_path), "--run", str(finished_run)],
                               env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "skipped" in shown.output and "report.html" in shown.output
    assert "base" in shown.output and "default" in shown.output
    bad = CliRunner().invoke(app, ["run", str(recipe_path), "--set", "train.epochz=1"])
    assert bad.exit_code == 1 and "train.epochz" in bad.output


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")
def test_report_renders_in_headless_chromium(finished_run: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    # The same page plus a probe that writes, once everything loaded, how many images decoded.
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
             " document.title = 'images ' + imgs.filter(i => i.complete && i.naturalWidth > 0)"
             ".length + '/' + imgs.length; });</script>")
    page.write_text((finished_run / "report.html").read_text().replace("</body>",
                                                                         probe + "</body>"))
    profile = tmp_path / "profile"
    shown = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", shown.stdout).group(1)
    loaded, total = map(int, title.removeprefix("images ").split("/"))
    assert total >= 3 and loaded == total, title
    assert "Test-time scaling" in shown.stdout and "Cost ledger" in shown.stdout


def test_experts_recipe_runs_its_own_stage(tmp_path: Path, lively_dir: Path) -> None:
    path = tmp_path / "experts.yaml"
    path.write_text(f"""
name: tiny-experts
model: {lively_dir}
pool: {{per_family: 4, difficulties: [1], families: [arithmetic, dates, sequences]}}
curate: {{target: 12}}
experts:
  train: {{max_steps: 1, batch_size: 2, save_steps: 5}}
  min_examples: 2
  merges: [linear]
  benchmark: {{name: mini, per_family: 2, difficulties: [1]}}
  max_thinking_tokens: [4]
  max_answer_tokens: 4
""")
    result = pipeline.run(load_recipe(str(path)), tmp_path / "run")
    assert result.ran == list(pipeline.EXPERT_STAGES)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Experts" in report and "wins" in report and "held-out routing accuracy" in report
    again = pipeline.run(load_recipe(str(path)), tmp_path / "run")
    assert again.skipped == ["pool", "distill", "curate", "experts"]


def test_price_changes_keep_finished_work_and_until_stops_early(
    finished_run: Path, tmp_path: Path, tiny_dir: Path
) -> None:
    recipe_path = tiny_recipe(tmp_path, tiny_dir)
    repriced = pipeline.run(load_recipe(str(recipe_path), ["machine_price_per_hour=9.0",
                                                           "eval.batch_size=2"]), finished_run)
    assert repriced.ran == ["report"]  # a price or a batch size changes no result
    early = pipeline.run(load_recipe(str(recipe_path)), tmp_path / "early", until="curate")
    assert early.ran == ["pool", "distill", "curate"] and early.report is None
    with pytest.raises(ValueError, match="--until 'nope'"):
        pipeline.run(load_recipe(str(recipe_path)), tmp_path / "early", until="nope")
