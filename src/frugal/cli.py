"""The `frugal` command line: parses arguments and calls the stage functions, nothing more."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from frugal import __version__
from frugal.run_files import LEDGER

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


@app.command()
@_ctrl_c_exits_130
def generate(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Alias, local directory, .gguf file or hub id."
        ),
    ] = "smollm2-135m-instruct",
    max_thinking_tokens: Annotated[
        int, typer.Option(help="Force the answer when thinking reaches this many tokens.")
    ] = 256,
    min_thinking_tokens: Annotated[
        int, typer.Option(help="Replace an earlier end of thinking with the wait text.")
    ] = 0,
    num_waits: Annotated[
        int, typer.Option(help="Replace this many ends of thinking with the wait text.")
    ] = 0,
    wait_text: Annotated[str, typer.Option(help="Appended when an end is refused.")] = "Wait",
    answer_prefix: Annotated[
        str, typer.Option(help="Forced after a forced end of thinking.")
    ] = "Final Answer:",
    max_answer_tokens: Annotated[int, typer.Option(help="Cap on answer tokens.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 means greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
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
    from frugal.generation import BudgetConfig, BudgetForcingEngine, Engine
    from frugal.grading import grade
    from frugal.models import ModelNotFoundError, load_model, load_tokenizer

    try:
        budget = BudgetConfig(
            max_thinking_tokens=max_thinking_tokens,
            min_thinking_tokens=min_thinking_tokens,
            num_waits=num_waits,
            wait_text=wait_text,
            answer_prefix=answer_prefix,
            max_answer_tokens=max_answer_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
    except ValidationError as error:
        _fail("; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()))
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
                      "server), or vllm to start one for `frugal eval`; budget forcing is kept "
                      "either way.")
]
EngineModelOption = Annotated[
    str | None, typer.Option(help="With --engine URL: the name the server serves the base model "
                             "under (default: --model).")
]
EngineKeyOption = Annotated[
    str | None, typer.Option(help="With --engine URL: the environment variable holding its key.")
]


def _csv(value: str | None, cast: type = str) -> list | None:
    return [cast(v.strip()) for v in value.split(",") if v.strip()] if value else None


@app.command()
@_ctrl_c_exits_130
def pool(
    run: RunOption = Path("runs/default"),
    source: Annotated[
        str, typer.Option(help="'tasks', 'gsm8k', or a JSONL/Parquet/CSV file or hub dataset.")
    ] = "tasks",
    families: Annotated[
        str | None, typer.Option(help="Comma-separated task families (default: all).")
    ] = None,
    per_family: Annotated[int, typer.Option(help="Questions per task family.")] = 200,
    difficulties: Annotated[
        str | None, typer.Option(help="Comma-separated difficulty levels (default: all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the task generators.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Keep at most this many questions.")] = None,
    question_field: Annotated[str, typer.Option(help="Column holding the question.")] = "question",
    answer_field: Annotated[str, typer.Option(help="Column holding the answer.")] = "answer",
    id_field: Annotated[str | None, typer.Option(help="Column holding ids (else hashed).")] = None,
    domain_field: Annotated[str | None, typer.Option(help="Column holding the domain.")] = None,
    solution_field: Annotated[
        str | None, typer.Option(help="Column holding a worked solution.")
    ] = None,
    answer_format: Annotated[
        str | None, typer.Option(help="'plain', or 'gsm8k' for answers ending in '#### N'.")
    ] = None,
    split: Annotated[str, typer.Option(help="Split of a hub dataset.")] = "train",
    config_name: Annotated[str | None, typer.Option(help="Config of a hub dataset.")] = None,
) -> None:
    """Build the question pool (pool.jsonl) of a run directory."""
    from frugal import pool as pool_stage
    from frugal.questions import FieldMap, QuestionDataError

    try:
        config = pool_stage.PoolConfig(
            source=source,
            families=_csv(families),
            per_family=per_family,
            difficulties=_csv(difficulties, int),
            seed=seed,
            limit=limit,
            fields=FieldMap(
                question=question_field, answer=answer_field, id=id_field,
                domain=domain_field, solution=solution_field,
            ),
            answer_format=answer_format,
            split=split,
            config_name=config_name,
        )
        with console.status(f"Building the pool from {source}…"):
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
def distill(
    run: RunOption = Path("runs/default"),
    teacher: Annotated[
        str, typer.Option(help="program, dataset, hf, self (STaR) or openai.")
    ] = "program",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Teacher model: API model name, or a local spec."),
    ] = None,
    base_url: Annotated[
        str, typer.Option(help="OpenAI-compatible endpoint (openai teacher).")
    ] = "https://api.openai.com/v1",
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key.")
    ] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    max_retries: Annotated[int, typer.Option(help="Retries per request.")] = 6,
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 600.0,
    temperature: Annotated[
        float | None,
        typer.Option(help="Sampling temperature (default: 0.6 for openai, greedy for hf, "
                     "0.8 for self)."),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Max output tokens per API call.")] = 4096,
    price_input: Annotated[float, typer.Option(help="Dollars per 1M input tokens.")] = 0.0,
    price_output: Annotated[float, typer.Option(help="Dollars per 1M output tokens.")] = 0.0,
    price_cached_input: Annotated[
        float | None, typer.Option(help="Dollars per 1M cached input tokens.")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="Stop issuing calls before spending more dollars.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Distill only the first N questions.")] = None,
    retry_failed: Annotated[
        bool, typer.Option(help="Ask again questions that failed for good with these settings.")
    ] = False,
    samples: Annotated[int, typer.Option(help="Answers per question (self teacher).")] = 4,
    max_thinking_tokens: Annotated[
        int, typer.Option(help="Thinking budget of local teachers.")
    ] = 256,
    max_answer_tokens: Annotated[int, typer.Option(help="Answer budget of local teachers.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Rows decoded together (local).")] = 8,
    machine_price_per_hour: Annotated[
        float, typer.Option(help="Dollars per hour of this machine (local teachers).")
    ] = 0.0,
) -> None:
    """Distill graded reasoning traces (traces.jsonl) from a teacher; nothing is paid twice."""
    _quiet_transformers()
    from frugal import distill as distill_stage
    from frugal.generation import BudgetConfig
    from frugal.ledger import TokenPrices
    from frugal.models import ModelNotFoundError
    from frugal.questions import QuestionDataError
    from frugal.teachers.local import LocalTeacherConfig
    from frugal.teachers.openai_teacher import OpenAITeacherConfig

    try:
        openai_config = None
        if teacher == "openai":
            if not model:
                _fail("the openai teacher needs --model (the endpoint's model name)")
            openai_config = OpenAITeacherConfig(
                base_url=base_url, model=model, api_key_env=api_key_env,
                concurrency=concurrency, max_retries=max_retries, timeout=timeout,
                max_tokens=max_tokens,
                **({} if temperature is None else {"temperature": temperature}),
            )
        local = LocalTeacherConfig(
            model=model or "smollm2-135m-instruct",
            budget=BudgetConfig(
                max_thinking_tokens=max_thinking_tokens, max_answer_tokens=max_answer_tokens,
                temperature=temperature or 0.0,
            ),
            batch_size=batch_size,
            samples=samples,
        )
        config = distill_stage.DistillConfig(
            teacher=teacher,
            openai=openai_config,
            local=local,
            prices=TokenPrices(
                input_per_million=price_input, output_per_million=price_output,
                cached_input_per_million=price_cached_input,
            ),
            machine_price_per_hour=machine_price_per_hour,
            max_cost=max_cost,
            limit=limit,
            retry_failed=retry_failed,
        )
        result = distill_stage.run(config, run, console=console)
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
def curate(
    run: RunOption = Path("runs/default"),
    target: Annotated[int, typer.Option(help="How many items to select (s1: 1000).")] = 1000,
    strategy: Annotated[
        str, typer.Option(help="s1, or an ablation baseline: random, longest, diverse.")
    ] = "s1",
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    tokenizer: Annotated[
        str, typer.Option(help="Model whose tokenizer counts trace tokens.")
    ] = "smollm2-135m-instruct",
    max_trace_tokens: Annotated[int, typer.Option(help="Drop longer traces.")] = 4096,
    keep_incorrect: Annotated[
        bool, typer.Option(help="Keep traces graded incorrect.")
    ] = False,
    format_pattern: Annotated[
        list[str] | None,
        typer.Option(help="Regex marking a broken item (repeatable; replaces the defaults)."),
    ] = None,
    near_duplicates: Annotated[
        float | None, typer.Option(help="Drop questions at this embedding cosine or above.")
    ] = None,
    eval_set: Annotated[
        list[str] | None, typer.Option(help="Decontaminate against this question file or "
                                       "hub dataset (repeatable).")
    ] = None,
    reference_model: Annotated[
        list[str] | None, typer.Option(help="Drop what this model solves (repeatable).")
    ] = None,
    reference_thinking_tokens: Annotated[
        int, typer.Option(help="Thinking budget of the reference models.")
    ] = 256,
    pass_rate_band: Annotated[
        str | None, typer.Option(help="Keep self-teacher pass rates in LOW,HIGH (e.g. 0.2,0.8).")
    ] = None,
    clusters: Annotated[int, typer.Option(help="k-means clusters for questions without domain.")]
    = 8,
) -> None:
    """Select the training set (selected.jsonl) the s1K way, with a reason for every drop."""
    _quiet_transformers()
    from frugal import curate as curate_stage
    from frugal.generation import BudgetConfig
    from frugal.models import ModelNotFoundError
    from frugal.questions import QuestionDataError

    try:
        band = _csv(pass_rate_band, float)
        settings = {
            "target": target, "strategy": strategy, "seed": seed, "tokenizer": tokenizer,
            "max_trace_tokens": max_trace_tokens, "require_correct": not keep_incorrect,
            "near_duplicate_threshold": near_duplicates, "eval_sets": eval_set or [],
            "reference_models": reference_model or [],
            "reference_budget": BudgetConfig(
                max_thinking_tokens=reference_thinking_tokens, max_answer_tokens=64
            ),
            "pass_rate_band": tuple(band) if band else None, "clusters": clusters,
        }
        if format_pattern:
            settings["format_patterns"] = format_pattern
        config = curate_stage.CurateConfig(**settings)
        result = curate_stage.run(config, run, console=console)
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
def train_command(
    run: RunOption = Path("runs/default"),
    model: Annotated[str, typer.Option("--model", "-m", help="Base model spec.")]
    = "smollm2-135m-instruct",
    method: Annotated[str, typer.Option(help="lora, full or qlora (CUDA only).")] = "lora",
    base_dtype: Annotated[
        str, typer.Option(help="LoRA's frozen base: auto (bfloat16 on GPUs, else float32), "
                          "float32 or bfloat16.")
    ] = "auto",
    name: Annotated[str, typer.Option(help="Adapter name: adapters/<name>/.")] = "default",
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 32,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    target_modules: Annotated[
        str, typer.Option(help="Comma-separated module names, or all-linear.")
    ] = "all-linear",
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-4,
    epochs: Annotated[float, typer.Option(help="Passes over the data.")] = 3.0,
    max_steps: Annotated[int, typer.Option(help="Stop after N steps (-1: epochs).")] = -1,
    batch_size: Annotated[
        int, typer.Option(help="Examples per optimizer step (bfd: packed rows).")
    ] = 8,
    gradient_accumulation_steps: Annotated[
        int, typer.Option(help="Batches per optimizer update.")
    ] = 1,
    max_seq_length: Annotated[
        int, typer.Option(help="Longest example; longer ones are left out, never cut.")
    ] = 2048,
    packing: Annotated[
        str, typer.Option(help="padding-free (default), bfd (pack rows of max-seq-length) or none.")
    ] = "padding-free",
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    system: Annotated[str | None, typer.Option(help="System prompt of every example.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = False,
    machine_price_per_hour: Annotated[
        float, typer.Option(help="Dollars per hour of this machine, for the ledger.")
    ] = 0.0,
) -> None:
    """Fine-tune on selected.jsonl with TRL (LoRA by default); works under torchrun."""
    _quiet_transformers()
    from frugal import train as train_stage
    from frugal.models import ModelNotFoundError

    modules: list[str] | str = target_modules
    if target_modules != "all-linear":
        modules = _csv(target_modules) or "all-linear"
    try:
        config = train_stage.TrainConfig(
            model=model, method=method, base_dtype=base_dtype, name=name, system=system,
            lora=train_stage.LoraSettings(
                r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=modules
            ),
            learning_rate=learning_rate, epochs=epochs, max_steps=max_steps,
            batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps,
            max_seq_length=max_seq_length, packing=packing, save_steps=save_steps, seed=seed,
            machine_price_per_hour=machine_price_per_hour,
        )
        result = train_stage.run(config, run, resume=resume)
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
        console.print(f"Wrote {result.output_path} (log: {run / train_stage.TRAIN_LOG})")


@app.command("eval")
@_ctrl_c_exits_130
def eval_command(
    run: RunOption = Path("runs/default"),
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Base model; default: the adapter's base.")
    ] = None,
    adapter: Annotated[
        str | None, typer.Option(help="An adapter of the run (name) or an adapter directory.")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Name under eval/ (default: the adapter's or 'base').")
    ] = None,
    benchmark: Annotated[
        str, typer.Option("--benchmark", "-b", help="tasks, gsm8k, a spec .yaml, a question "
                          "file or a hub dataset.")
    ] = "tasks",
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N questions.")] = None,
    max_thinking_tokens: Annotated[
        str, typer.Option(help="Budget sweep, comma-separated.")
    ] = "64,128,256,512",
    num_waits: Annotated[str, typer.Option(help="Wait sweep, comma-separated.")] = "0",
    min_thinking_tokens: Annotated[int, typer.Option(help="Minimum thinking.")] = 0,
    max_answer_tokens: Annotated[int, typer.Option(help="Cap on answer tokens.")] = 64,
    samples: Annotated[int, typer.Option(help="Samples per question (maj@k, pass@k).")] = 1,
    temperature: Annotated[float, typer.Option(help="0 means greedy.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Rows decoded together.")] = 8,
    system: Annotated[str | None, typer.Option(help="Optional system prompt.")] = None,
    machine_price_per_hour: Annotated[
        float, typer.Option(help="Dollars per hour of this machine, for the ledger.")
    ] = 0.0,
    dtype: Annotated[
        str, typer.Option(help="auto (bfloat16 on GPUs and AMX CPUs), float32 or bfloat16.")
    ] = "auto",
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
        config = eval_stage.EvalConfig(
            model=model, adapter=adapter, label=label, benchmark=benchmark, limit=limit,
            max_thinking_tokens=_csv(max_thinking_tokens, int),
            num_waits=_csv(num_waits, int), min_thinking_tokens=min_thinking_tokens,
            max_answer_tokens=max_answer_tokens, samples=samples, temperature=temperature,
            seed=seed, batch_size=batch_size, system=system,
            machine_price_per_hour=machine_price_per_hour, dtype=dtype,
            engine=endpoint_option(engine_url, engine_model or model, engine_key_env, vllm=True),
        )
        result = eval_stage.run_with_progress(config, run, console)
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
    summaries = eval_stage.read_summaries(run, result.summary["benchmark"])
    headers, rows = comparison(summaries)
    table = Table(*headers, title=f"{result.summary['benchmark']}: accuracy [95% CI] "
                  "@ mean thinking tokens")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    resumed = result.summary["questions"] * len(result.summary["points"]) * config.samples
    console.print(f"{result.generated} generations made, {resumed - result.generated} resumed")
    console.print(f"Wrote {result.directory / eval_stage.RESULTS}, "
                  f"{result.directory / eval_stage.SUMMARY}"
                  + (f" and {result.plot}" if result.plot else ""))


@app.command("serve")
def serve_command(
    target: Annotated[str, typer.Argument(help="A run directory, or a model spec.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Base model (default: the run's).")
    ] = None,
    adapter: Annotated[
        list[str] | None, typer.Option(help="Serve another adapter: NAME=PATH (repeatable).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="The base model's name in /v1/models.")]
    = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[
        str | None, typer.Option(help="Require this key (default: $FRUGAL_API_KEY if set).")
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="Rows decoded together.")] = 16,
    batch_window_ms: Annotated[
        float, typer.Option(help="How long an idle server waits to batch arrivals.")
    ] = 10.0,
    max_answer_tokens: Annotated[int, typer.Option(help="Cap on max_tokens.")] = 512,
    max_thinking_tokens: Annotated[int, typer.Option(help="Cap on thinking budgets.")] = 2048,
    default_thinking_tokens: Annotated[
        int, typer.Option(help="Thinking budget of requests that set none.")
    ] = 256,
    max_prompt_tokens: Annotated[int, typer.Option(help="Longer prompts get a 400.")] = 2048,
    machine_price_per_hour: Annotated[
        float, typer.Option(help="Dollars per hour of this machine: prices every token.")
    ] = 0.0,
    dtype: Annotated[
        str, typer.Option(help="auto (bfloat16 on GPUs and AMX CPUs), float32 or bfloat16.")
    ] = "auto",
    engine_url: Annotated[
        str, typer.Option("--engine", help="local, vllm (started here with every adapter and "
                          "stopped on exit), or the URL of an OpenAI-compatible completions "
                          "server up to /v1; budget forcing is kept either way.")
    ] = "local",
    engine_model: EngineModelOption = None,
    max_waiting: Annotated[
        int, typer.Option(help="Requests that may wait for a batch slot; more get 429.")
    ] = 64,
    request_timeout: Annotated[
        float, typer.Option(help="Seconds a non-streamed request may take (504 after).")
    ] = 600.0,
    max_connections: Annotated[
        int, typer.Option(help="Open connections accepted; beyond it uvicorn answers 503.")
    ] = 512,
    allowed_host: Annotated[
        list[str] | None, typer.Option(help="A Host name clients may use besides the loopback "
                                       "names and --host (repeatable; '*': any).")
    ] = None,
    allow_no_key: Annotated[
        bool, typer.Option(help="Serve a non-loopback --host without an API key.")
    ] = False,
    docs: Annotated[bool, typer.Option(help="Serve /docs and /openapi.json.")] = False,
    public_metrics: Annotated[
        bool, typer.Option(help="Serve /metrics without the API key.")
    ] = False,
) -> None:
    """Serve an OpenAI-compatible API with thinking budgets, adapters and a price per token."""
    _quiet_transformers()
    from frugal import serve as serve_stage
    from frugal.models import ModelNotFoundError

    extra = {}
    for item in adapter or []:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            _fail(f"--adapter {item!r}: expected NAME=PATH")
        extra[key] = path
    try:
        config = serve_stage.ServeConfig(
            target=target, model=model, adapters=extra, served_name=name, host=host, port=port,
            api_key=api_key, max_batch_size=max_batch_size, batch_window_ms=batch_window_ms,
            max_answer_tokens=max_answer_tokens, max_thinking_tokens=max_thinking_tokens,
            default_thinking_tokens=default_thinking_tokens,
            max_prompt_tokens=max_prompt_tokens, machine_price_per_hour=machine_price_per_hour,
            dtype=dtype, engine=engine_url, engine_model=engine_model,
            max_waiting=max_waiting, request_timeout_s=request_timeout,
            max_connections=max_connections, allowed_hosts=allowed_host or [],
            allow_no_key=allow_no_key, docs=docs, public_metrics=public_metrics,
        )
        with console.status(f"Loading {target}…"):
            server = serve_stage.build(config)
    except (ValidationError, ModelNotFoundError, ValueError, OSError, RuntimeError) as error:
        _fail(str(error))
    import uvicorn

    names = ", ".join(card.id for card in server.serving.models().data)
    console.print(f"Serving {names} on http://{host}:{port}/v1 "
                  f"(metrics: http://{host}:{port}/metrics)")
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
        result = pipeline.run(loaded, run_dir, console=console, on_stage=announce, until=until)
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
        console.print(f"Report: {result.report} (and {run_dir / 'report.md'})")


def headline_table(summaries: dict) -> Table:
    """One row per budget, one column per model: narrow enough for any terminal."""
    from frugal.evaluation.table import cell

    budgets = list(dict.fromkeys(p["budget"] for s in summaries.values() for p in s["points"]))
    questions = {s["questions"] for s in summaries.values()}
    table = Table("budget", *summaries, title=f"accuracy [95% CI] @ mean thinking tokens, "
                  f"{'/'.join(map(str, sorted(questions)))} held-out questions")
    for budget in budgets:
        table.add_row(budget, *(
            next((cell(p) for p in s["points"] if p["budget"] == budget), "-")
            for s in summaries.values()
        ))
    return table


@app.command("cost")
def cost_command(
    recipe: Annotated[
        str | None, typer.Argument(help="A built-in recipe name or a recipe YAML file.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: KEY=VALUE.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Estimate a recipe's teacher tokens and dollars, training and evaluation time, and total."""
    _quiet_transformers()
    from frugal import cost
    from frugal.models import ModelNotFoundError
    from frugal.recipes import RecipeError, load_recipe

    try:
        loaded = load_recipe(recipe, set_ or [])
        with errors.status("Measuring training and decoding speed on this machine…"):
            found = cost.estimate(loaded)
    except (RecipeError, ModelNotFoundError, ValueError, OSError) as error:
        _fail(str(error))
    if as_json:
        print(json.dumps(found.as_dict()))
        return
    table = Table("item", "amount", "dollars", title=f"cost estimate: {loaded.name}")
    table.add_row("questions", f"{found.questions:,}", "")
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
    console.print(table)


@app.command("export")
@_ctrl_c_exits_130
def export_command(
    run: Annotated[Path, typer.Argument(help="The run directory.", callback=_run_dir)],
    merged: Annotated[
        Path | None, typer.Option(help="Write a merged Hugging Face model to this directory.")
    ] = None,
    gguf: Annotated[Path | None, typer.Option(help="Write a GGUF file here.")] = None,
    gguf_type: Annotated[str, typer.Option(help="GGUF weights: f16 or q8_0.")] = "f16",
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
def experts_command(
    run: RunOption = Path("runs/default"),
    model: Annotated[str, typer.Option("--model", "-m", help="Base model spec.")]
    = "smollm2-135m-instruct",
    epochs: Annotated[float, typer.Option(help="Passes over each adapter's data.")] = 3.0,
    max_steps: Annotated[int, typer.Option(help="Stop each adapter after N steps (-1: epochs).")]
    = -1,
    batch_size: Annotated[int, typer.Option(help="Examples per optimizer step.")] = 8,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-4,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (the same for every adapter).")] = 16,
    min_examples: Annotated[int, typer.Option(help="Smaller domains get no expert.")] = 4,
    merges: Annotated[str, typer.Option(help="Merged contenders: linear,ties.")] = "linear,ties",
    benchmark: Annotated[str, typer.Option("--benchmark", "-b", help="Held-out questions.")]
    = "tasks",
    max_thinking_tokens: Annotated[str, typer.Option(help="Budgets, comma-separated.")] = "64",
    max_answer_tokens: Annotated[int, typer.Option(help="Cap on answer tokens.")] = 32,
    compare: Annotated[bool, typer.Option(help="Evaluate every contender.")] = True,
    machine_price_per_hour: Annotated[
        float, typer.Option(help="Dollars per hour of this machine, for the ledger.")
    ] = 0.0,
) -> None:
    """One LoRA expert per domain, a router, merged adapters, and the comparison with one
    generalist trained on the same tokens."""
    _quiet_transformers()
    from frugal.experts import stage
    from frugal.models import ModelNotFoundError
    from frugal.train import LoraSettings, TrainConfig

    try:
        config = stage.ExpertsConfig(
            train=TrainConfig(model=model, epochs=epochs, max_steps=max_steps,
                              batch_size=batch_size, learning_rate=learning_rate,
                              lora=LoraSettings(r=lora_r, alpha=2 * lora_r),
                              machine_price_per_hour=machine_price_per_hour),
            min_examples=min_examples, merges=_csv(merges) or [], benchmark=benchmark,
            max_thinking_tokens=_csv(max_thinking_tokens, int),
            max_answer_tokens=max_answer_tokens, compare=compare,
            machine_price_per_hour=machine_price_per_hour,
        )
        result = stage.run(config, run, console=console)
    except (ValidationError, ModelNotFoundError, ValueError, OSError, RuntimeError) as error:
        _fail(str(error))
    print_experts(result.routing, result.comparison)
    console.print(f"Wrote adapters/expert-*, adapters/generalist, adapters/merged-*, router/ "
                  f"and {run / stage.COMPARISON} in {run}")


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


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(1)


if __name__ == "__main__":
    app()
