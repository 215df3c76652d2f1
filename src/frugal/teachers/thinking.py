"""Where a teacher's reply keeps its reasoning, and how it becomes a trace's thinking and answer.

Chat endpoints put a model's reasoning in one of four places:

- `field`: a reasoning field beside `content` (`reasoning_content`: DeepSeek, vLLM with a
  reasoning parser; `reasoning`: newer vLLM, OpenRouter);
- `tags`: a `<think>...</think>` block at the start of `content` (servers without a reasoning
  parser); a `</think>` with no opening tag also counts, because chat templates such as Qwen3's
  and DeepSeek-R1's put the opening `<think>` in the prompt, not in the output;
- `content`: no reasoning channel at all: the chain of thought is written in `content` before the
  final answer (every instruct model behind vLLM, llama.cpp or Ollama, small hosted chat models).
  The teachers' prompt asks for a `Final Answer:` line; the text before the last final-answer
  line (that, or a line opening with "The answer is", "So, the answer is", ...) or the last
  `Final Answer:` mark inside a line, whichever is later, is the thinking, the rest the answer.
  Without either, the line holding the last `\\boxed{}` starts the answer;
- `hidden`: the provider bills reasoning tokens but returns no reasoning text (OpenAI's reasoning
  models): nothing of the reasoning can become a trace.

`split_reply` applies the `thinking_source` setting: `auto` picks, per reply, the first of
field, tags and content that is there; the other values use only the place they name. The split
is made again from the stored reply whenever traces are derived, so changing the setting never
pays for a call twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from frugal.settings.teachers import ThinkingSource

# What a reply turned out to hold: one of the places above, or "none" (no reasoning found:
# the whole text is the answer) or "hidden" (billed reasoning, no text).
FOUND_NONE, FOUND_HIDDEN = "none", "hidden"

REASONING_FIELDS = ("reasoning_content", "reasoning")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
# A line that gives the answer: "Final Answer: 42", "**Final Answer:** 42", "### Final answer",
# and the way chat models close without being told to: "The answer is 5.", "So, the answer is
# 13.", "Therefore, the final answer is \\(\\boxed{116}\\)." Only at the start of a line, so
# "the answer is computed below" inside a paragraph of reasoning does not end it.
_FINAL_ANSWER_LINE = re.compile(
    r"^[\s#>*_`-]*(?:(?:so|thus|therefore|hence)\s*,?\s*)?(?:the\s+)?"
    r"(?:final\s+answer\b|answer\s*(?:is\b|:))",
    re.IGNORECASE | re.MULTILINE)
# The marker the teachers' prompt asks for, where a model writes it inside its last sentence
# ("Therefore, 40 - 80 - 14 is Final Answer: -54."): with its colon, it is never reasoning.
_FINAL_ANSWER_MARK = re.compile(r"\bfinal\s+answer\s*:", re.IGNORECASE)
_BOXED = "\\boxed{"
_MARKUP = re.compile(r"[\s#>*_`-]*")

# One sentence per place, for the notes that say what a teacher gives.
DESCRIPTIONS = {
    "field": "its reasoning field (reasoning_content / reasoning) is the thinking",
    "tags": "its <think> block is the thinking",
    "content": "it reasons in its reply's text: the text before its final-answer line is the "
    "thinking",
    FOUND_NONE: "no reasoning was found (no reasoning field, no <think> block, no final-answer "
    "line, Final Answer: mark or \\boxed{}): such traces have no thinking and curation drops "
    "them",
    FOUND_HIDDEN: "it hides its reasoning (billed as reasoning tokens, no text returned)",
}


@dataclass(frozen=True)
class Split:
    """A reply's thinking and answer, and where the thinking was found."""

    thinking: str
    answer: str
    found_in: str


def split_tags(content: str) -> tuple[str | None, str]:
    """Split `<think>...</think>` off the start of `content`: (thinking or None, answer).

    A missing close tag means the output stopped mid-thought (all thinking, no answer); a close
    tag with no opening tag means the template opened the block in the prompt.
    """
    text = content.lstrip()
    if text.startswith(_THINK_OPEN):
        body = text[len(_THINK_OPEN) :]
        thinking, closed, answer = body.partition(_THINK_CLOSE)
        return thinking.strip(), answer.strip() if closed else ""
    if _THINK_CLOSE in text:
        thinking, _, answer = text.partition(_THINK_CLOSE)
        return thinking.strip(), answer.strip()
    return None, content.strip()


def split_content(content: str) -> tuple[str, str] | None:
    """(thinking, answer) of a chain of thought written in the reply's text, None when it has
    no final-answer line, no `Final Answer:` mark and no `\\boxed{}` to end it.

    The answer starts at the last final-answer line or `Final Answer:` mark, whichever comes
    later; without either, at the line holding the last `\\boxed{}`.
    """
    text = content.strip()
    starts = [_line_start_if_only_markup(text, m.start())
              for pattern in (_FINAL_ANSWER_LINE, _FINAL_ANSWER_MARK)
              for m in list(pattern.finditer(text))[-1:]]
    if starts:
        start = max(starts)
    else:
        boxed = text.rfind(_BOXED)
        if boxed < 0:
            return None
        start = text.rfind("\n", 0, boxed) + 1  # the start of its line
    return text[:start].strip(), text[start:].strip()


def _line_start_if_only_markup(text: str, position: int) -> int:
    """`position`, or the start of its line when only markup stands before it there
    ("**Final Answer:**" belongs whole to the answer)."""
    line_start = text.rfind("\n", 0, position) + 1
    return line_start if _MARKUP.fullmatch(text[line_start:position]) else position


def split_reply(
    content: str, reasoning: str | None, source: ThinkingSource, *, hidden_tokens: int = 0
) -> Split:
    """The trace a reply gives under the `source` setting.

    `reasoning`: the text of the reply's reasoning field, if any; `hidden_tokens`: reasoning
    tokens its usage reports. Billed reasoning with no text anywhere is `hidden`, unless the
    setting says to read the chain of thought from `content`.
    """
    if source in ("auto", "field") and reasoning:
        return Split(reasoning.strip(), content.strip(), "field")
    if source in ("auto", "tags"):
        thinking, answer = split_tags(content)
        if thinking is not None:
            return Split(thinking, answer, "tags")
    if hidden_tokens > 0 and source != "content":
        return Split("", content.strip(), FOUND_HIDDEN)
    if source in ("auto", "content"):
        found = split_content(content)
        if found is not None:
            return Split(found[0], found[1], "content")
    return Split("", content.strip(), FOUND_NONE)
