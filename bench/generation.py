"""Benchmark budget-forced generation on SmolLM2-135M-Instruct with GSM8K questions.

Measures generated tokens per second of wall-clock generation time, model loaded once, greedy:
  (a) frugal: `BudgetForcingEngine.generate`, one batched decode loop that keeps the KV cache
      and refills a finished row's slot with the next question (continuous batching);
  (b) the s1 reference method with plain `model.generate` calls: think, then for each Wait
      strip the stop token, append "Wait", re-encode the whole prompt + text and generate again,
      then append the end of thinking + "Final Answer:", re-encode and generate the answer;
  (c) plain batched `model.generate` without forcing (max_new_tokens = thinking + answer budget);
  (d) batch-1 decode speed of frugal's engine next to the memory-bandwidth bound
      (weight bytes / measured memory copy speed).

Targets: (a)/(b) >= 2.0 (no re-encoding pays off) and (a)/(c) >= 0.85 (forcing costs little over
plain generation). Run: `.venv/bin/python bench/generation.py` (flags: --help). On a small CPU
machine keep other processes idle: PyTorch's threads slow down badly when a core is busy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import StoppingCriteria, StoppingCriteriaList

from frugal.generation import BudgetConfig, BudgetForcingEngine
from frugal.models import load_model
from frugal.questions import GSM8K_FIELDS, read_questions
from frugal.reasoning_format import ReasoningFormat

MODEL = "smollm2-135m-instruct"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
TARGET_VS_S1 = 2.0
TARGET_VS_PLAIN = 0.85
ANSWER_PREFIX = "Final Answer:"
WAIT_TEXT = "Wait"


@dataclass
class Run:
    """What one method produced: generated tokens, wall seconds, and per-row details."""

    name: str
    tokens: int = 0
    seconds: float = 0.0
    thinking_tokens: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class PerRowMaxNewTokens(StoppingCriteria):
    """Stop each row at its own budget (one `generate` call takes only one max_new_tokens)."""

    def __init__(self, prompt_width: int, limits: Sequence[int], device: torch.device) -> None:
        self.prompt_width = prompt_width
        self.limits = torch.tensor(list(limits), device=device)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: Any
    ) -> torch.BoolTensor:
        return (input_ids.shape[1] - self.prompt_width) >= self.limits


class HFGenerator:
    """Batched greedy `model.generate` on left-padded text prompts, the plain transformers way."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.device = next(model.parameters()).device
        self.calls = 0

    def __call__(
        self,
        texts: Sequence[str],
        max_new: Sequence[int],
        stop_ids: Sequence[int],
        min_new_tokens: int = 0,
    ) -> list[list[int]]:
        """Generated ids per row: up to and including the first stop id, at most max_new[r]."""
        enc = self.tokenizer(
            list(texts), return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        width = enc["input_ids"].shape[1]
        kwargs: dict[str, Any] = {"min_new_tokens": min_new_tokens} if min_new_tokens else {}
        out = self.model.generate(
            **enc,
            max_new_tokens=max(max_new),
            do_sample=False,
            eos_token_id=list(stop_ids),
            pad_token_id=self.pad_id,
            stopping_criteria=StoppingCriteriaList(
                [PerRowMaxNewTokens(width, max_new, self.device)]
            ),
            **kwargs,
        )
        self.calls += 1
        stops = set(stop_ids)
        rows = []
        for r, limit in enumerate(max_new):
            generated = out[r, width:].tolist()[:limit]
            end = next((i + 1 for i, t in enumerate(generated) if t in stops), len(generated))
            rows.append(generated[:end])  # what follows the first stop is padding
        return rows


def s1_reference(
    gen: HFGenerator,
    fmt: ReasoningFormat,
    prompts: Sequence[str],
    max_thinking: int,
    num_waits: int,
    max_answer: int,
    run: Run,
) -> list[str]:
    """s1's budget forcing (simplescaling/s1 README) for one batch; returns the full texts."""
    stop_id = fmt.stop_token_id
    if stop_id is None:
        raise SystemExit("this benchmark needs a format whose end of thinking is one token")
    end_ids = sorted(fmt.end_of_turn_ids)
    think_stops = [stop_id, *end_ids]
    special = set(think_stops)

    def text_of(ids: list[int]) -> str:  # the output text without its stop token
        return gen.tokenizer.decode([t for t in ids if t not in special])

    n = len(prompts)
    texts = ["" for _ in range(n)]  # everything generated or appended after each prompt
    remaining = [max_thinking] * n
    pending = gen(prompts, remaining, think_stops)  # the last output, not yet in `texts`
    thinking = [len(p) for p in pending]
    for _ in range(num_waits):
        for r in range(n):
            remaining[r] -= len(pending[r])
        active = [r for r in range(n) if remaining[r] > 0]
        if not active:
            break
        for r in active:
            texts[r] += text_of(pending[r]) + WAIT_TEXT
        # Re-encode the whole prompt + text so far, as s1's reference code does after each Wait.
        outs = gen(
            [prompts[r] + texts[r] for r in active],
            [remaining[r] for r in active],
            think_stops,
            min_new_tokens=1,  # s1 passes min_tokens=1 after a Wait
        )
        for r, out in zip(active, outs, strict=True):
            pending[r] = out
            thinking[r] += len(out)
    for r in range(n):
        texts[r] += text_of(pending[r]) + fmt.think_end + ANSWER_PREFIX
    answers = gen([p + t for p, t in zip(prompts, texts, strict=True)], [max_answer] * n, end_ids)
    run.tokens += sum(thinking) + sum(len(a) for a in answers)
    run.thinking_tokens.extend(thinking)
    return [t + gen.tokenizer.decode(a) for t, a in zip(texts, answers, strict=True)]


def plain_generate(
    gen: HFGenerator, fmt: ReasoningFormat, prompts: Sequence[str], max_new: int, run: Run
) -> None:
    outs = gen(prompts, [max_new] * len(prompts), sorted(fmt.end_of_turn_ids))
    run.tokens += sum(len(o) for o in outs)


def batches(prompts: Sequence[str], fmt: ReasoningFormat, size: int) -> list[list[str]]:
    """Batches in the engine's order (by prompt length) so each method sees the same batches."""
    order = sorted(range(len(prompts)), key=lambda i: len(fmt.encode(prompts[i])))
    return [[prompts[i] for i in order[s : s + size]] for s in range(0, len(order), size)]


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def copy_speed(mib: int = 512, repeats: int = 5) -> float:
    """Best measured memory copy speed in bytes/s (a copy reads and writes: 2 x size moved)."""
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages once
    best = min(timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * src.element_size() / best


def verdict(value: float, target: float) -> str:
    return "[green]PASS[/green]" if value >= target else "[red]FAIL[/red]"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=32, help="first N GSM8K questions")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-thinking-tokens", type=int, default=256)
    parser.add_argument("--num-waits", type=int, default=2)
    parser.add_argument("--max-answer-tokens", type=int, default=64)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K JSON Lines file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console()
    T, A, B, W = args.max_thinking_tokens, args.max_answer_tokens, args.batch_size, args.num_waits
    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(
            f"[yellow]warning: load average {load:.2f} before the run; other processes on "
            "these cores can slow PyTorch's threads many times over and skew every ratio[/yellow]"
        )
    questions = [q.question for q in read_questions(args.data, GSM8K_FIELDS, limit=args.questions)]
    loaded = load_model(MODEL)
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt = ReasoningFormat.for_tokenizer(tokenizer)
    engine = BudgetForcingEngine(model, tokenizer, fmt)
    gen = HFGenerator(model, tokenizer)
    prompts = [fmt.generation_prompt(q) for q in questions]
    budget = BudgetConfig(
        max_thinking_tokens=T, num_waits=W, max_answer_tokens=A, answer_prefix=ANSWER_PREFIX
    )
    console.print(
        f"{MODEL} on {next(model.parameters()).device}, {torch.get_num_threads()} threads; "
        f"{len(questions)} questions, batch {B}, thinking <= {T}, {W} Waits, answer <= {A}"
    )

    frugal, s1, plain = Run("(a) frugal engine"), Run("(b) s1 reference"), Run("(c) plain generate")
    with torch.inference_mode():
        # Warm-up: first-call overheads (allocator, kernels, lazy imports) must not be timed.
        warm = BudgetConfig(max_thinking_tokens=4, num_waits=1, max_answer_tokens=2)
        engine.generate(questions[:1], warm, batch_size=1)
        s1_reference(gen, fmt, prompts[:1], 4, 1, 2, Run("warm-up"))
        plain_generate(gen, fmt, prompts[:1], 6, Run("warm-up"))

        results = []
        frugal.seconds = timed(
            lambda: results.extend(engine.generate(questions, budget, batch_size=B))
        )
        frugal.tokens = sum(len(r.token_ids) for r in results)
        frugal.thinking_tokens = [r.thinking_tokens for r in results]

        gen.calls = 0
        s1.seconds = timed(
            lambda: [s1_reference(gen, fmt, b, T, W, A, s1) for b in batches(prompts, fmt, B)]
        )
        s1_calls = gen.calls
        plain.seconds = timed(
            lambda: [plain_generate(gen, fmt, b, T + A, plain) for b in batches(prompts, fmt, B)]
        )

        # (d) batch-1 decode: min = max forces all 128 thinking steps even if the model stops.
        one = BudgetConfig(max_thinking_tokens=128, min_thinking_tokens=128, max_answer_tokens=1)
        single: list[Any] = []
        single_s = timed(lambda: single.extend(engine.generate(questions[:1], one, batch_size=1)))
        single_tokens = len(single[0].token_ids)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    copy_bps = copy_speed()

    table = Table(title="Generation throughput (greedy, wall-clock of generation only)")
    for column in ("method", "tokens", "seconds", "tokens/s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for run in (frugal, s1, plain):
        table.add_row(run.name, str(run.tokens), f"{run.seconds:.2f}", f"{run.tokens_per_s:.1f}")
    console.print(table)
    vs_s1 = frugal.tokens_per_s / s1.tokens_per_s if s1.tokens_per_s else float("inf")
    vs_plain = frugal.tokens_per_s / plain.tokens_per_s if plain.tokens_per_s else float("inf")
    console.print(f"a/b = {vs_s1:.2f}  (target >= {TARGET_VS_S1})  {verdict(vs_s1, TARGET_VS_S1)}")
    console.print(
        f"a/c = {vs_plain:.2f}  (target >= {TARGET_VS_PLAIN})  {verdict(vs_plain, TARGET_VS_PLAIN)}"
    )
    forced = sum(sum(r.forced) for r in results)
    console.print(
        f"(a) mean thinking tokens {statistics.fmean(frugal.thinking_tokens):.1f}, "
        f"mean Waits {statistics.fmean(r.waits for r in results):.2f}, "
        f"forced to answer {sum(r.forced_max for r in results)}/{len(results)}, "
        f"forced tokens {forced} of {frugal.tokens}"
    )
    # (b) does not count what it appends (Wait, delimiter, prefix); (a) feeds those one per step.
    sampled_tps = (frugal.tokens - forced) / frugal.seconds if frugal.seconds else 0.0
    console.print(
        f"(a) without forced tokens: {sampled_tps:.1f} tokens/s, "
        f"a/b = {sampled_tps / s1.tokens_per_s if s1.tokens_per_s else float('inf'):.2f} "
        "(informational)"
    )
    console.print(
        f"(b) mean thinking tokens {statistics.fmean(s1.thinking_tokens):.1f}, "
        f"{s1_calls} generate calls (each re-encodes its prompt)"
    )
    single_tps = single_tokens / single_s
    bound = copy_bps / weight_bytes
    console.print(
        f"(d) batch-1 decode: {single_tokens} tokens in {single_s:.2f} s = {single_tps:.1f} "
        f"tokens/s; bound = {copy_bps / 1e9:.1f} GB/s copy / {weight_bytes / 1e6:.0f} MB "
        f"weights = {bound:.1f} tokens/s; reached {single_tps / bound:.0%} of the bound"
    )


if __name__ == "__main__":
    main()
