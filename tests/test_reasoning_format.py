"""The reasoning format on real tokenizers: SmolLM2 (ChatML), gemma-3 (plain), native think."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from frugal.reasoning_format import FormatKind, ReasoningFormat

QUESTION = "What is 12 times 7?"
THINKING = "12 times 7 is 84."
ANSWER = "Final Answer: 84"


def test_smollm2_uses_the_s1_chatml_layout(smollm2_tokenizer: Any) -> None:
    fmt = ReasoningFormat.for_tokenizer(smollm2_tokenizer)
    assert fmt.kind == FormatKind.CHATML_S1
    example = fmt.format_example(QUESTION, THINKING, ANSWER)
    assert example.prompt.endswith(
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n"
    )
    assert example.completion == f"{THINKING}<|im_start|>answer\n{ANSWER}<|im_end|>"
    assert example.text[example.completion_start :] == example.completion
    # The stop marker is one special token, so the engine can catch it before feeding it.
    assert fmt.stop_token_id == smollm2_tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>") in fmt.end_of_turn_ids


def test_generation_prompt_opens_the_thinking_section(smollm2_tokenizer: Any) -> None:
    fmt = ReasoningFormat.for_tokenizer(smollm2_tokenizer)
    prompt = fmt.generation_prompt(QUESTION, system="Be brief.")
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert prompt.endswith(fmt.think_start)
    assert prompt == fmt.format_example(QUESTION, THINKING, ANSWER, "Be brief.").prompt


def test_native_think_tokens_win(think_tokenizer: Any) -> None:
    fmt = ReasoningFormat.for_tokenizer(think_tokenizer)
    assert fmt.kind == FormatKind.NATIVE
    example = fmt.format_example(QUESTION, THINKING, ANSWER)
    assert example.prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert example.completion == f"{THINKING}\n</think>\n\n{ANSWER}<|im_end|>"
    assert fmt.stop_token_id == think_tokenizer.convert_tokens_to_ids("</think>")
    assert len(fmt.encode("</think>")) == 1


@pytest.mark.integration
def test_gemma3_uses_plain_text_delimiters(gemma3_tokenizer: Any) -> None:
    fmt = ReasoningFormat.for_tokenizer(gemma3_tokenizer)
    assert fmt.kind == FormatKind.PLAIN
    example = fmt.format_example(QUESTION, THINKING, ANSWER)
    assert example.prompt == (
        f"<bos><start_of_turn>user\n{QUESTION}<end_of_turn>\n<start_of_turn>model\n<thinking>\n"
    )
    assert example.completion == f"{THINKING}\n</thinking>\n{ANSWER}<end_of_turn>"
    # The marker is ordinary text, several tokens long: the engine matches it as a stop string.
    assert fmt.stop_token_id is None
    assert len(fmt.encode(fmt.think_end_stop)) > 1
    assert gemma3_tokenizer.convert_tokens_to_ids("<end_of_turn>") in fmt.end_of_turn_ids
    assert fmt.encode(example.prompt)[0] == gemma3_tokenizer.bos_token_id
    assert fmt.encode(example.prompt).count(gemma3_tokenizer.bos_token_id) == 1


@pytest.mark.parametrize("fixture", ["smollm2_tokenizer", "think_tokenizer", "gemma3_tokenizer"])
def test_parse_inverts_format(fixture: str, request: pytest.FixtureRequest) -> None:
    fmt = ReasoningFormat.for_tokenizer(request.getfixturevalue(fixture))
    example = fmt.format_example(QUESTION, THINKING, ANSWER)
    parsed = fmt.parse(example.completion)
    assert (parsed.thinking, parsed.answer, parsed.finished_thinking) == (THINKING, ANSWER, True)
    # Generated text that still carries the opening marker parses the same.
    assert fmt.parse(fmt.think_start + example.completion).thinking == THINKING


def test_parse_unfinished_thinking(smollm2_tokenizer: Any) -> None:
    fmt = ReasoningFormat.for_tokenizer(smollm2_tokenizer)
    parsed = fmt.parse("Let me add 2 and 3")
    assert parsed == type(parsed)("Let me add 2 and 3", "", False)


def test_plain_fallback_without_chat_template(smollm2_tokenizer: Any) -> None:
    import copy

    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.chat_template = None
    fmt = ReasoningFormat.for_tokenizer(tokenizer)
    assert fmt.kind == FormatKind.PLAIN
    assert fmt.generation_prompt(QUESTION).endswith(f"User: {QUESTION}\nAssistant: <thinking>\n")


def test_training_tokens_split_at_the_completion(smollm2_tokenizer: Any) -> None:
    """Prompt and completion tokenised apart give the same ids as the whole text."""
    fmt = ReasoningFormat.for_tokenizer(smollm2_tokenizer)
    example = fmt.format_example(QUESTION, THINKING, ANSWER)
    whole = fmt.encode(example.text)
    prompt_ids = fmt.encode(example.prompt)
    assert whole[: len(prompt_ids)] == prompt_ids
    assert whole[len(prompt_ids) :] == fmt.encode(example.completion)


def test_the_token_ids_are_looked_up_once_per_format(smollm2_tokenizer: Any) -> None:
    # A server asks for them on every request; the tokenizer's get_vocab() builds a dict of
    # the whole vocabulary each time (it was 45% of frugal serve's CPU under 16 clients).
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    calls = []
    whole_vocabulary = tokenizer.get_vocab
    tokenizer.get_vocab = lambda: calls.append(1) or whole_vocabulary()
    fmt = ReasoningFormat.for_tokenizer(tokenizer)
    looked_up = len(calls)
    for _ in range(100):
        assert fmt.stop_token_id == smollm2_tokenizer.convert_tokens_to_ids("<|im_start|>")
        assert smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>") in fmt.end_of_turn_ids
    assert len(calls) - looked_up <= 2
