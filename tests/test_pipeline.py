"""`frugal run` end to end on the tiny model: every stage, skipping, re-running, the report."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from frugal import pipeline
from frugal.cli import app
from frugal.events import RecordedEvents
from frugal.ledger import read_ledger
from frugal.recipes import load_recipe
from frugal.run_files import STAGES_FILE, read_summary

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def tiny_recipe(tmp_path: Path, tiny_dir: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: tiny
model: {tiny_dir}
machine_price_per_hour: 3.6
reference_api: {{prices: {{input_per_million: 100, output_per_million: 400}}}}
pool: {{per_family: 2, difficulties: [1]}}
distill: {{teacher: program}}
curate: {{target: 8}}
train: {{max_steps: 2, batch_size: 2, save_steps: 1}}
eval:
  benchmark: {{name: mini, per_family: 1, difficulties: [1]}}
  max_thinking_tokens: [4, 8]
  num_waits: [0, 1]
  waits_at: best-budget
  base_at: largest-budget
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
    stages = {e.stage for e in read_ledger(finished_run).entries}
    assert {"pool", "distill", "curate", "train", "eval", "report"} <= stages
    report = (finished_run / "report.md").read_text()
    for heading in ("## Headline", "## What ran", "## Data funnel", "## Teacher", "## Training",
                    "## Evaluation", "## Cost ledger", "## Was it worth it?", "## Serve it"):
        assert heading in report
    assert "frugal serve" in report and "per correct answer" in report
    assert "Teacher `frugal.tasks` (program) answered" in report and "per kept trace" in report
    # s1's Wait curve at the best budget (a tie: the smaller one), and its verdict.
    tuned = read_summary(finished_run / "eval/default/summary.json")
    assert [p.budget for p in tuned.points] == ["think4-waits0", "think8-waits0", "think4-waits1"]
    # The base model only where it is compared: the largest budget, no Waits.
    base = read_summary(finished_run / "eval/base/summary.json")
    assert [p.budget for p in base.points] == ["think8-waits0"]
    assert "Waits make no clear difference for this model" in report
    assert (finished_run / "plots/break-even.png").stat().st_size > 1000
    assert "reference API" in report and "pays for itself after" in report


def test_cost_of_a_run_is_its_ledger_and_its_break_even(finished_run: Path) -> None:
    shown = CliRunner().invoke(app, ["cost", str(finished_run), "--json"])
    assert shown.exit_code == 0, shown.output
    found = json.loads(shown.stdout.strip().splitlines()[-1])
    ledger = read_ledger(finished_run)
    assert found["total_dollars"] == ledger.total_dollars
    assert set(found["stages"]) == {e.stage for e in ledger.entries}
    specialist, reference = found["break_even"]["offers"]
    one_off = sum(e.dollars for e in ledger.entries
                  if e.stage in ("pool", "distill", "curate", "train"))
    assert specialist["one_off"] == pytest.approx(one_off) and one_off > 0
    # The reference API's request: the prompt at $100/M and the specialist's output at $400/M.
    tokens = found["break_even"]
    assert reference["per_request"] == pytest.approx(
        (round(tokens["prompt_tokens"]) * 100 + round(tokens["output_tokens"]) * 400) / 1e6)
    assert reference["accuracy"] == 1.0 and reference["assumed"]
    assert reference["requests_to_pay_off"] == pytest.approx(
        one_off / (reference["per_request"] - specialist["per_request"]))
    assert Path(found["plot"]).is_file()
    text = CliRunner().invoke(app, ["cost", str(finished_run)])
    assert "pays for itself after" in text.stdout and "per correct answer" in text.stdout


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
    assert [p["budget"] for p in summary["points"]] == ["think4-waits0", "think4-waits1"]


def test_an_interrupted_stage_resumes(tmp_path: Path, tiny_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = load_recipe(str(tiny_recipe(tmp_path, tiny_dir)))
    run_dir = tmp_path / "run"
    calls: list[str] = []

    def crash(*args: object) -> None:
        calls.append("eval")
        raise KeyboardInterrupt

    crashing = tuple(dataclasses.replace(stage, run=crash) if stage.name == "eval" else stage
                     for stage in pipeline.RUN)
    with monkeypatch.context() as patched:
        patched.setattr(pipeline, "RUN", crashing)
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(recipe, run_dir)
    state = json.loads((run_dir / STAGES_FILE).read_text())
    assert state["train"]["status"] == "done" and state["eval"]["status"] == "partial"
    assert "interrupted" in state["eval"]["missing"]
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


@pytest.mark.parametrize(("content", "where"), [
    ('{\n  "pool": {"key": "abc", "status": "done"},\n  "distill": {"key": "de', ", line 3"),
    ("\0" * 128, ", line 1, column 1"),  # the state file's space was reserved, the data lost
    ('{"pool": "done"}', ""),  # JSON, but not one record per stage
])
def test_a_corrupt_stage_record_stops_the_run_with_the_fix(tmp_path: Path, tiny_dir: Path,
                                                           content: str, where: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state = run_dir / STAGES_FILE
    state.write_text(content)
    shown = CliRunner().invoke(app, ["run", str(tiny_recipe(tmp_path, tiny_dir)), "--run",
                                     str(run_dir)])
    assert shown.exit_code == 1 and isinstance(shown.exception, SystemExit)  # no traceback
    assert f"error: {state}{where}" in shown.output
    assert "Fix: correct stages.json by hand, or delete it" in shown.output
    assert state.read_text() == content  # not silently reset
    assert not (run_dir / "pool.jsonl").exists()  # no stage ran on a guess


def test_stage_keys_leave_settings_out_by_full_path(tmp_path: Path, tiny_dir: Path) -> None:
    path = str(tiny_recipe(tmp_path, tiny_dir))

    def keys(*overrides: str) -> dict[str, str]:
        recipe, upstream, found = load_recipe(path, list(overrides)), "", {}
        for stage in pipeline.RUN:
            found[stage.name] = upstream = pipeline.stage_key(recipe, stage, upstream)
        return found

    base = keys()
    assert keys("eval.batch_size=3") == base  # how fast, not what
    # Prices and a cap change what calls cost, not what they answer: nothing is redone.
    assert keys("distill.max_cost=5", "distill.prices.output_per_million=1") == base
    assert keys("train.save_steps=7") == base
    retrained = keys("train.batch_size=3")  # the same name elsewhere changes the result
    assert retrained["curate"] == base["curate"] and retrained["train"] != base["train"]
    assert retrained["eval"] != base["eval"]
    # How llama.cpp would run changes nothing where it does not run, and where it does only
    # its weights change what is generated.
    assert keys("eval.llama_cpp.weights=f32", "distill.local.llama_cpp.slots=2") == base
    on_llama = keys("engine=llama.cpp")
    assert on_llama["eval"] != base["eval"] and on_llama["pool"] == base["pool"]
    assert keys("engine=llama.cpp", "eval.llama_cpp.slots=2",
                "eval.llama_cpp.threads=1") == on_llama
    assert keys("engine=llama.cpp", "eval.llama_cpp.weights=f32")["eval"] != on_llama["eval"]
    # Settings added later are out of the key at their defaults (runs made before them keep
    # their finished stages), and in it otherwise.
    assert keys("distill.local.style=budget", "eval.compare={}") == base
    assert "style" not in json.dumps(pipeline._settings_json(load_recipe(path).distill,
                                                             "distill"))
    assert keys("distill.local.style=chat")["distill"] != base["distill"]
    assert keys("eval.compare={other: x}")["eval"] != base["eval"]


def test_a_capped_distill_is_partial_stops_the_run_and_resumes_with_a_raised_cap(
    tmp_path: Path, tiny_dir: Path
) -> None:
    from .teachers.fake_openai_server import FakeOpenAIServer

    run_dir = tmp_path / "run"
    with FakeOpenAIServer(prices=(1.0, 10.0)) as server:
        teacher = (f"distill.openai={{base_url: '{server.base_url}', model: m, max_tokens: 1000,"
                   " backoff_base: 0.01}")
        settings = ["distill.teacher=openai", teacher, "distill.prices.input_per_million=1",
                    "distill.prices.output_per_million=10"]
        path = str(tiny_recipe(tmp_path, tiny_dir))
        capped = load_recipe(path, [*settings, "distill.max_cost=0.02"])
        with pytest.raises(pipeline.StagePartial, match="raise distill.max_cost") as partial:
            pipeline.run(capped, run_dir, until="curate")
        assert not partial.value.interrupted
        state = json.loads((run_dir / STAGES_FILE).read_text())
        assert state["distill"]["status"] == "partial"
        assert "not asked" in state["distill"]["missing"]
        assert "curate" not in state and not (run_dir / "selected.jsonl").exists()
        calls = server.total_calls
        assert 0 < calls < 12

        raised = load_recipe(path, [*settings, "distill.max_cost=1.0"])
        resumed = pipeline.run(raised, run_dir, until="curate")
        assert resumed.ran == ["distill", "curate"]  # the same key: distill resumed, not redone
        assert server.total_calls == 12 and max(server.answered.values()) == 1
    state = json.loads((run_dir / STAGES_FILE).read_text())
    assert state["distill"]["status"] == "done"


def test_cli_run_exits_1_on_a_partial_stage_and_names_the_fix(
    tmp_path: Path, tiny_dir: Path
) -> None:
    from frugal import pool

    from .teachers.fake_openai_server import FakeOpenAIServer

    recipe_path = tiny_recipe(tmp_path, tiny_dir)
    prompts = [q.question for q in pool.run(load_recipe(str(recipe_path)).pool,
                                            tmp_path / "probe").questions]
    # A reasoning API whose hidden reasoning eats the whole output cap, for every question.
    with FakeOpenAIServer(fail_forever={p: ("length_empty",) for p in prompts}) as server:
        result = CliRunner().invoke(app, [
            "run", str(recipe_path), "--run", str(tmp_path / "run"),
            "--set", "distill.teacher=openai",
            "--set", f"distill.openai={{base_url: '{server.base_url}', model: m, "
                     "max_tokens: 64}",
        ])
        assert server.total_calls == len(prompts)  # each asked once: not retried
    assert result.exit_code == 1, result.output
    assert "distill is partial" in result.output and "max_tokens" in result.output
    assert "retry_failed" in result.output and "did not run" in result.output
    state = json.loads((tmp_path / "run" / STAGES_FILE).read_text())
    assert state["distill"]["status"] == "partial" and "curate" not in state


@pytest.mark.parametrize("name", sorted(__import__("frugal.recipes").recipes.builtin_recipes()))
def test_every_stage_reads_only_what_an_earlier_stage_writes(name: str) -> None:
    """The stage list is the whole wiring: each stage's settings are its own model, and every
    run-directory file it reads is written by a stage before it."""
    recipe = load_recipe(name)
    written: set[str] = set()
    for stage in pipeline.stages_of(recipe):
        missing = set(stage.reads(recipe)) - written
        assert not missing, f"{name}: {stage.name} reads {missing}, which nothing before writes"
        settings = stage.settings(recipe)
        parts = settings if isinstance(settings, list) else [settings]
        if stage.config is not None:
            assert any(isinstance(part, stage.config) for part in parts), stage.name
        written |= set(stage.outputs(recipe))
    assert [s.name for s in pipeline.stages_of(recipe)][-1] == "report"


def test_compared_models_are_evaluated_beside_the_run_s_own(tmp_path: Path, tiny_dir: Path,
                                                          lively_dir: Path) -> None:
    path = str(tiny_recipe(tmp_path, tiny_dir))
    missing = tmp_path / "runs" / "other" / "models" / "default"
    overrides = [f"eval.compare={{other-run: {missing}, lively: {lively_dir}}}"]
    recipe = load_recipe(path, overrides)
    assert pipeline.eval_labels(recipe) == ["base", "default", "lively"]
    events = RecordedEvents()
    pipeline.run(recipe, tmp_path / "run", events=events)
    lively = read_summary(tmp_path / "run" / "eval/lively/summary.json")
    assert [p.budget for p in lively.points] == [
        p.budget for p in read_summary(tmp_path / "run" / "eval/default/summary.json").points]
    assert any("other-run" in note and "not there yet" in note and warning
               for note, warning in events.notes)
    assert "| lively |" in (tmp_path / "run" / "report.md").read_text()
    # Once the other run's model exists, a re-run evaluates it alone.
    shutil.copytree(lively_dir, missing)
    again = pipeline.run(load_recipe(path, overrides), tmp_path / "run")
    assert again.ran == ["eval", "report"]
    assert (tmp_path / "run" / "eval/other-run/summary.json").is_file()
