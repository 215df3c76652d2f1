"""OpenAITeacher against a real OpenAI-compatible HTTP server, through the official client.

Nothing is mocked: faults travel over real sockets from `fake_openai_server`, and the server
counts every attempt, so "retried exactly twice" and "never called" are facts, not assumptions.
Waits go through the teacher's injected sleep, recorded and kept tiny so the file runs fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from pydantic import ValidationError

from frugal.questions import Question
from frugal.teacher_cache import Reservation
from frugal.teachers.base import (
    SYSTEM_PROMPT,
    TeacherError,
    TeacherResponse,
    TeacherStopped,
    Usage,
)
from frugal.teachers.openai_teacher import (
    PLACEHOLDER_KEY,
    OpenAITeacher,
    OpenAITeacherConfig,
    max_input_tokens,
    parse_retry_after,
)
from frugal.teachers.thinking import Split, split_content, split_reply, split_tags
from tests.teachers.fake_openai_server import (
    CACHED_TOKENS,
    PROMPT_TOKENS,
    FakeOpenAIServer,
    free_port,
)

KEY_ENV = "FRUGAL_TEST_TEACHER_KEY"


def question(i: int | str) -> Question:
    return Question(id=f"q{i}", question=f"What is {i} times 6?", answer="42", source="test")


class RecordingSink:
    """Reserves the first `admit_limit` calls (all when None) and records what it is told.

    Every reservation must be settled exactly once (put, billed, worst_case or not_billed):
    `unsettled` lists those that were not, which would be a call nobody charged.
    """

    def __init__(self, admit_limit: int | None = None) -> None:
        self.admit_limit = admit_limit
        self.admitted: list[tuple[str, int, int]] = []  # (id, input_tokens, max_output_tokens)
        self.refused: list[str] = []
        self.puts: dict[str, TeacherResponse] = {}
        self.fails: dict[str, Exception] = {}
        self.final: dict[str, bool] = {}
        self.settled: dict[int, tuple[str, str]] = {}  # reservation id -> (question id, how)
        self.billed_usage: list[Usage] = []
        self.notices: list[str] = []

    def admit(self, question: Question, input_tokens: int, max_output_tokens: int) -> bool:
        return self.reserve(question, input_tokens, max_output_tokens) is not None

    def reserve(
        self, question: Question, input_tokens: int, max_output_tokens: int
    ) -> Reservation | None:
        if self.admit_limit is not None and len(self.admitted) >= self.admit_limit:
            self.refused.append(question.id)
            return None
        self.admitted.append((question.id, input_tokens, max_output_tokens))
        return Reservation(len(self.admitted), "key", question.id, worst_case=1.0)

    def put(
        self, question: Question, response: TeacherResponse,
        reservation: Reservation | None = None,
    ) -> None:
        assert question.id not in self.puts and question.id not in self.fails
        self.puts[question.id] = response
        self._settle(reservation, "put")

    def billed(self, reservation: Reservation, usage: Usage, reason: str) -> None:
        self.billed_usage.append(usage)
        self._settle(reservation, "billed")

    def worst_case(self, reservation: Reservation, reason: str) -> None:
        self._settle(reservation, "worst_case")

    def not_billed(self, reservation: Reservation) -> None:
        self._settle(reservation, "not_billed")

    def fail(self, question: Question, error: Exception, *, final: bool = False) -> None:
        assert question.id not in self.puts and question.id not in self.fails
        self.fails[question.id] = error
        self.final[question.id] = final

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def _settle(self, reservation: Reservation | None, how: str) -> None:
        assert reservation is not None, "a paid call must be reported with its reservation"
        assert reservation.id not in self.settled, f"charge {reservation.id} settled twice"
        self.settled[reservation.id] = (reservation.question_id, how)

    @property
    def unsettled(self) -> list[int]:
        return [i for i in range(1, len(self.admitted) + 1) if i not in self.settled]

    def outcomes(self, question_id: str | None = None) -> list[str]:
        """How each call ended, in reservation order (of one question when given)."""
        return [how for i, (qid, how) in sorted(self.settled.items())
                if question_id in (None, qid)]


class RecordedSleep:
    """Stands in for asyncio.sleep: records each delay, then really waits it (they are tiny)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay)


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """Start a fake server with the given options; all are stopped after the test."""
    servers: list[FakeOpenAIServer] = []

    def start(**kwargs: Any) -> FakeOpenAIServer:
        server = FakeOpenAIServer(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def make_teacher(server: FakeOpenAIServer, **overrides: Any) -> tuple[OpenAITeacher, RecordedSleep]:
    options: dict[str, Any] = {
        "base_url": server.base_url,
        "model": "teacher-x",
        "api_key_env": KEY_ENV,
        "max_retries": 3,
        "backoff_base": 0.001,
        "backoff_max": 1.0,
        "timeout": 5.0,
    }
    teacher = OpenAITeacher(OpenAITeacherConfig(**{**options, **overrides}))
    teacher.sleep = sleep = RecordedSleep()
    return teacher, sleep


# ---------------------------------------------------------------------------- answers


def test_answers_come_back_parsed_with_usage(serve: Callable[..., FakeOpenAIServer]) -> None:
    server = serve()
    teacher, sleep = make_teacher(server, max_tokens=321, extra_body={"top_k": 20})
    questions = [question(i) for i in range(3)]
    sink = RecordingSink()
    teacher.run(questions, sink)

    assert sink.fails == {} and sleep.delays == []
    for q in questions:
        response = sink.puts[q.id]
        (completion,) = response.completions
        assert completion.thinking == f"Let me think about: {q.question}"
        assert completion.answer == "Final Answer: 42"
        assert completion.output_tokens == response.output_tokens > 0
        assert response.input_tokens == PROMPT_TOKENS
        assert response.cached_input_tokens == CACHED_TOKENS
        assert response.model == "teacher-x"  # the server echoes the requested model
        assert response.extra["attempts"] == 1
    # Each call was reserved once, with the prompt's byte bound and max_tokens as the worst case.
    expected = max_input_tokens(teacher.messages(questions[0]))
    assert sorted(sink.admitted) == [(q.id, expected, 321) for q in questions]
    assert server.total_calls == 3
    body = server.requests[0]
    assert body["model"] == "teacher-x"
    assert body["max_tokens"] == 321 and body["temperature"] == 0.6 and body["top_k"] == 20
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}


@pytest.mark.parametrize(("mode", "found_in"), [
    ("reasoning_content", "field"), ("reasoning", "field"), ("think", "tags"),
    ("content", "content"),
])
def test_reasoning_is_read_from_each_place_servers_put_it(
    serve: Callable[..., FakeOpenAIServer], mode: str, found_in: str
) -> None:
    server = serve(reasoning_mode=mode, reply=lambda p: ("First, 7 * 6 = 42.", "Final Answer: 42"))
    teacher, _ = make_teacher(server)
    sink = RecordingSink()
    teacher.run([question(7)], sink)

    (completion,) = sink.puts["q7"].completions
    assert completion.thinking == "First, 7 * 6 = 42."
    assert completion.answer == "Final Answer: 42"  # no <think> block left in the answer
    assert completion.found_in == found_in
    # The reply is kept as it came, so the split can be made again without a call.
    assert sink.puts["q7"].extra["reply"]["content"].endswith("Final Answer: 42")


def test_a_named_thinking_source_reads_only_that_place(
    serve: Callable[..., FakeOpenAIServer]
) -> None:
    server = serve(reasoning_mode="content",
                   reply=lambda p: ("First, 7 * 6 = 42.", "Final Answer: 42"))
    field_only, _ = make_teacher(server, thinking_source="field")
    sink = RecordingSink()
    field_only.run([question(7)], sink)
    (completion,) = sink.puts["q7"].completions
    assert (completion.thinking, completion.found_in) == ("", "none")
    assert completion.answer == "First, 7 * 6 = 42.\n\nFinal Answer: 42"
    # The same stored reply under auto: the chain of thought, without asking again.
    auto, _ = make_teacher(server)
    (again,) = auto.completions(sink.puts["q7"])
    assert (again.thinking, again.answer, again.found_in) == (
        "First, 7 * 6 = 42.", "Final Answer: 42", "content")
    assert server.total_calls == 1


def test_a_teacher_that_hides_its_reasoning_stops_the_run_at_its_first_reply(
    serve: Callable[..., FakeOpenAIServer]
) -> None:
    server = serve(reasoning_mode="hidden")
    teacher, sleep = make_teacher(server, concurrency=1)
    sink = RecordingSink()
    with pytest.raises(TeacherStopped, match="hides its reasoning") as stopped:
        teacher.run([question(i) for i in range(4)], sink)
    assert "thinking_source: content" in str(stopped.value)
    # One call: charged at its usage and kept, not retried, and no other question asked.
    assert server.total_calls == 1 and sleep.delays == []
    assert sink.outcomes() == ["put"] and list(sink.puts) == ["q0"] and sink.fails == {}
    (completion,) = sink.puts["q0"].completions
    assert completion.found_in == "hidden" and completion.thinking == ""
    assert sink.puts["q0"].extra["reply"]["reasoning_tokens"] == 9  # "Let me think about: ..."

    # Told to read the chain of thought from the answer text, the same teacher runs on.
    content, _ = make_teacher(server, concurrency=1, thinking_source="content")
    sink = RecordingSink()
    content.run([question(i) for i in range(4)], sink)
    assert len(sink.puts) == 4 and server.total_calls == 5


def test_split_tags_edge_cases() -> None:
    assert split_tags("<think>a</think>\n\nb") == ("a", "b")
    assert split_tags("  <think>\nstill thinking") == ("still thinking", "")  # cut off
    assert split_tags("opened by the template</think>b") == ("opened by the template", "b")
    assert split_tags("just an answer") == (None, "just an answer")


def test_split_content_finds_the_final_answer_line_or_the_last_box() -> None:
    assert split_content("Step 1.\nStep 2.\nFinal Answer: 42") == (
        "Step 1.\nStep 2.", "Final Answer: 42")
    # The last final-answer line ends the thinking; markdown around it is still that line,
    # and what follows it belongs to the answer.
    assert split_content("Final answer might be 3.\nNo.\n**Final Answer:** 4\nDone.") == (
        "Final answer might be 3.\nNo.", "**Final Answer:** 4\nDone.")
    assert split_content("a\n### Final Answer\n\\[\\boxed{7}\\]") == (
        "a", "### Final Answer\n\\[\\boxed{7}\\]")
    assert split_content("So 2+2 is\n\\boxed{4}.") == ("So 2+2 is", "\\boxed{4}.")
    # How chat models close when nobody taught them a format (SmolLM2, Qwen2.5).
    assert split_content("9 - 4 = 5 birds are left.\n\nThe answer is 5.") == (
        "9 - 4 = 5 birds are left.", "The answer is 5.")
    assert split_content("Add: 74 + 54 = 128.\nTherefore, the final answer is "
                         "\\(\\boxed{128}\\).")[1].startswith("Therefore")
    assert split_content("So, the answer is 13.\nNo wait.\nSo, the answer is 14.") == (
        "So, the answer is 13.\nNo wait.", "So, the answer is 14.")
    assert split_content("We add them. The answer is 42 apples.") is None  # not a line's start
    # The asked-for mark inside the last sentence (Qwen2.5-Coder writes it so).
    assert split_content("1. 40 - 80 = -40\nTherefore, 40 - 80 - 14 is Final Answer: -54.") == (
        "1. 40 - 80 = -40\nTherefore, 40 - 80 - 14 is", "Final Answer: -54.")
    assert split_content("The answer is 3.\nCheck: 1 + 2 = 3, Final Answer: 3") == (
        "The answer is 3.\nCheck: 1 + 2 = 3,", "Final Answer: 3")
    assert split_content("It is 42.") is None


def test_split_reply_per_setting() -> None:
    text = "Half of 84.\nFinal Answer: 42"
    assert split_reply(text, None, "auto") == Split("Half of 84.", "Final Answer: 42", "content")
    assert split_reply(text, "from the field", "auto").found_in == "field"
    assert split_reply(text, "from the field", "content").thinking == "Half of 84."
    assert split_reply(text, None, "tags") == Split("", text, "none")
    assert split_reply("<think>t</think>Final Answer: 1", None, "auto").found_in == "tags"
    # Billed reasoning with no text is hidden, unless the answer text is to be read.
    assert split_reply(text, None, "auto", hidden_tokens=9).found_in == "hidden"
    assert split_reply(text, None, "content", hidden_tokens=9).found_in == "content"
    assert split_reply("It is 42.", None, "auto") == Split("", "It is 42.", "none")


def test_requests_run_concurrently(serve: Callable[..., FakeOpenAIServer]) -> None:
    server = serve(delay=0.3)
    teacher, _ = make_teacher(server, concurrency=4)
    sink = RecordingSink()
    start = time.monotonic()
    teacher.run([question(i) for i in range(8)], sink)
    elapsed = time.monotonic() - start

    assert len(sink.puts) == 8
    assert server.max_in_flight == 4
    assert elapsed < 1.5, f"took {elapsed:.2f} s; sequential would take 2.4 s"


# ---------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("fault", "expected_wait"),
    [(("429", 0.25), 0.25), (("429_ms", 150), 0.15), (("429", 30), 0.05)],
    ids=["retry-after-seconds", "retry-after-ms", "capped-at-backoff-max"],
)
def test_429_waits_what_the_server_asks(
    serve: Callable[..., FakeOpenAIServer], fault: tuple[str, float], expected_wait: float
) -> None:
    q = question(1)
    server = serve(plan={q.question: [fault]})
    teacher, sleep = make_teacher(server, backoff_max=0.05 if expected_wait == 0.05 else 1.0)
    sink = RecordingSink()
    teacher.run([q], sink)

    assert sink.puts[q.id].extra["attempts"] == 2
    assert server.calls[q.question] == 2
    # The pause is shared by every worker, so it is measured from when the 429 arrived.
    assert sleep.delays == [pytest.approx(expected_wait, abs=0.02)]
    assert sink.outcomes() == ["not_billed", "put"]  # a 429 is not billed


def test_retry_after_parsing() -> None:
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    "fault",
    [
        ("500",),
        ("status", 503),
        ("timeout", 1.5),
        ("malformed",),
        ("empty_choices",),
        ("no_content",),
    ],
    ids=lambda fault: "-".join(map(str, fault)),
)
def test_transient_faults_are_retried_then_succeed(
    serve: Callable[..., FakeOpenAIServer], fault: Any
) -> None:
    q, other = question(1), question(2)
    # Two timeouts would cost two client timeouts; one proves the point.
    faults = [fault] if fault[0] == "timeout" else [fault, fault]
    server = serve(plan={q.question: faults})
    teacher, sleep = make_teacher(server, timeout=0.3 if fault[0] == "timeout" else 5.0)
    sink = RecordingSink()
    teacher.run([q, other], sink)

    assert sink.fails == {}
    assert sink.puts[q.id].completions[0].answer == "Final Answer: 42"
    assert server.calls[q.question] == len(faults) + 1  # exactly one extra attempt per fault
    assert server.calls[other.question] == 1
    assert sink.puts[q.id].extra["attempts"] == len(faults) + 1
    # Full-jitter exponential backoff: retry n waits somewhere in [0, base * 2**n].
    assert len(sleep.delays) == len(faults)
    assert all(0 <= d <= 0.001 * 2**n for n, d in enumerate(sleep.delays))
    # Every attempt is charged the way a provider bills it: error statuses cost nothing, a
    # reply with usage costs its usage, what cannot be read costs its worst case.
    expected = {
        "500": "not_billed", "status": "not_billed", "timeout": "worst_case",
        "malformed": "worst_case", "empty_choices": "billed", "no_content": "billed",
    }[fault[0]]
    assert sink.unsettled == []
    assert sink.outcomes(q.id) == [expected] * len(faults) + ["put"]


def test_a_prompt_that_always_fails_ends_in_fail_and_others_succeed(
    serve: Callable[..., FakeOpenAIServer],
) -> None:
    bad = question("bad")
    good = [question(i) for i in range(3)]
    server = serve(fail_forever={bad.question: ("500",)})
    teacher, sleep = make_teacher(server, max_retries=2)
    sink = RecordingSink()
    teacher.run([bad, *good], sink)

    assert set(sink.puts) == {q.id for q in good}
    error = sink.fails[bad.id]
    assert isinstance(error, TeacherError)
    message = str(error)
    assert "qbad" in message
    assert server.base_url + "/chat/completions" in message
    assert "3 attempts" in message and "HTTP 500" in message and "max_retries" in message
    assert server.calls[bad.question] == 3  # max_retries + 1
    assert len(sleep.delays) == 2


# ---------------------------------------------------------------------------- no retries


def test_401_stops_the_whole_run_and_names_the_key_variable(
    serve: Callable[..., FakeOpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    questions = [question(i) for i in range(5)]
    server = serve(api_key="right-key")
    teacher, sleep = make_teacher(server, concurrency=1)
    sink = RecordingSink()
    with pytest.raises(TeacherStopped, match="HTTP 401") as stopped:
        teacher.run(questions, sink)

    assert sink.puts == {} and sleep.delays == []
    assert server.total_calls == 1  # not once per question: the run stopped at once
    message = str(stopped.value)
    assert KEY_ENV in message and "Not retried" in message
    assert "wrong-key" not in message  # never echo the key
    assert sink.outcomes() == ["not_billed"]


@pytest.mark.parametrize("status", [403, 404])
def test_wrong_model_or_access_stops_the_whole_run(
    serve: Callable[..., FakeOpenAIServer], status: int
) -> None:
    server = serve(fail_forever={question(i).question: ("status", status) for i in range(4)})
    teacher, _ = make_teacher(server, concurrency=1)
    sink = RecordingSink()
    with pytest.raises(TeacherStopped, match=f"HTTP {status}"):
        teacher.run([question(i) for i in range(4)], sink)
    assert server.total_calls == 1 and sink.unsettled == []


@pytest.mark.parametrize("status", [400, 422])
def test_client_errors_fail_at_once(serve: Callable[..., FakeOpenAIServer], status: int) -> None:
    q = question(1)
    server = serve(fail_forever={q.question: ("status", status)})
    teacher, sleep = make_teacher(server)
    sink = RecordingSink()
    teacher.run([q, question(2)], sink)

    assert server.calls[q.question] == 1 and sleep.delays == []
    assert f"HTTP {status}" in str(sink.fails[q.id]) and "q1" in str(sink.fails[q.id])
    assert sink.final[q.id] is True
    assert set(sink.puts) == {"q2"}


def test_an_empty_reply_at_the_output_cap_is_charged_and_not_retried(
    serve: Callable[..., FakeOpenAIServer],
) -> None:
    q = question(1)
    server = serve(fail_forever={q.question: ("length_empty",)})
    teacher, sleep = make_teacher(server, max_tokens=500)
    sink = RecordingSink()
    teacher.run([q, question(2)], sink)

    assert server.calls[q.question] == 1 and sleep.delays == []
    assert sink.final[q.id] is True
    message = str(sink.fails[q.id])
    assert "max_tokens" in message and "500" in message and "Not retried" in message
    assert sink.billed_usage == [Usage(PROMPT_TOKENS, 500, CACHED_TOKENS)]  # all 500 billed
    assert sorted(sink.outcomes()) == ["billed", "put"]


def test_a_reply_without_usage_is_kept_and_flagged_with_one_warning(
    serve: Callable[..., FakeOpenAIServer],
) -> None:
    questions = [question(i) for i in range(3)]
    server = serve(fail_forever={q.question: ("no_usage",) for q in questions})
    teacher, _ = make_teacher(server)
    sink = RecordingSink()
    teacher.run(questions, sink)

    assert set(sink.puts) == {q.id for q in questions}
    assert all(r.extra.get("no_usage") for r in sink.puts.values())
    assert len(sink.notices) == 1 and "without usage" in sink.notices[0]


def test_the_breaker_stops_the_run_after_consecutive_failures(
    serve: Callable[..., FakeOpenAIServer],
) -> None:
    questions = [question(i) for i in range(10)]
    server = serve(fail_forever={q.question: ("500",) for q in questions})
    teacher, _ = make_teacher(server, concurrency=1, max_retries=1, max_consecutive_failures=5)
    sink = RecordingSink()
    with pytest.raises(TeacherStopped, match="5 failed teacher calls in a row"):
        teacher.run(questions, sink)
    assert server.total_calls == 5 and sink.unsettled == []


def test_a_429_pauses_every_worker(serve: Callable[..., FakeOpenAIServer]) -> None:
    questions = [question(i) for i in range(6)]
    server = serve(plan={questions[0].question: [("429", 0.6)]}, delay=0.05)
    teacher, _ = make_teacher(server, concurrency=3)
    sink = RecordingSink()
    teacher.run(questions, sink)

    assert set(sink.puts) == {q.id for q in questions}
    limited_at = server.arrivals[questions[0].question][0]
    # Requests already sent when the 429 came back may land just after it; nothing new is
    # sent until the pause (0.6 s) is over.
    later = sorted(t - limited_at for times in server.arrivals.values() for t in times
                   if t > limited_at + 0.15)
    assert later and later[0] >= 0.55, later


def test_refused_admission_stops_further_calls(serve: Callable[..., FakeOpenAIServer]) -> None:
    server = serve()
    questions = [question(i) for i in range(6)]
    teacher, _ = make_teacher(server, concurrency=1)
    sink = RecordingSink(admit_limit=2)
    teacher.run(questions, sink)

    assert set(sink.puts) == {"q0", "q1"} and sink.fails == {}
    assert sink.refused == ["q2"]  # after one refusal nothing else is even offered
    assert server.total_calls == 2
    assert all(server.calls[q.question] == 0 for q in questions[2:])


def test_a_sink_that_raises_ends_the_run(serve: Callable[..., FakeOpenAIServer]) -> None:
    class BrokenCache(RecordingSink):
        def put(
            self, question: Question, response: TeacherResponse,
            reservation: Reservation | None = None,
        ) -> None:
            raise OSError("disk full")

    server = serve()
    teacher, _ = make_teacher(server, concurrency=1)
    sink = BrokenCache()
    with pytest.raises(OSError, match="disk full"):
        teacher.run([question(i) for i in range(5)], sink)
    assert server.total_calls == 1 and sink.fails == {}  # nothing paid for after the error


# ---------------------------------------------------------------------------- keys and config


def test_api_key_comes_from_the_named_variable(
    serve: Callable[..., FakeOpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    server = serve(api_key="sk-test-123")
    teacher, _ = make_teacher(server)
    sink = RecordingSink()
    teacher.run([question(1)], sink)
    assert set(sink.puts) == {"q1"}


def test_unset_key_variable_sends_the_placeholder(serve: Callable[..., FakeOpenAIServer]) -> None:
    assert KEY_ENV not in os.environ
    server = serve(api_key=PLACEHOLDER_KEY)  # what a keyless local server would accept
    teacher, _ = make_teacher(server)
    sink = RecordingSink()
    teacher.run([question(1)], sink)
    assert set(sink.puts) == {"q1"}


def test_config_and_cache_params() -> None:
    config = OpenAITeacherConfig(model="m", temperature=0.0, extra_body={"top_p": 0.9})
    teacher = OpenAITeacher(config)
    assert teacher.kind == "openai" and teacher.model == "m"
    assert teacher.cache_params() == {
        "temperature": 0.0,
        "max_tokens": 4096,
        "extra_body": {"top_p": 0.9},
    }
    with pytest.raises(ValidationError):
        OpenAITeacherConfig(model="m", concurency=2)  # typo: unknown keys are errors
    with pytest.raises(ValidationError):
        OpenAITeacherConfig(model="m", concurrency=0)
    for name, field in OpenAITeacherConfig.model_fields.items():
        assert field.description, f"{name} is undocumented"


def test_standalone_server_writes_its_state_file(tmp_path: Path) -> None:
    port, state = free_port(), tmp_path / "state.json"
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "tests.teachers.fake_openai_server", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--state-file", str(state)], cwd=root)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        deadline = time.monotonic() + 15
        while True:
            try:
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                reply = httpx.post(url, json=body, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "standalone server did not start"
                time.sleep(0.1)
        assert reply.json()["choices"][0]["message"]["content"] == "Final Answer: 42"
        counts = json.loads(state.read_text())
        assert counts["total_calls"] == 1 and counts["calls"] == {"hi": 1}
        assert counts["answered"] == {"hi": 1}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("usage", [{}, {"input_tokens": 5, "output_tokens": 9},
                                   {"prompt_tokens": 5, "completion_tokens": -3}])
def test_usage_that_is_not_plain_counts_is_charged_at_the_worst_case(
    serve: Callable[..., FakeOpenAIServer], usage: dict[str, Any]
) -> None:
    server = serve()
    teacher, _ = make_teacher(server)
    raw = ChatCompletion.model_construct(
        id="x", object="chat.completion", created=0, model="m",
        choices=[Choice.model_construct(index=0, finish_reason="stop",
                                        message=ChatCompletionMessage.model_construct(
                                            role="assistant", content="Final Answer: 42"))],
        usage=CompletionUsage.model_construct(**usage),
    )
    reply = teacher._read(raw)
    assert reply.usage is None and reply.response is not None
    assert reply.response.extra["no_usage"] is True  # the sink charges its worst case


def test_a_reply_of_the_wrong_shape_is_retried_and_charged_at_the_worst_case(
    serve: Callable[..., FakeOpenAIServer],
) -> None:
    q = question(1)
    server = serve(plan={q.question: [("odd_shape",)]})
    teacher, _ = make_teacher(server)
    sink = RecordingSink()
    teacher.run([q], sink)
    assert sink.outcomes(q.id) == ["worst_case", "put"] and sink.fails == {}
