"""The `frugal` command line: parses arguments and calls the stage functions, nothing more."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel

from frugal import __version__

app = typer.Typer(
    help="Turn a small open-weight language model into a cheap specialist that reasons.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)


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
) -> None:
    """Answer one question with budget forcing; print the thinking and the answer apart."""
    from frugal.generation import BudgetConfig, BudgetForcingEngine
    from frugal.grading import grade
    from frugal.models import ModelNotFoundError, load_model

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
    # Our own status line stands in for transformers' per-tensor progress bars.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    status = errors if as_json else console  # keep stdout one JSON object with --json
    try:
        with status.status(f"Loading {model}…"):
            loaded = load_model(model)
    except ModelNotFoundError as error:
        _fail(str(error))
    engine = BudgetForcingEngine(loaded.model, loaded.tokenizer)
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


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(1)
