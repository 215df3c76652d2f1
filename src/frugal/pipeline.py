"""`frugal run`: pool, distill, curate, train, eval and report in one command.

Each stage records in `stages.json` a key made of its own settings and the keys of the stages
before it. A re-run skips a stage whose key matches and whose outputs are there, so a run that
crashed continues where it stopped; a stage whose settings (or whose inputs) changed runs again,
and so does everything after it. Stages that were interrupted resume: distillation from the
teacher cache, training from its last checkpoint, evaluation from its per-question results.
Every stage's time and cost go into the ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from frugal.events import Events, QuietEvents
from frugal.ledger import LedgerEntry, append_entry, compute_cost
from frugal.recipes import Recipe, dump_recipe
from frugal.run_files import (
    ADAPTERS,
    CHECKPOINTS,
    COMPARISON,
    EVAL_DIR,
    MODELS,
    POOL,
    RECIPE,
    SELECTED,
    SUMMARY,
    TRACES,
    StageRecord,
    read_stages,
    write_stages,
    write_text_atomic,
)
from frugal.run_lock import locks_run_dir
from frugal.settings.curate import CurateConfig
from frugal.settings.distill import DistillConfig
from frugal.settings.evaluate import RunEvalConfig
from frugal.settings.experts import ExpertsConfig
from frugal.settings.pool import PoolConfig
from frugal.settings.train import TrainConfig


def stages_of(recipe: Recipe) -> tuple[Stage, ...]:
    """An experts recipe trains and compares its adapters in one stage instead of train + eval."""
    return EXPERT_RUN if recipe.experts is not None else RUN


@dataclass(frozen=True)
class Stage:
    """One step of `frugal run`: its name, its settings model (`config`: the recipe section
    it runs with, the part of its key that is its own), the run-directory files it reads and
    those it writes that mean it is done (none: it always runs), how it runs
    (`run(recipe, run_dir, events, resume)`, which calls the stage module's `run(config,
    run_dir, events)`), and whether the pipeline books its compute time (the others write
    their own ledger entries)."""

    name: str
    config: type[BaseModel] | None
    settings: Callable[[Recipe], Any]
    reads: Callable[[Recipe], list[str]]
    outputs: Callable[[Recipe], list[str]]
    run: Callable[[Recipe, Path, Events, bool], Any]
    books_compute: bool = False


@dataclass
class PipelineResult:
    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None


# Settings, by full path, that change what a stage costs or how fast it runs, never what it
# produces: changing them must not throw finished work away. By full path because the same
# name can matter elsewhere (train.batch_size changes the result and must retrain). A changed
# max_cost or retry_failed still resumes a partial distillation: partial stages always re-run.
NOT_IN_KEY = frozenset({
    "distill.machine_price_per_hour", "distill.max_cost", "distill.retry_failed",
    "distill.prices",  # what the calls cost, not what they answer
    "train.save_steps", "train.logging_steps", "train.save_total_limit",
    "distill.openai.concurrency", "distill.openai.max_retries",
    "distill.openai.max_consecutive_failures", "distill.openai.backoff_base",
    "distill.openai.backoff_max", "distill.openai.timeout", "distill.local.batch_size",
    "train.machine_price_per_hour", "eval.batch_size", "eval.machine_price_per_hour",
    "experts.batch_size", "experts.machine_price_per_hour", "experts.train.machine_price_per_hour",
})


# Settings added after runs were made, by full path, with the default that behaves as before:
# at that default they are left out of the stage keys, so those runs keep their keys (and their
# finished stages); set to anything else, they are in the key like every other setting.
ADDED_LATER = {
    "distill.local.style": "budget", "distill.openai.thinking_source": "auto",
    "eval.compare": {},
}


class StagePartial(RuntimeError):
    """A stage ended without everything it was asked for; later stages must not run."""

    def __init__(self, stage: str, missing: str, *, interrupted: bool = False) -> None:
        super().__init__(f"{stage} is partial: {missing}")
        self.stage, self.missing, self.interrupted = stage, missing, interrupted


def _settings_json(value: Any, path: str) -> Any:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, dict) and "llama_cpp" in value:
        # How llama.cpp runs matters only where it runs, and then only its weights (slots and
        # threads change speed): other runs keep the keys they had before it existed.
        value = dict(value)
        llama_cpp = value.pop("llama_cpp")
        if value.get("engine") == "llama.cpp":
            value["llama_cpp_weights"] = llama_cpp.get("weights")
    if isinstance(value, dict):
        return {k: _settings_json(v, f"{path}.{k}") for k, v in value.items()
                if f"{path}.{k}" not in NOT_IN_KEY
                and ADDED_LATER.get(f"{path}.{k}", object()) != v}
    if isinstance(value, list):
        return [_settings_json(v, path) for v in value]
    return value


def stage_key(recipe: Recipe, stage: Stage, upstream: str) -> str:
    settings = _settings_json(stage.settings(recipe), stage.name)
    text = json.dumps([upstream, stage.name, settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def outputs_exist(recipe: Recipe, run_dir: Path, stage: Stage) -> bool:
    """Whether a finished stage's files are all still there (a report is always redrawn)."""
    outputs = stage.outputs(recipe)
    return bool(outputs) and all((run_dir / path).is_file() for path in outputs)


def eval_labels(recipe: Recipe) -> list[str]:
    """The models `frugal run` evaluates: the base, the trained one, and each compared model
    that is there (one that is not is said by the eval stage, and evaluated once it is)."""
    return (["base"] if recipe.eval.base else []) + [recipe.train.name] + [
        label for label, model in recipe.eval.compare.items() if _model_is_there(model)]


def _model_is_there(spec: str) -> bool:
    """A compared model that names a path (another run's model) must exist; other specs
    (aliases, hub ids) are for the model loader to resolve."""
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or \
        spec.startswith(("runs/",))
    return not looks_like_path or Path(spec).expanduser().exists()


@locks_run_dir
def run(recipe: Recipe, run_dir: Path, *, events: Events | None = None,
        on_stage: Callable[[str, str], None] | None = None,
        until: str | None = None) -> PipelineResult:
    """Run every stage that is not complete, stopping after `until` when given;
    `on_stage(stage, "run" | "skip")` is told first."""
    names = [stage.name for stage in stages_of(recipe)]
    if until is not None and until not in names:
        raise ValueError(f"--until {until!r}: choose one of {', '.join(names)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError(
            "frugal run drives every stage from one process; under torchrun or accelerate "
            "each process would pay the teacher and write the run directory. Fix: run "
            "`frugal run RECIPE --until curate` once, launch `frugal train --run-dir DIR` "
            "under accelerate, then `frugal eval`."
        )
    events = events or QuietEvents()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / RECIPE, dump_recipe(recipe))
    state = read_stages(run_dir)
    result = PipelineResult(run_dir)
    upstream = ""
    for stage in stages_of(recipe):
        key = stage_key(recipe, stage, upstream)
        upstream = key
        name = stage.name
        recorded = state.get(name)
        if (recorded is not None and recorded.key == key and recorded.status == "done"
                and outputs_exist(recipe, run_dir, stage)):
            result.skipped.append(name)
            if on_stage:
                on_stage(name, "skip")
            if name == until:
                break
            continue
        if on_stage:
            on_stage(name, "run")
        # Same settings as an interrupted attempt: resume it; else start the stage afresh.
        resume = recorded is not None and recorded.key == key
        if recorded is not None and recorded.status == "partial":
            events.note(f"{name} was partial ({recorded.missing or '?'}): running it again",
                        warning=True)
        state[name] = StageRecord(key=key, status="running")
        write_stages(run_dir, state)
        started = time.perf_counter()
        try:
            outcome = stage.run(recipe, run_dir, events, resume)
        except BaseException as error:
            # Whatever stopped it (Ctrl-C, a crash, bad input), the stage is not done.
            interrupted = isinstance(error, KeyboardInterrupt)
            why = "interrupted" if interrupted else f"stopped by an error: {error}"
            state[name] = _partial_record(key, started, f"{why}; re-run to resume")
            write_stages(run_dir, state)
            raise
        seconds = time.perf_counter() - started
        missing = _missing(outcome)
        if missing is not None:
            state[name] = _partial_record(key, started, missing)
            write_stages(run_dir, state)
            raise StagePartial(name, missing, interrupted=getattr(outcome, "interrupted", False))
        state[name] = StageRecord(key=key, status="done", seconds=round(seconds, 3),
                                  finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_stages(run_dir, state)
        if getattr(outcome, "interrupted", False):
            # Ctrl-C came while the last calls were in flight and they all finished: the stage
            # is complete, but the user asked to stop.
            raise KeyboardInterrupt
        if stage.books_compute:  # the others write their own ledger entries
            append_entry(run_dir, LedgerEntry.model_validate({
                "stage": name, "kind": "compute", "compute_seconds": round(seconds, 3),
                "machine_price_per_hour": recipe.machine_price_per_hour,
                "dollars": round(compute_cost(seconds, recipe.machine_price_per_hour), 6),
            }))
        result.ran.append(name)
        result.seconds[name] = seconds
        if name == "report":
            result.report = outcome
        if name == until:
            break
    return result


def _missing(outcome: Any) -> str | None:
    """What a stage's result says it lacks (None when it is complete)."""
    if getattr(outcome, "complete", True):
        return None
    return str(outcome.missing())


def _partial_record(key: str, started: float, missing: str) -> StageRecord:
    return StageRecord(key=key, status="partial", missing=missing,
                       seconds=round(time.perf_counter() - started, 3),
                       finished=time.strftime("%Y-%m-%dT%H:%M:%S"))


# -- the stages ----------------------------------------------------------------------------------


def _pool(recipe: Recipe, run_dir: Path, events: Events, resume: bool) -> Any:
    from frugal import pool

    return pool.run(recipe.pool, run_dir, events)


def _distill(recipe: Recipe, run_dir: Path, events: Events, resume: bool) -> Any:
    from frugal import distill

    result = distill.run(recipe.distill, run_dir, events)
    events.note(f"distill: {len(result.traces)} traces, {result.correct} correct, "
                  f"{result.calls} teacher calls, ${result.dollars:.4f}")
    return result


def _curate(recipe: Recipe, run_dir: Path, events: Events, resume: bool) -> Any:
    from frugal import curate

    result = curate.run(recipe.curate, run_dir, events)
    events.note(f"curate: {len(result.selected)} selected into {result.selected_path}")
    return result


def _train(recipe: Recipe, run_dir: Path, events: Events, resume: bool) -> Any:
    from frugal import train

    # Without resume (other settings than the checkpoints were made with) training itself
    # removes the earlier checkpoints before it starts.
    result = train.run(recipe.train, run_dir, resume=resume, events=events)
    loss = "-" if result.final_loss is None else f"{result.final_loss:.4f}"
    events.note(f"train: {result.steps} steps on {result.examples} examples, "
                  f"{result.tokens:,} tokens in {result.seconds:.0f} s, final loss {loss}")
    return result


def _eval(recipe: Recipe, run_dir: Path, events: Events, resume: bool) -> Any:
    from frugal import evaluate

    settings = recipe.eval
    results = []
    for label, model in settings.compare.items():
        if not _model_is_there(model):
            events.note(f"eval: {label} ({model}) is not there yet, so it is not compared; "
                        "produce it (for another run's model: `frugal run` that recipe), then "
                        "run this recipe again", warning=True)
    for label in eval_labels(recipe):
        if not resume:  # results of another model or other settings: start clean
            from frugal.names import remove_inside

            remove_inside(run_dir, run_dir / EVAL_DIR / label)
        if label in settings.compare:
            model, adapter = settings.compare[label], None
        elif label == "base":
            model, adapter = recipe.model, None
        elif recipe.train.method == "full":  # a whole model under models/, not an adapter
            model, adapter = str(run_dir / MODELS / label), None
        else:
            model, adapter = recipe.train.model, label
        system = settings.system if "system" in settings.model_fields_set else \
            recipe.train.system  # what the model was trained with
        chosen = {"model": model, "adapter": adapter, "label": label, "system": system}
        if label == "base" and settings.base_at == "largest-budget":
            chosen |= {"max_thinking_tokens": [max(settings.max_thinking_tokens)],
                       "num_waits": settings.num_waits[:1]}
        config = evaluate.EvalConfig.model_validate(
            settings.model_dump(exclude={"base", "base_at", "compare"}) | chosen)
        results.append(evaluate.run(config, run_dir, events))
    return results


def _experts(recipe: Recipe, run_dir: Path, events: Events, resume: bool) -> Any:
    from frugal.experts import stage

    assert recipe.experts is not None
    if not resume:  # other settings: the old adapters, router and results do not apply
        from frugal.adapters import run_adapters
        from frugal.names import remove_inside

        def experts_own(name: str) -> bool:
            return name.startswith(("expert-", "merged-")) or name == stage.GENERALIST

        for name, path in run_adapters(run_dir).items():
            if experts_own(name):
                remove_inside(run_dir, path)
        # Their checkpoints too: the experts always resume, and a checkpoint made with other
        # settings would be refused by the resume check (or, unchecked, mixed in).
        checkpoints = run_dir / CHECKPOINTS
        for path in sorted(checkpoints.iterdir()) if checkpoints.is_dir() else []:
            if experts_own(path.name):
                remove_inside(run_dir, path)
        remove_inside(run_dir, run_dir / "eval")
    result = stage.run(recipe.experts, run_dir, events)
    if result.comparison:
        events.note(f"experts: {result.comparison['verdict']}")
    return result


def _report(recipe: Recipe, run_dir: Path, events: Events, resume: bool) -> Any:
    from frugal import report

    return report.write(recipe, run_dir)


def _trained_files(recipe: Recipe) -> list[str]:
    if recipe.train.method == "full":  # a whole model under models/, not an adapter
        return [f"{MODELS}/{recipe.train.name}/config.json"]
    return [f"{ADAPTERS}/{recipe.train.name}/adapter_config.json"]


def _adapter_read(recipe: Recipe) -> list[str]:
    """Evaluation reads the trained adapter (or model), the training set for its
    contamination check, and the pool, whose questions it holds out."""
    return [*_trained_files(recipe), SELECTED, POOL]


def _summaries(recipe: Recipe) -> list[str]:
    return [f"{EVAL_DIR}/{label}/{SUMMARY}" for label in eval_labels(recipe)]


def _nothing(recipe: Recipe) -> list[str]:
    return []


POOL_STAGE = Stage("pool", PoolConfig, lambda r: r.pool, _nothing, lambda r: [POOL], _pool,
                   books_compute=True)
DISTILL_STAGE = Stage("distill", DistillConfig, lambda r: r.distill, lambda r: [POOL],
                      lambda r: [TRACES], _distill)
CURATE_STAGE = Stage("curate", CurateConfig, lambda r: r.curate, lambda r: [POOL, TRACES],
                     lambda r: [SELECTED], _curate, books_compute=True)
REPORT_STAGE = Stage("report", None, lambda r: None, _nothing, _nothing, _report,
                     books_compute=True)
RUN = (POOL_STAGE, DISTILL_STAGE, CURATE_STAGE,
       Stage("train", TrainConfig, lambda r: r.train, lambda r: [SELECTED], _trained_files,
             _train),
       Stage("eval", RunEvalConfig, lambda r: [r.model, r.eval], _adapter_read, _summaries,
             _eval),
       REPORT_STAGE)
EXPERT_RUN = (POOL_STAGE, DISTILL_STAGE, CURATE_STAGE,
              Stage("experts", ExpertsConfig, lambda r: r.experts, lambda r: [SELECTED],
                    lambda r: [COMPARISON], _experts),
              REPORT_STAGE)
STAGES = tuple(stage.name for stage in RUN)
EXPERT_STAGES = tuple(stage.name for stage in EXPERT_RUN)
