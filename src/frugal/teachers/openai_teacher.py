"""A teacher that asks any OpenAI-compatible chat-completions endpoint for reasoning traces.

One class serves OpenAI itself, DeepSeek, OpenRouter and local servers (vLLM, Ollama, llama.cpp):
they differ only in `base_url`, the key, and where they put the reasoning: a reasoning field, a
`<think>` block, the chain of thought before the final answer in `content`, or nowhere (hidden);
`frugal.teachers.thinking` reads it, as `thinking_source` says. Each reply's text is stored as it
came (`extra["reply"]`), so the split can be made again without paying again. A reply whose
usage bills reasoning tokens while no reasoning text came back stops the run with the fix: it is
charged and kept, not retried, because every further call would pay for reasoning nobody gets.

Calls run concurrently (an `asyncio.Semaphore` of `concurrency`) with the official
`openai.AsyncOpenAI` client, its own retries off (`max_retries=0`) so that every attempt is one
HTTP request that this module reserves, charges and counts. The rules, which exist because every
attempt a provider answers is billed whether or not its reply is usable:

- Each attempt reserves its worst case (the prompt's UTF-8 bytes as tokens, plus `max_tokens`)
  with the sink before it is sent; the sink refuses when the cap would be crossed.
- A reply with a body is charged at its `usage`, usable or not; without `usage` (or with a body
  that cannot be read) it is charged at the worst case, with one warning per run.
- An empty reply that stopped at the output cap (`finish_reason: "length"`, what reasoning APIs
  return when hidden reasoning uses up `max_tokens`) is not retried: asking again with the same
  limit pays for the same nothing. The question fails with the limit to raise.
- Timeouts and connections lost after the request was sent are charged at the worst case
  (possibly billed), then retried; refused connections and error statuses cost nothing.
- 429, 408, 409 and 5xx are retried with backoff; a 429 pauses every worker (the rate limit is the
  account's, not the request's), honouring `Retry-After`. 401, 403 and 404 stop the whole run at
  once with the fix. A run-wide breaker stops after `max_consecutive_failures` failed attempts in a
  row. Other statuses (400, 422, ...) fail their question at once.
- The first Ctrl-C stops issuing calls and waits for those in flight (their replies are cached and
  charged); a second cancels them (charged at their worst case). Either way `run` then raises
  KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from frugal.questions import Question
from frugal.settings.teachers import PLACEHOLDER_KEY, OpenAITeacherConfig, ThinkingSource
from frugal.teacher_cache import Reservation
from frugal.teachers.base import (
    Completion,
    ResponseSink,
    Teacher,
    TeacherError,
    TeacherResponse,
    TeacherStopped,
    Usage,
)
from frugal.teachers.thinking import FOUND_HIDDEN, REASONING_FIELDS, split_reply

__all__ = ["OpenAITeacher", "OpenAITeacherConfig", "max_input_tokens"]

# Statuses worth another try besides 5xx: 429 (rate limit), 408 (request timeout) and 409
# (lock conflict) are transient; the official client retries the same set.
_RETRY_STATUSES = frozenset({408, 409, 429})
# Statuses that no retry and no other question can fix: the whole run stops with the fix.
_STOP_STATUSES = frozenset({401, 403, 404})
# httpx (and httpx2) errors raised before any byte of the request left: nothing can be billed.
_NEVER_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


def max_input_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """An upper bound on a prompt's billed tokens: its UTF-8 bytes, plus 8 per message and 8.

    Byte-level BPE tokenizers (GPT, Llama, Qwen, DeepSeek) never make more tokens than bytes; the
    per-message and final terms cover the chat template's role markers and the reply's priming.
    The cap needs a bound, not a guess: the real count comes back in `usage` and is what the
    ledger records.
    """
    content = sum(len((m.get("content") or "").encode("utf-8")) for m in messages)
    return content + 8 * len(messages) + 8


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from retry-after-ms or Retry-After; None if unsaid.

    Retry-After may be seconds (floats tolerated) or an HTTP date.
    """
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _AttemptFailed(Exception):
    """An attempt that produced no readable reply.

    `possibly_billed`: the provider may have billed it (charge the worst case); `retry`: worth
    another try; `status`: the HTTP status when there was one; `retry_after`: the server's wait.
    """

    def __init__(
        self, message: str, *, possibly_billed: bool, retry: bool,
        status: int | None = None, retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.possibly_billed, self.retry = possibly_billed, retry
        self.status, self.retry_after = status, retry_after


@dataclass
class _Reply:
    """A reply with a body: what it is billed at, and what it is worth."""

    usage: Usage | None
    response: TeacherResponse | None  # None: unusable
    problem: str = ""  # why it is unusable
    hit_output_cap: bool = False


@dataclass
class _RunState:
    """What every worker of one run shares: stopping, the breaker and the 429 pause."""

    breaker_limit: int
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    interrupted: bool = False
    fatal: str | None = None
    consecutive_failures: int = 0
    pause_until: float = 0.0  # time.monotonic(); 429s push it forward for everyone
    in_flight: int = 0
    warned_no_usage: bool = False

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def stop(self, fatal: str | None = None) -> None:
        if fatal is not None and self.fatal is None:
            self.fatal = fatal
        self.stop_event.set()

    def failed_attempt(self, what: str) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.breaker_limit:
            self.stop(
                f"stopped after {self.consecutive_failures} failed teacher calls in a row "
                f"(the last: {what}). Check that the endpoint is up and the settings fit it; "
                "raise distill.openai.max_consecutive_failures to tolerate more"
            )

    def succeeded(self) -> None:
        self.consecutive_failures = 0


class OpenAITeacher(Teacher):
    """Reasoning traces from an OpenAI-compatible chat-completions endpoint."""

    kind = "openai"

    def __init__(self, config: OpenAITeacherConfig) -> None:
        self.config = config
        # Injected so tests can record waits and run fast without mocking the client.
        self.sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
        self.rng = random.Random()

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def endpoint(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"

    def cache_params(self) -> dict[str, Any]:
        c = self.config
        return {
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
            "extra_body": c.extra_body,
        }

    def run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        asyncio.run(self._run(questions, sink))

    # ------------------------------------------------------------------ the run

    def _api_key(self) -> str:
        return os.environ.get(self.config.api_key_env) or PLACEHOLDER_KEY

    async def _run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        state = _RunState(breaker_limit=self.config.max_consecutive_failures)
        semaphore = asyncio.Semaphore(self.config.concurrency)

        async def one(question: Question) -> None:
            async with semaphore:
                if state.stopping:
                    return
                try:
                    await self._answer(client, question, sink, state)
                except BaseException:
                    # Flagged before the semaphore is released: otherwise the next waiting
                    # question would start a (paid) call before the error ends the run.
                    state.stop()
                    raise

        async with openai.AsyncOpenAI(
            base_url=self.config.base_url,
            api_key=self._api_key(),
            max_retries=0,
            timeout=self.config.timeout,
        ) as client:
            tasks = [asyncio.create_task(one(q)) for q in questions]
            handler = self._on_ctrl_c(state, tasks, sink)
            try:
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                if handler:
                    asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
        # A sink that raised (the cache could not be written) ends the run with its error.
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, asyncio.CancelledError
            ):
                raise outcome
        if state.interrupted:
            raise KeyboardInterrupt
        if state.fatal is not None:
            raise TeacherStopped(state.fatal)

    def _on_ctrl_c(
        self, state: _RunState, tasks: list[asyncio.Task[None]], sink: ResponseSink
    ) -> bool:
        """First Ctrl-C: no new calls, wait for those in flight. Second: cancel them."""

        def on_sigint() -> None:
            if not state.interrupted:
                state.interrupted = True
                state.stop()
                sink.notice(
                    f"Ctrl-C: no new teacher calls; waiting for the {state.in_flight} in flight "
                    "to be answered and charged (Ctrl-C again aborts them, charged at their "
                    "worst case)"
                )
                return
            for task in tasks:
                task.cancel()

        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)
        except (ValueError, RuntimeError, NotImplementedError):
            return False  # not the main thread (or no signals here): Ctrl-C stays a plain raise
        return True

    async def _answer(
        self,
        client: openai.AsyncOpenAI,
        question: Question,
        sink: ResponseSink,
        state: _RunState,
    ) -> None:
        c = self.config
        messages = self.messages(question)
        input_bound = max_input_tokens(messages)
        attempts = c.max_retries + 1
        for attempt in range(attempts):
            await self._wait_for_rate_limit(state)
            if state.stopping:
                return
            reservation = sink.reserve(question, input_bound, c.max_tokens)
            if reservation is None:
                state.stop()
                return
            state.in_flight += 1
            try:
                reply: _Reply | _AttemptFailed = await self._attempt(client, messages)
            except asyncio.CancelledError:
                sink.worst_case(reservation, "cancelled after it was sent: possibly billed")
                raise
            except _AttemptFailed as failure:
                reply = failure
            finally:
                state.in_flight -= 1
            if isinstance(reply, _AttemptFailed):
                if reply.possibly_billed:
                    sink.worst_case(reservation, f"{reply}: possibly billed")
                else:
                    sink.not_billed(reservation)
                if not self._after_failure(question, reply, attempt, attempts, sink, state):
                    return
                await self._backoff(reply, attempt, state)
                continue
            if reply.response is not None:
                reply.response.extra["attempts"] = attempt + 1
            self._charge(reply, question, reservation, sink, state)
            if reply.response is not None:
                state.succeeded()
                hidden = self._hides_reasoning(question, reply.response)
                if hidden is not None:
                    state.stop(hidden)
                return
            state.failed_attempt(reply.problem)
            if reply.hit_output_cap:
                sink.fail(question, TeacherError(
                    f"question {question.id}: {reply.problem}. Not retried: the same "
                    f"max_tokens ({c.max_tokens}) would pay for the same empty reply. Fix: raise "
                    "distill.openai.max_tokens (--max-tokens), which asks again"
                ), final=True)
                return
            if attempt + 1 == attempts:
                sink.fail(question, self._gave_up(question, attempts, reply.problem))
                return
            await self._backoff(None, attempt, state)

    def _after_failure(
        self, question: Question, failure: _AttemptFailed, attempt: int, attempts: int,
        sink: ResponseSink, state: _RunState,
    ) -> bool:
        """Record a failed attempt; True when the question should be tried again."""
        if failure.status in _STOP_STATUSES:
            error = self._rejected(question, failure)
            sink.fail(question, error)
            state.stop(str(error))
            return False
        state.failed_attempt(str(failure))
        if not failure.retry:
            sink.fail(question, self._rejected(question, failure), final=True)
            return False
        if attempt + 1 == attempts:
            sink.fail(question, self._gave_up(question, attempts, str(failure)))
            return False
        return not state.stopping

    def _charge(
        self, reply: _Reply, question: Question, reservation: Reservation,
        sink: ResponseSink, state: _RunState,
    ) -> None:
        """Settle a reply with a body: at its usage, or at the worst case without one."""
        if reply.usage is None and not state.warned_no_usage:
            state.warned_no_usage = True
            sink.notice(
                f"{self.endpoint} sent a reply without usage: such replies are charged at their "
                f"worst case (prompt bound + max_tokens {self.config.max_tokens}) in the ledger"
            )
        if reply.response is not None:
            sink.put(question, reply.response, reservation)
        elif reply.usage is None:
            sink.worst_case(reservation, f"{reply.problem}; no usage in the reply")
        else:
            sink.billed(reservation, reply.usage, reply.problem)

    async def _wait_for_rate_limit(self, state: _RunState) -> None:
        remaining = state.pause_until - time.monotonic()
        if remaining > 0 and not state.stopping:
            await self._pause(remaining, state)

    async def _backoff(
        self, failure: _AttemptFailed | None, attempt: int, state: _RunState
    ) -> None:
        delay = self._delay(attempt, failure.retry_after if failure else None)
        if failure is not None and failure.status == 429:
            # The limit is the account's: every worker waits, not just the one that hit it.
            state.pause_until = max(state.pause_until, time.monotonic() + delay)
            await self._wait_for_rate_limit(state)
        else:
            await self._pause(delay, state)

    async def _pause(self, seconds: float, state: _RunState) -> None:
        """Sleep `seconds`, or less if the run is told to stop meanwhile."""
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        stopper = asyncio.ensure_future(state.stop_event.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, stopper):
                waiter.cancel()

    # ------------------------------------------------------------------ one attempt

    async def _attempt(
        self, client: openai.AsyncOpenAI, messages: list[dict[str, str]]
    ) -> _Reply:
        """One request: a reply with a body, or _AttemptFailed saying whether it may be billed."""
        c = self.config
        params: dict[str, Any] = {c.max_tokens_param: c.max_tokens}
        if c.temperature is not None:
            params["temperature"] = c.temperature
        try:
            raw = await client.chat.completions.create(
                model=c.model,
                messages=messages,  # type: ignore[arg-type]
                extra_body=c.extra_body or None,
                **params,
            )
        except openai.APITimeoutError as e:
            sent = type(e.__cause__).__name__ not in _NEVER_SENT
            raise _AttemptFailed(
                f"no response within the {c.timeout:g} s timeout", possibly_billed=sent,
                retry=True,
            ) from None
        except openai.APIConnectionError as e:
            sent = type(e.__cause__).__name__ not in _NEVER_SENT
            raise _AttemptFailed(
                f"connection failed: {e.__cause__ or e}", possibly_billed=sent, retry=True
            ) from None
        except openai.APIStatusError as e:
            # Error statuses carry no usage and providers do not bill them.
            retry = e.status_code in _RETRY_STATUSES or e.status_code >= 500
            raise _AttemptFailed(
                f"HTTP {e.status_code}: {e.message}", possibly_billed=False, retry=retry,
                status=e.status_code,
                retry_after=parse_retry_after(e.response.headers) if retry else None,
            ) from None
        except json.JSONDecodeError as e:
            # A 200 whose body is not JSON: the provider answered (and billed), nobody can
            # read what. The client lets the decoder's error through unwrapped.
            raise _AttemptFailed(
                f"response body is not valid JSON ({e})", possibly_billed=True, retry=True
            ) from None
        try:
            return self._read(raw)
        except _AttemptFailed:
            raise
        except Exception as e:  # a body of the wrong shape: answered (billed), unreadable
            raise _AttemptFailed(
                f"the reply could not be read ({type(e).__name__}: {e})", possibly_billed=True,
                retry=True,
            ) from None

    def _read(self, raw: Any) -> _Reply:
        # A non-JSON content type makes the client hand back the body text instead of a model.
        if not isinstance(raw, ChatCompletion):
            raise _AttemptFailed(
                f"response is not a chat completion: {str(raw)[:200]!r}", possibly_billed=True,
                retry=True,
            )
        usage = _usage(raw)
        choices = raw.choices or []
        if not choices or getattr(choices[0], "message", None) is None:
            return _Reply(usage, None, "the reply has no choices")
        choice = choices[0]
        message = choice.message
        content = message.content if isinstance(message.content, str) else ""
        extra = getattr(message, "model_extra", None) or {}
        reasoning = next((v for k in REASONING_FIELDS
                          if isinstance(v := extra.get(k), str) and v.strip()), None)
        hidden_tokens = _reasoning_tokens(raw)
        finish_reason = getattr(choice, "finish_reason", None)
        if not content.strip() and not reasoning:
            if finish_reason == "length":
                return _Reply(usage, None, (
                    f"the reply is empty: it stopped at the output cap (finish_reason "
                    f"'length', max_tokens {self.config.max_tokens}), hidden reasoning having "
                    "used it up"
                ), hit_output_cap=True)
            return _Reply(usage, None, "the reply's message has neither content nor reasoning")
        # Stored as it came, so a changed thinking_source splits it again without a call.
        reply = {"content": content, "reasoning": reasoning, "reasoning_tokens": hidden_tokens}
        output_tokens = usage.output_tokens if usage else 0
        response = TeacherResponse(
            completions=[self._completion(reply, output_tokens)],
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=output_tokens,
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            model=raw.model or self.config.model,
            extra={"finish_reason": finish_reason, "reply": reply,
                   **({} if usage else {"no_usage": True})},
        )
        return _Reply(usage, response)

    def _completion(self, reply: Mapping[str, Any], output_tokens: int) -> Completion:
        return completion_of(reply, self.config.thinking_source, output_tokens)

    def completions(self, response: TeacherResponse) -> list[Completion]:
        return completions_of(response, self.config.thinking_source)

    def _hides_reasoning(self, question: Question, response: TeacherResponse) -> str | None:
        """The run-stopping message for a reply that billed reasoning it did not return."""
        if response.completions[0].found_in != FOUND_HIDDEN:
            return None
        tokens = response.extra["reply"]["reasoning_tokens"]
        return (
            f"{self.config.model!r} at {self.config.base_url} hides its reasoning: its reply to "
            f"question {question.id} billed {tokens} reasoning tokens and returned no reasoning "
            "text (no reasoning field, no <think> block), so what it thought cannot become a "
            "trace. That reply is charged and kept, and no new call is sent. Fix: use a "
            "teacher that returns its reasoning (a reasoning model behind vLLM with a reasoning "
            "parser, DeepSeek's API, OpenRouter), or set distill.openai.thinking_source: "
            "content to train on the chain of thought it writes before its final answer"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry number `attempt + 1`."""
        cap = self.config.backoff_max
        if retry_after is not None:
            return min(retry_after, cap)  # the server knows when it will have capacity
        # Full jitter spreads the retries of many concurrent requests apart.
        return self.rng.uniform(0, min(self.config.backoff_base * 2**attempt, cap))

    def _gave_up(self, question: Question, attempts: int, last_error: str) -> TeacherError:
        return TeacherError(
            f"question {question.id}: gave up after {attempts} attempts to {self.endpoint} "
            f"(model {self.config.model!r}); last error: {last_error}. Check that the server is "
            "up and not overloaded, or raise max_retries / timeout / backoff_max in the teacher "
            "config; re-running distill retries only the unanswered questions."
        )

    def _rejected(self, question: Question, failure: _AttemptFailed) -> TeacherError:
        status = failure.status
        c = self.config
        where = f"question {question.id}: {self.endpoint} refused the request with {failure}"
        if status == 401:
            state = "is set" if os.environ.get(c.api_key_env) else "is NOT set"
            hint = (
                f"the API key is read from the environment variable {c.api_key_env} "
                f"(which {state}); export a valid key there, or point api_key_env at the "
                "variable that holds it"
            )
        elif status == 403:
            hint = f"the key read from {c.api_key_env} may not have access to model {c.model!r}"
        elif status == 404:
            hint = f"check base_url ({c.base_url}) and that the server serves model {c.model!r}"
        else:
            hint = (
                "the server rejected the request itself; check model, max_tokens, temperature "
                "and extra_body in the teacher config"
            )
        return TeacherError(f"{where}. Not retried: {hint}.")


def completion_of(reply: Mapping[str, Any], source: ThinkingSource,
                  output_tokens: int) -> Completion:
    """The completion a stored chat reply (`extra["reply"]`) gives under `source`."""
    split = split_reply(reply["content"], reply.get("reasoning"), source,
                        hidden_tokens=reply.get("reasoning_tokens") or 0)
    return Completion(thinking=split.thinking, answer=split.answer,
                      output_tokens=output_tokens, found_in=split.found_in)


def completions_of(response: TeacherResponse, source: ThinkingSource) -> list[Completion]:
    """A stored response's completions split again under `source` (as stored, for a response
    kept before replies were stored whole)."""
    reply = response.extra.get("reply")
    if not isinstance(reply, dict) or not isinstance(reply.get("content"), str):
        return response.completions
    return [completion_of(reply, source, c.output_tokens) for c in response.completions]


def _reasoning_tokens(raw: ChatCompletion) -> int:
    """Reasoning tokens the reply's usage bills (0 when it says none, or nothing readable)."""
    details = getattr(raw.usage, "completion_tokens_details", None)
    tokens = getattr(details, "reasoning_tokens", None)
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 \
        else 0


def _usage(raw: ChatCompletion) -> Usage | None:
    """The billed token counts, or None (charge the worst case) unless they are plain counts."""
    usage = raw.usage
    if usage is None:
        return None
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    # The client does not validate replies: `{}`, other field names, negative or non-integer
    # counts would otherwise be charged $0 (or less) for a call the provider billed.
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
               for n in (prompt, completion, cached)):
        return None
    return Usage(input_tokens=prompt, output_tokens=completion,  # type: ignore[arg-type]
                 cached_input_tokens=min(cached, prompt))  # type: ignore[type-var]
