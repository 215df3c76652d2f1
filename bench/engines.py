"""Benchmark budget forcing on an engine: frugal's local loop against vLLM, forced and not.

One run, one evaluation sweep (GSM8K questions from ../shared/data, a thinking budget with a
minimum so the model is sent back with "Wait", greedy), through:
  (a) local: frugal's `BudgetForcingEngine` (batched, KV cache kept, continuous batching);
  (b) endpoint: vLLM driven by frugal's `EndpointEngine` (token-id continuations, prefix cache);
  (c) plain: vLLM generating the same number of tokens per question in one request each, no
      forcing (`ignore_eos`), the engine's own speed;
  (d) s1: s1's original method on vLLM: text prompts, a stop string for the end of thinking,
      and after each early stop a new request that re-sends the whole text so far plus "Wait".
All vLLM requests are in flight together (the server batches them); b, c and d run in
interleaved rounds and the best round of each counts. It prints generated tokens per second of
each and the ratios; targets b/c >= 0.85 (forcing costs at most 15% on top of the
engine) and b/d >= 1.0. vLLM is started with `frugal.vllm_server` (eager on a CPU).

Run: `.venv/bin/python bench/engines.py` (flags: --help). Keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import openai
from rich.console import Console
from rich.table import Table

from frugal.endpoint_engine import EndpointEngine
from frugal.generation import BudgetConfig, BudgetForcingEngine, GenerationResult
from frugal.models import load_model
from frugal.questions import GSM8K_FIELDS, read_questions
from frugal.vllm_server import serve_with_vllm

MODEL = "smollm2-135m-instruct"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-thinking-tokens", type=int, default=96)
    parser.add_argument("--min-thinking-tokens", type=int, default=64)
    parser.add_argument("--num-waits", type=int, default=0)
    parser.add_argument("--max-answer-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds on vLLM")
    args = parser.parse_args()
    console = Console()
    questions = [q.question for q in read_questions(DATA, GSM8K_FIELDS)[: args.questions]]
    budget = BudgetConfig(max_thinking_tokens=args.max_thinking_tokens,
                          min_thinking_tokens=args.min_thinking_tokens,
                          num_waits=args.num_waits, max_answer_tokens=args.max_answer_tokens)
    loaded = load_model(MODEL, dtype="float32")
    local_engine = BudgetForcingEngine(loaded.model, loaded.tokenizer)
    local_engine.generate(questions[:2], budget, batch_size=2)  # warm-up
    seconds: dict[str, float] = {}
    tokens: dict[str, int] = {}

    started = time.perf_counter()
    local = local_engine.generate(questions, budget, batch_size=len(questions))
    seconds["a local"], tokens["a local"] = time.perf_counter() - started, _count(local)

    with console.status("starting vLLM…"), serve_with_vllm(MODEL, max_model_len=2048) as vllm:
        pass_through = EndpointEngine(vllm, loaded.tokenizer)
        pass_through.generate(questions[:2], budget)  # warm-up (and the server's first batch)
        prompts = [local_engine.format.encode(local_engine.format.generation_prompt(q))
                   for q in questions]
        forced: list[GenerationResult] = []
        # Interleaved rounds, the best of each kept: the server warms up and the machine is
        # shared, so one pass in a fixed order would favour whichever ran last.
        for _ in range(args.rounds):
            started = time.perf_counter()
            forced = pass_through.generate(questions, budget)
            _best(seconds, tokens, "b endpoint", time.perf_counter() - started, _count(forced))
            lengths = [len(r.token_ids) for r in forced]
            started = time.perf_counter()
            plain = asyncio.run(_plain(vllm.base_url, vllm.model, prompts, lengths))
            _best(seconds, tokens, "c plain", time.perf_counter() - started, plain)
            started = time.perf_counter()
            s1 = asyncio.run(_s1(vllm.base_url, vllm.model, local_engine, questions, budget))
            _best(seconds, tokens, "d s1", time.perf_counter() - started, s1)

    table = Table("method", "tokens", "seconds", "tokens/s", title=f"{len(questions)} GSM8K "
                  f"questions, thinking {budget.min_thinking_tokens}-"
                  f"{budget.max_thinking_tokens}, {budget.num_waits} Waits, answer "
                  f"{budget.max_answer_tokens}, greedy")
    rate = {name: tokens[name] / seconds[name] for name in seconds}
    for name in seconds:
        table.add_row(name, f"{tokens[name]:,}", f"{seconds[name]:.1f}", f"{rate[name]:.1f}")
    console.print(table)
    b_c = rate["b endpoint"] / rate["c plain"]
    b_d = rate["b endpoint"] / rate["d s1"]
    console.print(f"b/c = {b_c:.2f} (target >= 0.85: {'PASS' if b_c >= 0.85 else 'FAIL'}); "
                  f"b/d = {b_d:.2f} (target >= 1.0: {'PASS' if b_d >= 1.0 else 'FAIL'}); "
                  f"b/a = {rate['b endpoint'] / rate['a local']:.2f}")
    # Every Wait is one more request on the endpoint (and in s1's loop): the round trips are
    # what forcing costs over plain generation.
    waits = sum(r.waits for r in forced) / len(forced)
    console.print(f"Waits per question: {waits:.1f} (each one request more for b and d)")
    same = sum(x.token_ids == y.token_ids for x, y in zip(forced, local, strict=True))
    console.print(f"endpoint and local engine wrote the same tokens for {same}/{len(local)}")


def _best(seconds: dict[str, float], tokens: dict[str, int], name: str, took: float,
          count: int) -> None:
    """Keep the faster round (by tokens per second) of method `name`."""
    if name not in seconds or count / took > tokens[name] / seconds[name]:
        seconds[name], tokens[name] = took, count


def _count(results: list[GenerationResult]) -> int:
    return sum(len(r.token_ids) for r in results)


async def _plain(base_url: str, model: str, prompts: list[list[int]],
                 lengths: list[int]) -> int:
    """Each question's forced token count as one plain request: the engine alone."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY") as client:
        replies = await asyncio.gather(*(
            client.completions.create(
                model=model, prompt=prompt, max_tokens=n, temperature=0,
                extra_body={"ignore_eos": True, "return_token_ids": True},
            ) for prompt, n in zip(prompts, lengths, strict=True)
        ))
    return sum(len((r.choices[0].model_extra or {})["token_ids"]) for r in replies)


async def _s1(base_url: str, model: str, engine: BudgetForcingEngine, questions: list[str],
              budget: BudgetConfig) -> int:
    """s1's own loop: text in, text out, the whole text re-sent after every Wait."""
    fmt = engine.format
    stops = [fmt.think_end_stop, fmt.end_of_turn]
    async with openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY") as client:

        async def complete(text: str, max_tokens: int, stop: list[str]) -> tuple[str, int]:
            reply = await client.completions.create(
                model=model, prompt=text, max_tokens=max_tokens, temperature=0, stop=stop,
                extra_body={"skip_special_tokens": False, "return_token_ids": True},
            )
            choice = reply.choices[0]
            return choice.text, len((choice.model_extra or {})["token_ids"])

        async def one(question: str) -> int:
            text = fmt.generation_prompt(question)
            thinking = generated = 0
            while thinking < budget.max_thinking_tokens:
                piece, n = await complete(text, budget.max_thinking_tokens - thinking, stops)
                text, thinking, generated = text + piece, thinking + n, generated + n
                if thinking >= budget.min_thinking_tokens:  # the cap, or a stop it may keep
                    break
                text += budget.wait_text  # s1: ignore the end of thinking, append "Wait"
            text += fmt.think_end + budget.answer_prefix
            piece, n = await complete(text, budget.max_answer_tokens, [fmt.end_of_turn])
            return generated + n

        counts = await asyncio.gather(*(one(q) for q in questions))
    return sum(counts)


if __name__ == "__main__":
    main()
