"""Budget-forced generation on tiny random-weight models with real tokenizers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from frugal.generation import BudgetConfig, BudgetForcingEngine, Job, ListSource

from .conftest import GEMMA3, tiny_model

QUESTIONS = [
    "What is 2 + 3?",
    "Natalia sold clips to 48 of her friends in April. How many clips did she sell?",
    "A train travels 60 km in 1.5 hours. What is its average speed?",
    "Name a prime number larger than 10.",
    "If x + 4 = 10, what is x?",
]


class WritesText(LogitsProcessor):
    """Makes the model write `target` over and over, like a model that keeps trying to stop;
    with `only_if`, only in rows whose prompt contains that token id."""

    def __init__(self, target: list[int], only_if: int | None = None) -> None:
        self.target = target
        self.only_if = only_if

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        for row, ids in enumerate(input_ids.tolist()):
            if self.only_if is not None and self.only_if not in ids:
                continue
            done = next(
                (k for k in range(len(self.target) - 1, 0, -1) if ids[-k:] == self.target[:k]), 0
            )
            scores[row, self.target[done]] += 1e4
        return scores


def stops_at_once(engine: BudgetForcingEngine) -> LogitsProcessorList:
    return LogitsProcessorList([WritesText(engine.format.encode(engine.format.think_end_stop))])


@pytest.fixture(scope="module")
def engine(tiny_smollm2: Any, smollm2_tokenizer: Any) -> BudgetForcingEngine:
    return BudgetForcingEngine(tiny_smollm2, smollm2_tokenizer)


@pytest.mark.parametrize("maximum", [1, 5, 17])
def test_thinking_never_exceeds_the_maximum(engine: BudgetForcingEngine, maximum: int) -> None:
    budget = BudgetConfig(max_thinking_tokens=maximum, max_answer_tokens=4)
    for result in engine.generate(QUESTIONS, budget, batch_size=3):
        assert result.thinking_tokens <= maximum
        assert result.sections.count("thinking") == result.thinking_tokens
        assert result.answer_tokens <= 4
        if result.forced_max:  # a random model rarely stops: it thinks to the cap
            assert result.thinking_tokens == maximum


def test_forced_end_is_the_delimiter_then_the_answer_prefix(engine: BudgetForcingEngine) -> None:
    budget = BudgetConfig(max_thinking_tokens=6, max_answer_tokens=3)
    result = engine.generate(QUESTIONS[:1], budget)[0]
    fmt = engine.format
    assert result.forced_max
    expected = fmt.encode(fmt.think_end) + fmt.encode("Final Answer:")
    assert result.forced_token_ids == expected
    assert result.token_ids[6 : 6 + len(expected)] == expected
    assert result.answer.startswith("Final Answer:")
    assert result.text.startswith(engine.tokenizer.decode(result.token_ids[:6]))


def test_minimum_replaces_early_ends_with_wait(engine: BudgetForcingEngine) -> None:
    budget = BudgetConfig(max_thinking_tokens=40, min_thinking_tokens=12, max_answer_tokens=4)
    result = engine.generate(QUESTIONS[:2], budget, logits_processor=stops_at_once(engine))[0]
    assert result.thinking_tokens >= 12
    assert not result.forced_max  # it ended itself once the minimum was reached
    wait_ids = engine.format.encode("Wait")
    assert result.waits == 12 // len(wait_ids) + (12 % len(wait_ids) > 0)
    assert result.thinking.replace("Wait", "") == ""


@pytest.mark.parametrize("num_waits", [0, 1, 3])
def test_exactly_num_waits_are_inserted(engine: BudgetForcingEngine, num_waits: int) -> None:
    budget = BudgetConfig(max_thinking_tokens=64, num_waits=num_waits, max_answer_tokens=4)
    results = engine.generate(QUESTIONS, budget, logits_processor=stops_at_once(engine))
    wait_ids = engine.format.encode("Wait")
    for result in results:
        assert result.waits == num_waits
        assert result.thinking.count("Wait") == num_waits
        assert result.forced_token_ids[: num_waits * len(wait_ids)] == wait_ids * num_waits
        assert result.thinking_tokens == num_waits * len(wait_ids)


def test_answer_cap_holds_even_for_the_forced_prefix(engine: BudgetForcingEngine) -> None:
    budget = BudgetConfig(max_thinking_tokens=3, max_answer_tokens=2)
    result = engine.generate(QUESTIONS[:1], budget)[0]
    assert result.answer_tokens == 2 and result.finish_reason == "max_answer_tokens"
    assert result.forced_max and all(result.forced[3:])


def test_custom_wait_text(engine: BudgetForcingEngine) -> None:
    budget = BudgetConfig(num_waits=2, wait_text=" Hmm, let me check.", max_answer_tokens=2)
    result = engine.generate(QUESTIONS[:1], budget, logits_processor=stops_at_once(engine))[0]
    assert result.thinking.count("Hmm, let me check.") == 2


def test_greedy_rows_do_not_depend_on_their_batch(engine: BudgetForcingEngine) -> None:
    budget = BudgetConfig(max_thinking_tokens=20, max_answer_tokens=6)
    together = engine.generate(QUESTIONS, budget, batch_size=5)
    alone = [engine.generate([q], budget, batch_size=1)[0] for q in QUESTIONS]
    other_mix = engine.generate(QUESTIONS[::-1], budget, batch_size=2)[::-1]
    for a, b, c in zip(together, alone, other_mix, strict=True):
        assert a.token_ids == b.token_ids == c.token_ids


def test_continuous_batching_matches_one_row_at_a_time(engine: BudgetForcingEngine) -> None:
    """Rows end at different times, so finished slots are refilled while others decode; a long
    newcomer also widens the running cache. Every row still gets its batch-of-one tokens."""
    questions = [*QUESTIONS, "Explain: " + "a long question about trains and clips " * 40]
    trigger = engine.format.encode(" prime")[0]
    marker = engine.format.encode(engine.format.think_end_stop)
    processor = LogitsProcessorList([WritesText(marker, only_if=trigger)])
    questions = [q.replace("Name a", "Name a prime") for q in questions] + ["Is 7 prime?"]
    budget = BudgetConfig(max_thinking_tokens=24, num_waits=1, max_answer_tokens=5)
    together = engine.generate(questions, budget, batch_size=2, logits_processor=processor)
    alone = [engine.generate([q], budget, logits_processor=processor)[0] for q in questions]
    assert len({r.thinking_tokens for r in together}) > 1  # rows really ended apart
    for a, b in zip(together, alone, strict=True):
        assert a.token_ids == b.token_ids
        assert a.prompt == b.prompt


def test_sampled_rows_are_seeded_per_row(engine: BudgetForcingEngine) -> None:
    budget = BudgetConfig(max_thinking_tokens=12, max_answer_tokens=4, temperature=1.0, top_p=0.9)
    first = engine.generate(QUESTIONS[:3], budget, batch_size=3)
    again = engine.generate(QUESTIONS[:3], budget, batch_size=1)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    reseeded = engine.generate(QUESTIONS[:3], budget.model_copy(update={"seed": 1}))
    assert [r.token_ids for r in first] != [r.token_ids for r in reseeded]


def test_prompt_is_encoded_once_and_the_cache_is_kept(engine: BudgetForcingEngine) -> None:
    widths: list[int] = []
    hook = engine.model.register_forward_pre_hook(
        lambda _module, _args, kwargs: widths.append(kwargs["input_ids"].shape[1]),
        with_kwargs=True,
    )
    try:
        budget = BudgetConfig(max_thinking_tokens=30, num_waits=2, max_answer_tokens=4)
        engine.generate(QUESTIONS[:2], budget, logits_processor=stops_at_once(engine))
    finally:
        hook.remove()
    assert widths[0] > 1 and set(widths[1:]) == {1}


def test_native_think_tokens(think_tokenizer: Any) -> None:
    model = tiny_model()
    model.resize_token_embeddings(len(think_tokenizer))
    engine = BudgetForcingEngine(model, think_tokenizer)
    budget = BudgetConfig(max_thinking_tokens=32, num_waits=2, max_answer_tokens=3)
    result = engine.generate(QUESTIONS[:1], budget, logits_processor=stops_at_once(engine))[0]
    assert result.waits == 2
    end_think = think_tokenizer.convert_tokens_to_ids("</think>")
    # The model's own </think> (the third try) is kept and not marked as forced.
    position = result.token_ids.index(end_think)
    assert not result.forced[position] and result.sections[position] == "delimiter"


@pytest.mark.integration
def test_plain_text_marker_is_matched_as_a_stop_string(gemma3_tokenizer: Any) -> None:
    """gemma's `</thinking>` spans several tokens: refusing it drops them from the cache."""
    engine = BudgetForcingEngine(tiny_model(GEMMA3), gemma3_tokenizer)
    budget = BudgetConfig(max_thinking_tokens=48, num_waits=2, max_answer_tokens=3)
    result = engine.generate(QUESTIONS[:2], budget, logits_processor=stops_at_once(engine))[0]
    assert result.waits == 2
    assert result.thinking.count("</thinking>") == 0
    assert result.thinking.strip() in ("WaitWait", "Wait Wait")
    assert not result.forced_max
    assert "thinking" not in result.sections[result.sections.index("delimiter") :]


def test_budget_validation() -> None:
    with pytest.raises(ValueError, match="min_thinking_tokens"):
        BudgetConfig(max_thinking_tokens=10, min_thinking_tokens=20)
    with pytest.raises(ValueError):
        BudgetConfig(max_thinking_tokens=0)



def test_rows_can_carry_their_own_seeds(engine: BudgetForcingEngine) -> None:
    budget = BudgetConfig(max_thinking_tokens=8, max_answer_tokens=2, temperature=1.0)
    both = engine.generate(QUESTIONS[:2], budget, seeds=[11, 22])
    # The same question with the same seed samples the same tokens at another position.
    moved = engine.generate([QUESTIONS[1], QUESTIONS[0]], budget, seeds=[22, 11])
    assert both[0].token_ids == moved[1].token_ids and both[1].token_ids == moved[0].token_ids
    assert engine.generate(QUESTIONS[:1], budget, seeds=[12])[0].token_ids != both[0].token_ids


class LateSource:
    """Hands out one job at first, the rest only after the batch has decoded (and compacted)
    for a while, the way requests reach a server."""

    def __init__(self, jobs: list[Job], after_steps: int) -> None:
        self.first, self.rest, self.after, self.calls = jobs[:1], jobs[1:], after_steps, 0

    def take(self, n: int, *, idle: bool) -> list[Job]:
        self.calls += 1
        if self.first:
            taken, self.first = self.first, []
            return taken
        if self.calls < self.after:
            return []
        taken, self.rest = self.rest[:n], self.rest[n:]
        return taken

    def waiting(self) -> int:
        return len(self.first) + (len(self.rest) if self.calls >= self.after else 0)

    def exhausted(self) -> bool:
        return not self.first and not self.rest


def test_jobs_carry_their_own_budgets(engine: BudgetForcingEngine) -> None:
    jobs = [
        Job(engine.format.generation_prompt(q), BudgetConfig(max_thinking_tokens=3 + 2 * i,
                                                             max_answer_tokens=2), index=i)
        for i, q in enumerate(QUESTIONS)
    ]
    done: list[Any] = []
    engine.run_jobs(ListSource(jobs, engine.format.encode), 4, done.append)
    assert sorted((r.index, r.thinking_tokens) for r in done) == [(i, 3 + 2 * i) for i in range(5)]


def test_late_jobs_join_a_compacted_batch(engine: BudgetForcingEngine) -> None:
    budget = BudgetConfig(max_thinking_tokens=12, max_answer_tokens=4)
    jobs = [Job(engine.format.generation_prompt(q), budget, index=i)
            for i, q in enumerate(QUESTIONS)]
    done: list[Any] = []
    engine.run_jobs(LateSource(jobs, after_steps=6), 4, done.append)
    alone = engine.generate(QUESTIONS, budget, batch_size=1)
    assert sorted(r.index for r in done) == list(range(5))
    for result in done:
        assert result.token_ids == alone[result.index].token_ids


def test_a_cancelled_row_ends_at_its_next_step(engine: BudgetForcingEngine) -> None:
    stop = {"now": False}
    seen: list[int] = []

    def on_token(token_id: int, section: Any, forced: bool) -> None:
        seen.append(token_id)
        stop["now"] = len(seen) >= 3

    job = Job(engine.format.generation_prompt(QUESTIONS[0]), BudgetConfig(max_thinking_tokens=50),
              on_token=on_token, cancelled=lambda: stop["now"])
    done: list[Any] = []
    engine.run_jobs(ListSource([job], engine.format.encode), 2, done.append)
    assert done[0].finish_reason == "cancelled" and len(done[0].token_ids) == 3
