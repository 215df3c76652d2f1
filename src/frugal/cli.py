"""The `frugal` command line: parses arguments and calls the stage functions, nothing more."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from frugal import __version__
from frugal.cli_options import Options, SettingsError, build, fail, with_settings
from frugal.events import RichEvents
from frugal.run_files import COMPARISON, LEDGER, REPORT_MD, RESULTS, SUMMARY, TRAIN_LOG
from frugal.settings import DEFAULT_MODEL
from frugal.settings.budget import BudgetConfig
from frugal.settings.curate import CurateConfig
from frugal.settings.distill import DistillConfig
from frugal.settings.evaluate import EvalConfig
from frugal.settings.experts import ExpertsConfig
from frugal.settings.pool import PoolConfig
from frugal.settings.serve import ServeConfig
from frugal.settings.train import TrainConfig

app = typer.Typer(
    help="Turn a small open-weight language model into a cheap specialist that reasons.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
# The shell's convention for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


def _ctrl_c_exits_130(command: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C ends the command with exit status 130 and one line, not a traceback or 'Aborted!'.

    Work already done is safe by then: stages write each result as it is produced, and the
    teacher's own first Ctrl-C waits for paid calls in flight.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            errors.print("[yellow]interrupted: what finished is saved; run the same command "
                         "again to continue[/yellow]")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        console.print(f"frugal {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Turn a small open-weight language model into a cheap specialist that reasons."""


def _run_dir(value: Path | None) -> Path | None:
    """Refuse a run directory ending in '.', '..' or nothing before any stage starts: every
    clean-up inside it would reach the parent's or the current directory's files."""
    from frugal.names import UnsafeNameError, check_run_dir

    try:
        return None if value is None else check_run_dir(value)
    except UnsafeNameError as error:
        raise typer.BadParameter(str(error)) from None


# --run-dir is the spelling to use after `torchrun ... -m frugal.cli`: torchrun's own parser
# would take --run for an abbreviation of its --run-path.
RunOption = Annotated[
    Path,
    typer.Option("--run", "-r", "--run-dir", help="The run directory (created when missing).",
                 callback=_run_dir),
]
EngineOption = Annotated[
    str, typer.Option("--engine", help="local (frugal's own decode loop), the URL of an "
                      "OpenAI-compatible completions server up to /v1 (vLLM, llama.cpp's "
                      "server), or vllm / llama.cpp to start one for `frugal eval`; budget forcing "
                      "is kept either way.")
]
EngineModelOption = Annotated[
    str | None, typer.Option(help="With --engine URL: the name the server serves the base model "
                             "under (default: --model).")
]
EngineKeyOption = Annotated[
    str | None, typer.Option(help="With --engine URL: the environment variable holding its key.")
]


def _settings(model: type, settings: dict[str, Any], command: str) -> Any:
    """The command's config from its options; a refused value ends the command naming them."""
    try:
        return build(model, settings, command)
    except SettingsError as error:
        _fail(str(error))


@app.command()
@_ctrl_c_exits_130
@with_settings("generate", Options(BudgetConfig))
def generate(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    settings: dict[str, Any],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Alias, local directory, .gguf file or hub id.")
    ] = DEFAULT_MODEL,
    system: Annotated[str | None, typer.Option(help="Optional system prompt.")] = None,
    reference: Annotated[
        str | None, typer.Option(help="A reference answer: grade the model's answer against it.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    engine_url: EngineOption = "local",
    engine_model: EngineModelOption = None,
    engine_key_env: EngineKeyOption = None,
) -> None:
    """Answer one question with budget forcing; print the thinking and the answer apart."""
    from frugal.endpoint_config import endpoint_option
    from frugal.generation import BudgetForcingEngine, Engine
    from frugal.grading import grade
    from frugal.models import ModelNotFoundError, load_model, load_tokenizer

    budget = _settings(BudgetConfig, settings, "generate")
    _quiet_transformers()
    status = errors if as_json else console  # keep stdout one JSON object with --json
    engine: Engine
    try:
        endpoint = endpoint_option(engine_url, engine_model or model, engine_key_env)
        if endpoint is not None:
            from frugal.endpoint_engine import EndpointEngine

            engine = EndpointEngine(endpoint, load_tokenizer(model))
        else:
            with status.status(f"Loading {model}…"):
                loaded = load_model(model)
            engine = BudgetForcingEngine(loaded.model, loaded.tokenizer)
    except (ModelNotFoundError, ValueError) as error:
        _fail(str(error))
    started = time.perf_counter()
    with status.status(f"Thinking (up to {budget.max_thinking_tokens} tokens)…"):
        result = engine.generate([question], budget, system=system)[0]
    seconds = time.perf_counter() - started
    graded = grade(result.answer, reference) if reference is not None else None
    if as_json:
        record = {
            "model": model,
            "format": str(engine.format.kind),
            "thinking": result.thinking,
            "answer": result.answer,
            "thinking_tokens": result.thinking_tokens,
            "answer_tokens": result.answer_tokens,
            "waits": result.waits,
            "forced_max": result.forced_max,
            "finish_reason": result.finish_reason,
            "seconds": round(seconds, 3),
        }
        if graded:
            record |= {"extracted": graded.extracted, "correct": graded.correct}
        print(json.dumps(record, ensure_ascii=False))
        return
    forced = " (maximum reached: end forced)" if result.forced_max else ""
    console.print(
        Panel(
            result.thinking or "[dim](empty)[/dim]",
            title=f"Thinking: {result.thinking_tokens} tokens, {result.waits} Wait(s){forced}",
            title_align="left",
            border_style="cyan",
        )
    )
    console.print(
        Panel(
            result.answer or "[dim](empty)[/dim]",
            title=f"Answer: {result.answer_tokens} tokens",
            title_align="left",
            border_style="green",
        )
    )
    total = len(result.token_ids)
    console.print(
        f"{model} ({engine.format.kind} format): {total} tokens in {seconds:.1f} s "
        f"({total / max(seconds, 1e-9):.1f} tokens/s), finish: {result.finish_reason}"
    )
    if graded:
        verdict = "[green]correct[/green]" if graded.correct else "[red]wrong[/red]"
        console.print(f"Extracted answer: {graded.extracted!r}; reference {reference!r}: {verdict}")


@app.command()
@_ctrl_c_exits_130
@with_settings("pool", Options(PoolConfig, rename={
    "fields.question": "--question-field", "fields.answer": "--answer-field",
    "fields.id": "--id-field", "fields.domain": "--domain-field",
    "fields.solution": "--solution-field"}))
def pool(settings: dict[str, Any], run: RunOption = Path("runs/default")) -> None:
    """Build the question pool (pool.jsonl) of a run directory."""
    from frugal import pool as pool_stage
    from frugal.questions import QuestionDataError

    config = _settings(PoolConfig, settings, "pool")
    try:
        with console.status(f"Building the pool from {config.source}…"):
            result = pool_stage.run(config, run)
    except (ValidationError, QuestionDataError, ValueError, OSError) as error:
        _fail(str(error))
    table = Table("domain", "questions", title=f"pool: {len(result.questions)} questions")
    for domain, count in sorted(result.domains.items()):
        table.add_row(domain, str(count))
    console.print(table)
    console.print(f"Wrote {result.path}")


@app.command()
@_ctrl_c_exits_130
@with_settings("distill", Options(DistillConfig, rename={
    "openai.base_url": "--base-url", "openai.api_key_env": "--api-key-env",
    "openai.concurrency": "--concurrency", "openai.max_retries": "--max-retries",
    "openai.timeout": "--timeout", "openai.max_tokens": "--max-tokens",
    "openai.thinking_source": "--thinking-source",
    "prices.input_per_million": "--price-input", "prices.output_per_million": "--price-output",
    "prices.cached_input_per_million": "--price-cached-input",
    "local.budget.max_thinking_tokens": "--max-thinking-tokens",
    "local.budget.max_answer_tokens": "--max-answer-tokens",
    "local.batch_size": "--batch-size", "local.samples": "--samples"}))
def distill(
    settings: dict[str, Any],
    run: RunOption = Path("runs/default"),
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="The teacher's model: --openai-model "
                                 "with the openai teacher, else --local-model.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="The teacher's sampling temperature: "
                                   "--openai-temperature with the openai teacher, else "
                                   "--local-budget-temperature.")
    ] = None,
) -> None:
    """Distill graded reasoning traces (traces.jsonl) from a teacher; nothing is paid twice."""
    _quiet_transformers()
    from frugal import distill as distill_stage
    from frugal.models import ModelNotFoundError
    from frugal.questions import QuestionDataError

    openai = settings.get("teacher") == "openai"
    teacher = settings.setdefault("openai" if openai else "local", {})
    if model is not None:
        teacher["model"] = model
    if temperature is not None:
        (teacher if openai else teacher.setdefault("budget", {}))["temperature"] = temperature
    if openai and "model" not in teacher:
        _fail("the openai teacher needs --model (the endpoint's model name)")
    if not openai and settings.get("openai"):
        _fail("--base-url, --max-tokens and the other openai settings need --teacher openai")
    config = _settings(DistillConfig, settings, "distill")
    try:
        result = distill_stage.run(config, run, RichEvents(errors))
    except (ValidationError, QuestionDataError, ModelNotFoundError, ValueError, OSError) as error:
        _fail(str(error))
    table = Table("traces", "correct", "failed", "calls paid now", "dollars now", "seconds",
                  title="distill")
    table.add_row(
        str(len(result.traces)), str(result.correct), str(len(result.failed)),
        str(result.calls), f"{result.dollars:.4f}", f"{result.seconds:.1f}",
    )
    console.print(table)
    for question_id, reason in list(result.failed.items())[:5]:
        errors.print(f"[red]failed[/red] {question_id}: {reason}", soft_wrap=True)
    console.print(f"Wrote {result.traces_path} (ledger: {run / LEDGER})")
    if not result.complete:
        errors.print(f"[yellow]partial:[/yellow] {result.missing()}", soft_wrap=True)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.stopped:
        raise typer.Exit(1)


@app.command()
@_ctrl_c_exits_130
@with_settings("curate", Options(CurateConfig, skip=frozenset({"format_patterns"}), rename={
    "near_duplicate_threshold": "--near-duplicates", "eval_sets": "--eval-set",
    "reference_models": "--reference-model",
    "reference_budget.max_thinking_tokens": "--reference-thinking-tokens"}))
def curate(settings: dict[str, Any], run: RunOption = Path("runs/default")) -> None:
    """Select the training set (selected.jsonl) the s1K way, with a reason for every drop."""
    _quiet_transformers()
    from frugal import curate as curate_stage
    from frugal.models import ModelNotFoundError
    from frugal.questions import QuestionDataError

    config = _settings(CurateConfig, settings, "curate")
    try:
        result = curate_stage.run(config, run, RichEvents(errors))
    except (
        ValidationError, QuestionDataError, ModelNotFoundError, ValueError, OSError, RuntimeError
    ) as error:
        _fail(str(error))
    table = Table("stage", "in", "dropped", "out", "items/s", title="curation funnel")
    for step in result.funnel.steps:
        rate = step["items_per_second"]
        table.add_row(step["stage"], str(step["in"]), str(step["dropped"]), str(step["out"]),
                      "" if rate is None else f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}")
    console.print(table)
    domains = Table("domain", "selected", title=f"selected: {len(result.selected)}")
    for domain, count in sorted(Counter(i.domain for i in result.selected).items()):
        domains.add_row(domain, str(count))
    console.print(domains)
    console.print(f"Wrote {result.selected_path}, {result.selection_path} and {result.plot_path}")


@app.command("train")
@_ctrl_c_exits_130
@with_settings("train", Options(TrainConfig, short={"model": "-m"}, rename={
    "lora.target_modules": "--target-modules"}))
def train_command(
    settings: dict[str, Any],
    run: RunOption = Path("runs/default"),
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
) -> None:
    """Fine-tune on selected.jsonl with TRL (LoRA by default); works under torchrun."""
    _quiet_transformers()
    from frugal import train as train_stage
    from frugal.models import ModelNotFoundError

    config = _settings(TrainConfig, settings, "train")
    try:
        result = train_stage.run(config, run, resume=resume, events=RichEvents(console))
    except (ValidationError, ModelNotFoundError, ValueError, OSError, RuntimeError) as error:
        _fail(str(error))
    if result.rank == 0:
        loss = "-" if result.final_loss is None else f"{result.final_loss:.4f}"
        console.print(
            f"trained {result.steps} steps on {result.examples} examples "
            f"({result.too_long} left out as too long), {result.tokens:,} tokens in "
            f"{result.seconds:.1f} s ({result.tokens / max(result.seconds, 1e-9):,.0f} tok/s), "
            f"final loss {loss}"
        )
        console.print(f"Wrote {result.output_path} (log: {run / TRAIN_LOG})")


@app.command("eval")
@_ctrl_c_exits_130
@with_settings("eval", Options(EvalConfig, skip=frozenset({"engine"}), short={
    "model": "-m", "benchmark": "-b"}))
def eval_command(
    settings: dict[str, Any],
    run: RunOption = Path("runs/default"),
    engine_url: EngineOption = "local",
    engine_model: EngineModelOption = None,
    engine_key_env: EngineKeyOption = None,
) -> None:
    """Accuracy at each thinking budget, s1's Control/Scaling/Performance, plot and table."""
    _quiet_transformers()
    from frugal import evaluate as eval_stage
    from frugal.endpoint_config import endpoint_option
    from frugal.evaluation.table import comparison
    from frugal.models import ModelNotFoundError
    from frugal.questions import QuestionDataError

    try:
        engine = endpoint_option(engine_url, engine_model or settings.get("model"),
                                 engine_key_env, managed=True)
    except ValueError as error:
        _fail(str(error))
    if engine is not None:
        settings["engine"] = engine if isinstance(engine, str) else engine.model_dump()
    config = _settings(EvalConfig, settings, "eval")
    try:
        result = eval_stage.run(config, run, RichEvents(console))
    except (
        ValidationError, QuestionDataError, ModelNotFoundError, ValueError, OSError, RuntimeError
    ) as error:
        _fail(str(error))
    if result.overlaps:
        errors.print(
            f"[yellow]warning: {len(result.overlaps)} evaluation question(s) share a word 8-gram "
            "with this adapter's training set (selected.jsonl); their accuracy may be inflated:"
        )
        for overlap in result.overlaps[:3]:
            errors.print(f"  {overlap.question_id}: {overlap.question[:80]!r} "
                         f"shares {overlap.shared!r}")
    summaries = eval_stage.read_summaries(run, result.summary.benchmark)
    headers, rows = comparison(summaries)
    table = Table(*headers, title=f"{result.summary.benchmark}: accuracy [95% CI] "
                  "@ mean thinking tokens")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    resumed = result.summary.questions * len(result.summary.points) * config.samples
    console.print(f"{result.generated} generations made, {resumed - result.generated} resumed")
    console.print(f"Wrote {result.directory / RESULTS}, "
                  f"{result.directory / SUMMARY}"
                  + (f" and {result.plot}" if result.plot else ""))


@app.command("serve")
@with_settings("serve", Options(ServeConfig, skip=frozenset({"target"}), short={"model": "-m"},
                                rename={"served_name": "--name", "adapters": "--adapter",
                                        "allowed_hosts": "--allowed-host",
                                        "request_timeout_s": "--request-timeout"}))
def serve_command(
    target: Annotated[str, typer.Argument(help="A run directory, or a model spec.")],
    settings: dict[str, Any],
) -> None:
    """Serve an OpenAI-compatible API with thinking budgets, adapters and a price per token."""
    _quiet_transformers()
    from frugal import serve as serve_stage
    from frugal.models import ModelNotFoundError

    config = _settings(ServeConfig, settings | {"target": target}, "serve")
    try:
        with console.status(f"Loading {target}…"):
            server = serve_stage.build(config)
    except (ValidationError, ModelNotFoundError, ValueError, OSError, RuntimeError) as error:
        _fail(str(error))
    import uvicorn

    names = ", ".join(card.id for card in server.serving.models().data)
    where = f"http://{config.host}:{config.port}"
    console.print(f"Serving {names} on {where}/v1 (metrics: {where}/metrics)")
    uvicorn.Server(serve_stage.uvicorn_config(server, config)).run()


@app.command("run")
@_ctrl_c_exits_130
def run_command(
    recipe: Annotated[
        str | None, typer.Argument(help="A built-in recipe name (quickstart, gsm8k, experts, "
                                   "s1) or a recipe YAML file.")
    ] = None,
    run: Annotated[
        Path | None, typer.Option("--run", "-r", "--run-dir", callback=_run_dir,
                                  help="The run directory (default: runs/<recipe name>).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: KEY=VALUE, e.g. "
                                       "train.epochs=2 (repeatable).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Stop after this stage (e.g. curate).")
    ] = None,
) -> None:
    """Run the whole recipe: pool, distill, curate, train, eval, report (finished stages skip)."""
    _quiet_transformers()
    from frugal import pipeline
    from frugal.evaluate import read_summaries
    from frugal.models import ModelNotFoundError
    from frugal.questions import QuestionDataError
    from frugal.recipes import RecipeError, load_recipe

    try:
        loaded = load_recipe(recipe, set_ or [])
    except (RecipeError, OSError) as error:
        _fail(str(error))
    run_dir = run or Path("runs") / loaded.name
    started = time.perf_counter()

    def announce(stage: str, action: str) -> None:
        if action == "skip":
            console.print(f"[dim]{stage}: complete, skipped[/dim]")
        else:
            console.rule(f"[bold]{stage}")

    try:
        result = pipeline.run(loaded, run_dir, events=RichEvents(console), on_stage=announce,
                              until=until)
    except pipeline.StagePartial as partial:
        errors.print(f"[yellow]{partial}[/yellow]\nThe stages after it did not run.",
                     soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED if partial.interrupted else 1) from None
    except (
        ValidationError, QuestionDataError, ModelNotFoundError, ValueError, OSError, RuntimeError
    ) as error:
        _fail(str(error))
    summaries = read_summaries(run_dir)
    if summaries:
        console.print(headline_table(summaries))
    minutes = (time.perf_counter() - started) / 60
    console.print(f"ran {', '.join(result.ran) or 'nothing'}; skipped "
                  f"{', '.join(result.skipped) or 'nothing'}; {minutes:.1f} min")
    if result.report:
        console.print(f"Report: {result.report} (and {run_dir / REPORT_MD})")


def headline_table(summaries: dict) -> Table:
    """One row per budget, one column per model: narrow enough for any terminal."""
    from frugal.evaluation.table import cell

    budgets = list(dict.fromkeys(p.budget for s in summaries.values() for p in s.points))
    questions = {s.questions for s in summaries.values()}
    table = Table("budget", *summaries, title=f"accuracy [95% CI] @ mean thinking tokens, "
                  f"{'/'.join(map(str, sorted(questions)))} held-out questions")
    for budget in budgets:
        table.add_row(budget, *(
            next((cell(p) for p in s.points if p.budget == budget), "-")
            for s in summaries.values()
        ))
    return table


@app.command("cost")
def cost_command(
    recipe: Annotated[
        str | None, typer.Argument(
            help="A built-in recipe name or a recipe YAML file (an estimate before running), "
            "or a run directory (what it cost, measured).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: KEY=VALUE.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the break-even plot of an estimate here (a "
                                  "run directory's goes to its plots/).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Estimate a recipe's teacher tokens and dollars, training and evaluation time, total and
    break-even against the reference API; or, for a run directory, what it cost and when it
    pays for itself."""
    _quiet_transformers()
    from frugal import break_even, cost
    from frugal.models import ModelNotFoundError
    from frugal.recipes import RecipeError, load_recipe
    from frugal.run_files import LEDGER, RECIPE

    if recipe and (Path(recipe) / LEDGER).is_file():
        _cost_of_run(Path(recipe), as_json)
        return
    if recipe and Path(recipe).is_dir():
        _fail(f"{recipe} is a directory without {LEDGER}: not a run that has spent anything "
              f"yet. Fix: give a recipe (name or YAML), or a run directory after `frugal run`"
              f" (its {RECIPE} and {LEDGER} are read)")
    try:
        loaded = load_recipe(recipe, set_ or [])
        with errors.status("Measuring training and decoding speed on this machine…"):
            found = cost.estimate(loaded)
    except (RecipeError, ModelNotFoundError, ValueError, OSError) as error:
        _fail(str(error))
    if plot is not None:
        break_even.plot(cost.break_even_of(found, loaded), plot)
    if as_json:
        print(json.dumps(found.as_dict()))
        return
    table = Table("item", "amount", "dollars", title=f"cost estimate: {loaded.name}")
    table.add_row("questions", f"{found.questions:,}", "")
    table.add_row("teacher's traces", found.teacher_gives, "")
    local_teacher = (f" = {found.teacher_seconds / 60:.1f} min of decoding"
                     if found.teacher_seconds else "")
    table.add_row("teacher tokens (in / out, worst case)",
                  f"{found.teacher_input_tokens:,} / {found.teacher_output_tokens:,}"
                  + local_teacher, f"{found.teacher_dollars:.4f}")
    train_minutes = found.train_seconds / 60
    eval_minutes = found.eval_seconds / 60
    table.add_row("training tokens", f"{found.train_tokens:,} at "
                  f"{found.train_tokens_per_second:,.0f} tok/s = {train_minutes:.1f} min", "")
    table.add_row("evaluation tokens (worst case)", f"{found.eval_tokens:,} at "
                  f"{found.decode_tokens_per_second:,.0f} tok/s = {eval_minutes:.1f} min", "")
    table.add_row(f"compute at ${found.machine_price_per_hour}/h", "",
                  f"{found.compute_dollars:.4f}")
    table.add_row("total", "", f"{found.total_dollars:.4f}")
    reference = loaded.reference_api
    table.add_row("per request: specialist", f"{found.output_tokens_per_request:.0f} tokens "
                  "written", f"{found.specialist_dollars_per_request:.7f}")
    table.add_row(f"per request: {reference.name}",
                  f"{found.prompt_tokens_per_request:.0f} in / "
                  f"{reference.output_tokens or found.output_tokens_per_request:.0f} out at "
                  f"${reference.prices.input_per_million}/${reference.prices.output_per_million}"
                  " per M", f"{found.reference_dollars_per_request:.7f}")
    console.print(table)
    pays = found.break_even_requests
    console.print(
        f"The one-off ${found.one_off_dollars:.4f} (teacher and training) pays for itself after "
        f"{pays:,.0f} requests" if pays is not None else
        "The specialist never pays for itself: each request costs more here than through "
        f"{reference.name}", end="")
    console.print(f" against {reference.name}; accuracy, and so dollars per correct answer, "
                  "come with the run (`frugal cost RUN_DIR`)."
                  + (f" Plot: {plot}" if plot else ""))


def _cost_of_run(run_dir: Path, as_json: bool) -> None:
    """What a finished run cost, by stage, and its measured break-even."""
    from frugal import break_even
    from frugal.recipes import RecipeError, load_recipe
    from frugal.report import costs
    from frugal.run_files import RECIPE, RunFileError

    try:
        recipe = load_recipe(str(run_dir / RECIPE), [])
        money = costs(run_dir, recipe.train.name)
        found = break_even.measured(run_dir, recipe.train.name, recipe.reference_api,
                                    recipe.model)
    except (RecipeError, RunFileError, OSError) as error:
        _fail(str(error))
    by_stage = {stage: (money["seconds"].get(stage, 0.0), dollars)
                for stage, dollars in money["by_stage"].items()}
    plot = break_even.plot_run(found, run_dir) if found else None
    if as_json:
        print(json.dumps({
            "run": str(run_dir), "total_dollars": money["total"],
            "stages": {stage: {"compute_seconds": seconds, "dollars": dollars}
                       for stage, (seconds, dollars) in by_stage.items()},
            "break_even": None if found is None else {
                "prompt_tokens": found.prompt_tokens, "output_tokens": found.output_tokens,
                "offers": [{**offer.__dict__, "per_correct": offer.per_correct,
                            "requests_to_pay_off": found.requests_to_pay_off(offer)
                            if offer is not found.specialist else None}
                           for offer in (found.specialist, *found.alternatives)],
            },
            "plot": str(plot) if plot else None,
        }))
        return
    table = Table("stage", "compute seconds", "dollars", title=f"what {run_dir} cost")
    for stage, (seconds, dollars) in by_stage.items():
        table.add_row(stage, f"{seconds:.1f}", f"{dollars:.6f}")
    table.add_row("total", "", f"{money['total']:.6f}")
    console.print(table)
    if found is None:
        console.print("No break-even yet: the tuned model has not been evaluated in this run.")
        return
    offers = Table("who", "per request", "accuracy", "per correct answer", "pays off after",
                   title="the specialist against the APIs")
    for offer in (found.specialist, *found.alternatives):
        pays = None if offer is found.specialist else found.requests_to_pay_off(offer)
        offers.add_row(
            offer.name, f"${offer.per_request:.7f}",
            f"{100 * offer.accuracy:.1f}%{' (assumed)' if offer.assumed else ''}",
            f"${offer.per_correct:.7f}",
            "" if offer is found.specialist else
            ("never" if pays is None else f"{pays:,.0f} requests"))
    console.print(offers)
    for sentence in found.sentences():
        console.print(sentence.replace("**", ""))
    console.print(f"Plot: {plot}")


@app.command("export")
@_ctrl_c_exits_130
def export_command(
    run: Annotated[Path, typer.Argument(help="The run directory.", callback=_run_dir)],
    merged: Annotated[
        Path | None, typer.Option(help="Write a merged Hugging Face model to this directory.")
    ] = None,
    gguf: Annotated[Path | None, typer.Option(help="Write a GGUF file here.")] = None,
    gguf_type: Annotated[str, typer.Option(
        help="GGUF weights: f32, f16, q8_0, or q4_0 (4-bit; the embeddings stay q8_0).")] = "f16",
    adapter: Annotated[
        str | None, typer.Option(help="Which adapter (default: 'default' or the only one).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Base model (default: the adapter's).")]
    = None,
) -> None:
    """Merge the adapter into its base: a Hugging Face directory and/or a GGUF file."""
    _quiet_transformers()
    from frugal import export
    from frugal.models import ModelNotFoundError

    if merged is None and gguf is None:
        _fail("nothing to export: pass --merged DIR and/or --gguf FILE")
    try:
        with console.status("Merging the adapter into the base model…"):
            loaded = export.load_merged(run, adapter, model)
        if merged is not None:
            export.save_merged(loaded, merged)
            console.print(f"Wrote merged model to {merged}")
        if gguf is not None:
            with console.status(f"Writing {gguf_type} GGUF…"):
                export.save_gguf(loaded, gguf, gguf_type)
            console.print(f"Wrote {gguf} ({gguf.stat().st_size / 1e6:,.0f} MB, {gguf_type})")
    except (ModelNotFoundError, ValueError, OSError) as error:
        _fail(str(error))


@app.command("experts")
@_ctrl_c_exits_130
@with_settings("experts", Options(ExpertsConfig, short={"train.model": "-m", "benchmark": "-b"},
                                  rename={"train.model": "--model", "train.epochs": "--epochs",
                                          "train.max_steps": "--max-steps",
                                          "train.batch_size": "--batch-size",
                                          "train.learning_rate": "--learning-rate",
                                          "train.lora.r": "--lora-r",
                                          "batch_size": "--eval-batch-size"},
                                  skip=frozenset({"engine"})))
def experts_command(settings: dict[str, Any], run: RunOption = Path("runs/default")) -> None:
    """One LoRA expert per domain, a router, merged adapters, and the comparison with one
    generalist trained on the same tokens."""
    _quiet_transformers()
    from frugal.experts import stage
    from frugal.models import ModelNotFoundError

    config = _settings(ExpertsConfig, settings, "experts")
    try:
        result = stage.run(config, run, RichEvents(console))
    except (ValidationError, ModelNotFoundError, ValueError, OSError, RuntimeError) as error:
        _fail(str(error))
    print_experts(result.routing, result.comparison)
    console.print(f"Wrote adapters/expert-*, adapters/generalist, adapters/merged-*, router/ "
                  f"and {run / COMPARISON} in {run}")


def print_experts(routing: dict, comparison: dict | None) -> None:
    routers = Table("router", "held-out accuracy", "n", title="routing")
    for kind, score in routing["routers"].items():
        chosen = " (chosen)" if kind == routing["chosen"] else ""
        routers.add_row(kind + chosen, f"{100 * score['accuracy']:.1f}%", str(score["n"]))
    console.print(routers)
    chosen = routing["routers"][routing["chosen"]]
    confusion = Table("true \\ routed", *chosen["experts"], title="confusion matrix")
    for name, row in zip(chosen["experts"], chosen["confusion"], strict=True):
        confusion.add_row(name, *map(str, row))
    console.print(confusion)
    if comparison is None:
        return
    contenders = comparison["contenders"]
    domains = sorted({d for c in contenders.values() for d in c["by_domain"]})
    table = Table("contender", *domains, "overall [95% CI]", title="experts comparison")
    for label, row in contenders.items():
        cells = [f"{100 * row['by_domain'][d]['accuracy']:.0f}%" if d in row["by_domain"]
                 else "-" for d in domains]
        low, high = row["overall"]["ci95"]
        table.add_row(label, *cells, f"{100 * row['overall']['accuracy']:.1f}% "
                      f"[{100 * low:.1f}-{100 * high:.1f}]")
    console.print(table)
    console.print(comparison["verdict"])


def _quiet_transformers() -> None:
    """Our own progress and status lines stand in for transformers' per-tensor bars."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # TRL and PEFT still read a property transformers renamed; the warning is theirs to fix and
    # would only interrupt the progress display.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                            category=FutureWarning)


def _fail(message: str) -> NoReturn:
    fail(message)


if __name__ == "__main__":
    app()
