"""The one interface every teacher implements, and the messages they all send.

A teacher turns questions into responses (thinking + answer, with token usage). The distill stage
owns everything around it: the cache that records each response before it is used, the cost cap,
grading and progress. It talks to a teacher through a `ResponseSink`:

- `sink.admit(question, input_tokens, max_output_tokens)` before each call: False means stop
  issuing calls (the cost cap would be crossed); the teacher must not call for that question.
  The sink prices the tokens; the teacher only estimates them.
- `sink.put(question, response)` as soon as a response arrives: the sink writes it to the cache
  at once, so an interrupted run never loses it.

The sink only ever sees questions that were not answered yet: cached ones are filtered out before
the teacher runs, which is how a re-run pays for nothing twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from frugal.questions import Question

SYSTEM_PROMPT = (
    "You are an expert problem solver. Think step by step, then give the final answer on its "
    "own line as 'Final Answer: <answer>'."
)


def teacher_messages(question: Question) -> list[dict[str, str]]:
    """The chat messages a teacher is asked, part of every cache key."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question.question},
    ]


@dataclass
class Completion:
    """One answer to a question: its reasoning and its final answer text."""

    thinking: str
    answer: str
    output_tokens: int = 0


@dataclass
class TeacherResponse:
    """What a teacher returned for one question; most teachers give one completion."""

    completions: list[Completion]
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # prompt-cache hits, priced apart where the API reports them
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherResponse:
        completions = [Completion(**c) for c in data.get("completions", [])]
        return cls(**{**data, "completions": completions})


class TeacherError(RuntimeError):
    """A teacher gave up on a question; the message says why and what to do."""


class ResponseSink(Protocol):
    def admit(self, question: Question, input_tokens: int, max_output_tokens: int) -> bool: ...

    def put(self, question: Question, response: TeacherResponse) -> None: ...

    def fail(self, question: Question, error: Exception) -> None: ...


class Teacher(ABC):
    """A source of reasoning traces. Subclasses set `kind` and implement `run`."""

    kind: str = ""

    @property
    @abstractmethod
    def model(self) -> str:
        """The model (or program) answering, recorded with every trace and in cache keys."""

    def cache_params(self) -> dict[str, Any]:
        """Sampling parameters that change the answer, and so belong to the cache key."""
        return {}

    def messages(self, question: Question) -> list[dict[str, str]]:
        return teacher_messages(question)

    @abstractmethod
    def run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        """Answer `questions`, reporting each response (or failure) to `sink` as it arrives."""


def split_solution(text: str) -> Completion:
    """A worked solution whose last `Final Answer:` line is the answer; the rest is thinking."""
    lines = text.strip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip().lower().startswith("final answer:"):
            thinking = "\n".join(lines[:i] + lines[i + 1 :]).strip()
            return Completion(thinking=thinking, answer=lines[i].strip())
    return Completion(thinking=text.strip(), answer="")
