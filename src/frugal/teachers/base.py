"""The one interface every teacher implements, and the messages they all send.

A teacher turns questions into responses (thinking + answer, with token usage). The distill stage
owns everything around it: the cache that records each response before it is used, the cost cap,
the ledger, grading and progress. It talks to a teacher through a `ResponseSink`:

- Teachers that cost nothing per call (programs, datasets, local models) ask
  `sink.admit(question, input_tokens, max_output_tokens)` once per question (False: stop, the
  cap would be crossed) and report `sink.put(question, response)`.
- Teachers that pay per call (APIs) reserve every attempt before sending it:
  `sink.reserve(question, input_tokens, max_output_tokens)` writes the attempt's worst case to the
  cache ahead of the request and returns a `Reservation` (None: stop issuing calls). Each
  reservation is then settled exactly once: `put(question, response, reservation)` for a usable
  reply, `billed(reservation, usage, reason)` for a reply that was billed but is unusable,
  `worst_case(reservation, reason)` when the provider may have billed what nobody can read (no
  usage, a timeout, a lost connection, a cancelled call), `not_billed(reservation)` when the
  request was refused or never sent.
- `sink.fail(question, error, final=...)` when a question gets no usable answer; `final` means
  asking again with the same parameters would fail the same way.
- `sink.notice(message)` for a line the user should see (a warning, a Ctrl-C acknowledgement).

The sink only ever sees questions that were not answered yet: cached ones are filtered out before
the teacher runs, which is how a re-run pays for nothing twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from frugal.questions import Question
from frugal.teacher_cache import Reservation

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
    # Where the thinking was found (frugal.teachers.thinking): field, tags, content, none,
    # hidden; empty for teachers that write thinking and answer apart (programs, local models).
    found_in: str = ""


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


class TeacherStopped(RuntimeError):
    """The whole run must stop (bad key, wrong endpoint, too many failures in a row)."""


@dataclass(frozen=True)
class Usage:
    """Tokens a provider says it billed for one reply."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0


class ResponseSink(Protocol):
    def admit(self, question: Question, input_tokens: int, max_output_tokens: int) -> bool: ...

    def reserve(
        self, question: Question, input_tokens: int, max_output_tokens: int
    ) -> Reservation | None: ...

    def put(
        self, question: Question, response: TeacherResponse,
        reservation: Reservation | None = None,
    ) -> None: ...

    def billed(self, reservation: Reservation, usage: Usage, reason: str) -> None: ...

    def worst_case(self, reservation: Reservation, reason: str) -> None: ...

    def not_billed(self, reservation: Reservation) -> None: ...

    def fail(self, question: Question, error: Exception, *, final: bool = False) -> None: ...

    def notice(self, message: str) -> None: ...


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

    def completions(self, response: TeacherResponse) -> list[Completion]:
        """The completions a stored response gives under this teacher's current settings."""
        return response.completions

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
