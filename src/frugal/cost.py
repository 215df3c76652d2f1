"""`frugal cost RECIPE`: what a recipe will cost before it runs.

Counts come from the recipe's own data (the pool is built in memory; program and dataset traces
are written and tokenized for a sample), speeds are measured on this machine in a few seconds
(a LoRA training step and a batched decode with the recipe's model), and prices are the
recipe's. API teachers are priced at their worst case (every call using `max_tokens`), which
is also what `--max-cost` reserves per call; local teachers (`hf`, `self`) at the machine time
of their worst case (every answer thinking its whole budget, `samples` answers per question
for `self`), decoded at the speed measured with the teacher's model (for a chat-style teacher
on llama.cpp, on the server it will run on, every slot busy).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from frugal.break_even import BreakEven, Offer, reference_offer
from frugal.recipes import Recipe

SAMPLE = 64  # questions whose traces are written and tokenized to estimate lengths
LOCAL_TEACHERS = ("hf", "self")


@dataclass
class CostEstimate:
    questions: int
    teacher_input_tokens: int
    teacher_output_tokens: int
    teacher_dollars: float
    teacher_seconds: float  # local teachers' decoding; 0 for the others
    train_examples: int
    train_tokens: int
    train_tokens_per_second: float
    train_seconds: float
    eval_generations: int
    eval_tokens: int
    decode_tokens_per_second: float
    eval_seconds: float
    machine_price_per_hour: float
    compute_dollars: float
    total_dollars: float
    teacher_gives: str = ""  # what its traces' thinking will be, as far as can be told
    # Break-even against the recipe's reference API, before any accuracy is known: a request
    # is a prompt of the pool's mean length answered with a trace of the teacher's mean length.
    prompt_tokens_per_request: float = 0.0
    output_tokens_per_request: float = 0.0
    one_off_dollars: float = 0.0  # teacher and training
    specialist_dollars_per_request: float = 0.0
    reference_dollars_per_request: float = 0.0
    break_even_requests: float | None = None  # None: never

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(recipe: Recipe) -> CostEstimate:
    from frugal.evaluate import later_waits, points_of
    from frugal.evaluation.benchmarks import load_questions, resolve
    from frugal.models import load_model
    from frugal.pool import load_pool_questions
    from frugal.reasoning_format import ReasoningFormat
    from frugal.teachers.announce import teacher_gives

    questions = load_pool_questions(recipe.pool)
    if recipe.pool.limit:
        questions = questions[: recipe.pool.limit]
    if recipe.distill.limit:
        questions = questions[: recipe.distill.limit]
    loaded = load_model(recipe.model)
    fmt = ReasoningFormat.for_tokenizer(loaded.tokenizer)
    sample = questions[:SAMPLE]
    prompt_tokens = [len(fmt.encode(fmt.generation_prompt(q.question))) for q in sample]
    trace_tokens = _trace_tokens(recipe, sample, fmt)

    input_tokens = round(statistics.fmean(prompt_tokens) * len(questions)) if sample else 0
    output_tokens = 0
    teacher_dollars = teacher_seconds = 0.0
    distill = recipe.distill
    if distill.teacher == "openai" and distill.openai is not None:
        output_tokens = distill.openai.max_tokens * len(questions)
        teacher_dollars = distill.prices.cost(input_tokens, output_tokens)
    elif distill.teacher in LOCAL_TEACHERS:
        answers = len(questions) * (distill.local.samples if distill.teacher == "self" else 1)
        output_tokens = answers * _local_answer_tokens(recipe)
        if distill.local.style == "chat" and distill.local.engine == "llama.cpp":
            teacher_rate = _served_chat_speed(recipe)
        else:
            teacher_loaded = loaded if distill.local.model == recipe.model else load_model(
                distill.local.model)
            teacher_rate = _decode_speed(teacher_loaded, None, distill.local.batch_size)
        teacher_seconds = output_tokens / teacher_rate
        teacher_price = distill.machine_price_per_hour or recipe.machine_price_per_hour
        teacher_dollars = teacher_seconds / 3600 * teacher_price

    examples = min(recipe.curate.target, len(questions))
    per_example = statistics.fmean(p + t for p, t in zip(prompt_tokens, trace_tokens,
                                                          strict=True)) if sample else 0
    train_tokens = round(per_example * examples * recipe.train.epochs)
    train_rate = _train_speed(loaded, fmt, round(per_example) or 128)
    spec = resolve(recipe.eval.benchmark)
    eval_questions = len(load_questions(spec))
    points = len(points_of(recipe.eval)) + len(later_waits(recipe.eval))
    if recipe.eval.base:
        points += 1 if recipe.eval.base_at == "largest-budget" else points
    generations = eval_questions * points * recipe.eval.samples
    # Worst case: every generation thinks its whole budget and writes its whole answer.
    per_generation = statistics.fmean(recipe.eval.max_thinking_tokens) + \
        recipe.eval.max_answer_tokens
    eval_tokens = round(generations * per_generation)
    decode_rate = _decode_speed(loaded, fmt, recipe.eval.batch_size)
    train_seconds = train_tokens / train_rate
    eval_seconds = eval_tokens / decode_rate
    price = recipe.machine_price_per_hour
    compute = (train_seconds + eval_seconds) / 3600 * price
    mean_prompt = statistics.fmean(prompt_tokens) if sample else 0.0
    mean_output = statistics.fmean(trace_tokens) if sample else 0.0
    one_off = teacher_dollars + train_seconds / 3600 * price
    per_request = mean_output / decode_rate / 3600 * price
    found = CostEstimate(
        questions=len(questions), teacher_input_tokens=input_tokens,
        teacher_output_tokens=output_tokens, teacher_dollars=teacher_dollars,
        teacher_seconds=teacher_seconds, train_examples=examples, train_tokens=train_tokens,
        train_tokens_per_second=train_rate,
        train_seconds=train_seconds, eval_generations=generations, eval_tokens=eval_tokens,
        decode_tokens_per_second=decode_rate, eval_seconds=eval_seconds,
        machine_price_per_hour=price, compute_dollars=compute,
        total_dollars=teacher_dollars + compute,
        prompt_tokens_per_request=mean_prompt, output_tokens_per_request=mean_output,
        one_off_dollars=one_off, specialist_dollars_per_request=per_request,
    )
    found.teacher_gives = teacher_gives(recipe.distill, Path("runs") / recipe.name)
    comparison = break_even_of(found, recipe)
    reference = comparison.alternatives[0]
    found.reference_dollars_per_request = reference.per_request
    found.break_even_requests = comparison.requests_to_pay_off(reference)
    return found


def break_even_of(found: CostEstimate, recipe: Recipe) -> BreakEven:
    """The estimate's break-even, as `frugal.break_even` draws it (accuracy still unknown)."""
    specialist = Offer("specialist", found.one_off_dollars, found.specialist_dollars_per_request,
                       1.0)
    reference = reference_offer(recipe.reference_api, found.prompt_tokens_per_request,
                                found.output_tokens_per_request)
    return BreakEven(specialist, [reference], found.prompt_tokens_per_request,
                     found.output_tokens_per_request)


def _trace_tokens(recipe: Recipe, sample: list[Any], fmt: Any) -> list[int]:
    """Tokens of each sample question's completion: written by the program or dataset teacher,
    else half the API teacher's output cap (a trace rarely fills it)."""
    from frugal.tasks import rebuild

    lengths = []
    for question in sample:
        solution = question.solution
        if recipe.distill.teacher == "program" and question.meta:
            solution = rebuild(question.meta).solution
        if solution and recipe.distill.teacher in ("program", "dataset"):
            example = fmt.format_example(question.question, solution,
                                         f"Final Answer: {question.answer}")
            lengths.append(len(fmt.encode(example.completion)))
        elif recipe.distill.openai is not None:
            lengths.append(recipe.distill.openai.max_tokens // 2)
        else:
            lengths.append(_local_answer_tokens(recipe))
    return lengths


def _local_answer_tokens(recipe: Recipe) -> int:
    """The most a local teacher writes per answer: its thinking budget and its answer cap."""
    budget = recipe.distill.local.budget
    return budget.max_thinking_tokens + budget.max_answer_tokens


def _train_speed(loaded: Any, fmt: Any, length: int) -> float:
    """Tokens per second of LoRA forward+backward passes on one example of `length` tokens."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(loaded.model, LoraConfig(r=16, target_modules="all-linear"))
    model.train()
    ids = torch.randint(0, loaded.tokenizer.vocab_size, (1, length))
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        rates.append(length / (time.perf_counter() - started))
    model.unload()  # give the base model back untouched for the decode measurement
    loaded.model.eval()
    return max(rates[1:])  # the first pass pays one-time allocations


def _served_chat_speed(recipe: Recipe) -> float:
    """Tokens per second of a chat-style teacher on the llama.cpp server it will run on, with
    every slot busy (as its distillation keeps them)."""
    from frugal.engine_servers import PROMPT_TOKENS_BOUND, context_length, managed_endpoint
    from frugal.teachers.served_chat import measure_tokens_per_second

    local = recipe.distill.local
    with managed_endpoint("llama.cpp", local.model, {}, dtype="auto", llama_cpp=local.llama_cpp,
                          context_tokens=context_length(
                              PROMPT_TOKENS_BOUND, local.budget.max_thinking_tokens,
                              local.budget.max_answer_tokens)) as endpoint:
        return measure_tokens_per_second(endpoint, endpoint.concurrency)


def _decode_speed(loaded: Any, fmt: Any, batch_size: int) -> float:
    from frugal.generation import BudgetConfig, BudgetForcingEngine

    engine = BudgetForcingEngine(loaded.model, loaded.tokenizer, fmt)  # fmt None: the model's
    budget = BudgetConfig(max_thinking_tokens=24, max_answer_tokens=8)
    prompts = [f"What is {n} + {n + 7}?" for n in range(batch_size)]
    engine.generate(prompts[:2], budget.model_copy(update={"max_thinking_tokens": 4}),
                    batch_size=2)  # warm-up: kernels are picked on the first call
    started = time.perf_counter()
    results = engine.generate(prompts, budget, batch_size=batch_size)
    tokens = sum(len(r.token_ids) for r in results)
    return tokens / (time.perf_counter() - started)
