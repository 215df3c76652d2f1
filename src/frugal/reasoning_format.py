"""The reasoning format: where thinking starts and ends and where the answer goes, per tokenizer.

One `ReasoningFormat` per tokenizer owns the delimiters; nothing else in frugal hard-codes them.
Three layouts (docs/design.md, "Reasoning format"):
- native: the tokenizer has `<think>`/`</think>` tokens ->
  `<think>\\n{thinking}\\n</think>\\n\\n{answer}`
- chatml-s1: a ChatML tokenizer (Qwen, SmolLM2) -> s1's
  `<|im_start|>think\\n{thinking}<|im_start|>answer\\n{answer}<|im_end|>`
- plain: anything else -> text tags `<thinking>\\n{thinking}\\n</thinking>\\n{answer}`,
  where the end of thinking is found as a stop string in the decoded text.

A generation prompt is the chat template's user turn plus the opening of the assistant turn and of
the thinking section, so the model's first generated token is its first thinking token. A training
example is that prompt plus a completion (thinking, end of thinking, answer, end of turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

# End-of-turn markers of well-known chat templates; the first one the template uses wins.
_END_OF_TURN_CANDIDATES = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")


class FormatKind(StrEnum):
    NATIVE = "native"
    CHATML_S1 = "chatml-s1"
    PLAIN = "plain"


@dataclass(frozen=True)
class TrainingExample:
    """A prompt/completion pair; loss goes on the completion only."""

    prompt: str
    completion: str

    @property
    def text(self) -> str:
        return self.prompt + self.completion

    @property
    def completion_start(self) -> int:
        """Character offset in `text` where the completion (the supervised part) begins."""
        return len(self.prompt)


@dataclass(frozen=True)
class ParsedCompletion:
    thinking: str
    answer: str
    finished_thinking: bool  # False when the text never closed its thinking section


@dataclass(eq=False)
class ReasoningFormat:
    """The delimiters of one tokenizer, and the three things done with them."""

    kind: FormatKind
    tokenizer: Any
    think_start: str  # opens the thinking section; ends every generation prompt
    think_end: str  # closes thinking and opens the answer section
    think_end_stop: str  # what, once written by the model, means it ended its thinking
    end_of_turn: str  # closes the assistant turn

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> ReasoningFormat:
        vocab = tokenizer.get_vocab()
        template = tokenizer.chat_template or ""
        end_of_turn = next(
            (m for m in _END_OF_TURN_CANDIDATES if m in template and m in vocab),
            tokenizer.eos_token or "",
        )
        if "<think>" in vocab and "</think>" in vocab:
            return cls(FormatKind.NATIVE, tokenizer, "<think>\n", "</think>\n\n", "</think>",
                       end_of_turn)
        if "<|im_start|>" in vocab and "<|im_start|>" in template:
            return cls(FormatKind.CHATML_S1, tokenizer, "<|im_start|>think\n",
                       "<|im_start|>answer\n", "<|im_start|>", "<|im_end|>")
        return cls(FormatKind.PLAIN, tokenizer, "<thinking>\n", "</thinking>\n", "</thinking>",
                   end_of_turn)

    # -- token-level facts the generation engine needs -------------------------------------

    # Cached: the tokenizer's get_vocab() builds a dict of the whole vocabulary on each call;
    # asked once per chat request, it was 45% of frugal serve's CPU under 16 clients.
    @cached_property
    def stop_token_id(self) -> int | None:
        """The token id that ends thinking when the stop marker is a single special token."""
        if self.think_end_stop not in self.tokenizer.get_vocab():
            return None
        return self.tokenizer.convert_tokens_to_ids(self.think_end_stop)

    @cached_property
    def end_of_turn_ids(self) -> frozenset[int]:
        """Token ids that end the assistant turn (the template's marker and the EOS token)."""
        vocab = self.tokenizer.get_vocab()
        return frozenset(self.tokenizer.convert_tokens_to_ids(marker)
                         for marker in (self.end_of_turn, self.tokenizer.eos_token)
                         if marker and marker in vocab)

    def encode(self, text: str) -> list[int]:
        # The templates already write BOS and turn markers; adding special tokens would double them.
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and not getattr(self.tokenizer, "split_special_tokens", False):
            # The Rust tokenizer's batch call, as transformers makes it, but without building
            # offsets and masks in Python; it releases the GIL, so a server encoding a long
            # prompt in a worker thread does not stall its event loop.
            return backend.encode_batch([text], add_special_tokens=False)[0].ids
        return self.tokenizer.encode(text, add_special_tokens=False)

    def ends_inside_thinking(self, text: str) -> bool:
        """Whether `text` ends inside an opened thinking section (s1's prompts end this way)."""
        opened = text.rfind(self.think_start.strip())
        if opened < 0:
            return False
        after = text[opened + len(self.think_start.strip()):]
        return self.think_end_stop not in after and (
            not self.end_of_turn or self.end_of_turn not in after)

    # -- text --------------------------------------------------------------------------------

    def chat_prompt(self, question: str, system: str | None = None) -> str:
        """The user turn and the opening of the assistant turn, before any thinking."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": question})
        return self.conversation_prompt(messages)

    def conversation_prompt(self, messages: list[dict[str, str]]) -> str:
        """A whole conversation (role/content dicts, ending with a user turn) and the opening
        of the next assistant turn; earlier assistant turns keep only their answers."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        bos = self.tokenizer.bos_token or ""
        names = {"user": "User", "assistant": "Assistant"}
        parts = [
            f"{m['content']}\n\n" if m["role"] == "system"
            else f"{names.get(m['role'], 'User')}: {m['content']}\n"
            for m in messages
        ]
        return f"{bos}{''.join(parts)}Assistant: "

    def generation_prompt(self, question: str, system: str | None = None) -> str:
        """The chat prompt with the thinking section opened: the model thinks next."""
        return self.chat_prompt(question, system) + self.think_start

    def format_example(
        self, question: str, thinking: str, answer: str, system: str | None = None
    ) -> TrainingExample:
        completion = f"{thinking.strip()}{self._gap()}{self.think_end}{answer.strip()}"
        return TrainingExample(
            prompt=self.generation_prompt(question, system),
            completion=completion + self.end_of_turn,
        )

    def parse(self, completion: str) -> ParsedCompletion:
        """Split a completion (text after the generation prompt) into thinking and answer."""
        text = completion.removeprefix(self.think_start)
        marker = self.think_end.strip() if self.kind != FormatKind.CHATML_S1 else self.think_end
        head, found, tail = text.partition(marker)
        if not found and self.kind == FormatKind.CHATML_S1:
            head, found, tail = text.partition(self.think_end_stop)
        answer = tail
        for stop in (self.end_of_turn, self.tokenizer.eos_token):
            if stop:
                answer = answer.split(stop, 1)[0]
        return ParsedCompletion(
            thinking=head.strip(), answer=answer.strip(), finished_thinking=bool(found)
        )

    def _gap(self) -> str:
        # Native and plain tags read best on their own line; s1 puts its marker right after.
        return "" if self.kind == FormatKind.CHATML_S1 else "\n"
