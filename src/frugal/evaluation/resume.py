"""Wait points that start where the no-Wait pass left off, instead of from the question.

With greedy decoding, a row run with `num_waits` Waits writes exactly what the same row wrote
without them up to the first end of thinking it would keep: that is where the first Wait goes.
So the Wait points of an evaluation need not generate that prefix again. For each question the
no-Wait row at the same budget is either the whole answer already (its thinking hit the cap,
or it already had as many Waits as asked, from the minimum), or it is resumed: the prompt, its
thinking tokens and the Wait become the prompt of a row whose budget is what is left of the
original one. The merged row has the same tokens, sections, counts and finish as a row run from
the question, as the engines' own continuations do (an endpoint engine re-sends the prompt and
every token so far after each Wait). On the quickstart a Wait row then decodes about a
quarter of its tokens (what follows the Wait); the rest is one batched prefill.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from frugal.generation import GenerationResult, Section
from frugal.reasoning_format import ReasoningFormat
from frugal.settings.budget import BudgetConfig


@dataclass(frozen=True)
class Resumption:
    """How a Wait row continues a no-Wait row: the prompt to run and the budget left."""

    earlier: GenerationResult
    prompt_ids: list[int]
    budget: BudgetConfig
    thinking_ids: list[int]  # the earlier row's thinking, then the Wait
    thinking_forced: list[bool]


def thinking_ended_by_model(result: GenerationResult) -> bool:
    """Whether the row's thinking ended because an end (its marker or its end of turn) was
    kept, rather than by the cap or a row that stopped inside its thinking."""
    return not result.forced_max and any(s != Section.THINKING for s in result.sections)


def same_as_earlier(earlier: GenerationResult, budget: BudgetConfig) -> bool:
    """Whether a row with `budget` writes exactly what `earlier` (the same row, same budget
    but no Waits) wrote: no end of thinking was kept, or it already had the Waits asked for."""
    return not thinking_ended_by_model(earlier) or earlier.waits >= budget.num_waits


def resumption(
    earlier: GenerationResult, prompt_ids: list[int], budget: BudgetConfig, fmt: ReasoningFormat
) -> Resumption | None:
    """The row that continues `earlier` with its first refused end, or None when it cannot
    (sampling draws differ from a fresh row; a Wait that the cap would cut short)."""
    if budget.temperature > 0 or not thinking_ended_by_model(earlier):
        return None
    thinking = 0
    while thinking < len(earlier.sections) and earlier.sections[thinking] == Section.THINKING:
        thinking += 1
    wait_ids = fmt.encode(budget.wait_text)
    used = thinking + len(wait_ids)
    if thinking != earlier.thinking_tokens or used >= budget.max_thinking_tokens:
        return None
    thinking_ids = earlier.token_ids[:thinking] + wait_ids
    left = budget.model_copy(update={
        "max_thinking_tokens": budget.max_thinking_tokens - used,
        "min_thinking_tokens": max(0, budget.min_thinking_tokens - used),
        "num_waits": max(0, budget.num_waits - earlier.waits - 1),
    })
    return Resumption(earlier, prompt_ids + thinking_ids, left, thinking_ids,
                      earlier.forced[:thinking] + [True] * len(wait_ids))


def merged(resumed: Resumption, later: GenerationResult, fmt: ReasoningFormat
           ) -> GenerationResult:
    """The whole row: the earlier thinking and the Wait, then what the resumed row wrote."""
    token_ids = resumed.thinking_ids + later.token_ids
    text = fmt.tokenizer.decode(token_ids)
    parsed = fmt.parse(text)
    return replace(
        later,
        index=resumed.earlier.index,
        prompt=resumed.earlier.prompt,
        text=text,
        thinking=parsed.thinking,
        answer=parsed.answer,
        thinking_tokens=len(resumed.thinking_ids) + later.thinking_tokens,
        waits=resumed.earlier.waits + 1 + later.waits,
        token_ids=token_ids,
        forced=resumed.thinking_forced + later.forced,
        sections=[str(Section.THINKING)] * len(resumed.thinking_ids) + later.sections,
    )
