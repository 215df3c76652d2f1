"""A teacher that asks any OpenAI-compatible chat-completions endpoint for reasoning traces.

One class serves OpenAI itself, DeepSeek, OpenRouter and local servers (vLLM, Ollama, llama.cpp):
they differ only in `base_url`, the key, and where they put the reasoning, which is read from

1. ``message.reasoning_content`` (DeepSeek, vLLM with a reasoning parser), else
2. ``message.reasoning`` (newer vLLM, OpenRouter), else
3. a ``<think>...</think>`` block at the start of ``content`` (servers without a reasoning
   parser); a ``</think>`` with no opening tag also counts, because chat templates such as
   Qwen3's and DeepSeek-R1's put the opening ``<think>`` in the prompt, not in the output.

Calls run concurrently (an ``asyncio.Semaphore`` of `concurrency`) with the official
``openai.AsyncOpenAI`` client. Its own retries are off (``max_retries=0``): this module retries,
so that replies the client accepts but that carry no answer (a non-JSON body, which the client
surfaces as a bare ``json.JSONDecodeError``; empty ``choices``; a message with neither content
nor reasoning) are retried like 429s, 5xx, timeouts and dropped connections, and so that every
attempt is one HTTP request a test server can count. Requests the server rejects for good
(400, 401, 403, 404, 422, ...) fail their question at once: retrying would pay for nothing.

The distill stage owns the cache and the cost cap through the `ResponseSink`: each question is
admitted once before its first attempt (a refusal stops all further calls), reported with
``put`` as soon as a valid response arrives, and with ``fail`` when its retries run out.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict, Field

from frugal.questions import Question
from frugal.teachers.base import Completion, ResponseSink, Teacher, TeacherError, TeacherResponse

__all__ = ["OpenAITeacher", "OpenAITeacherConfig", "estimate_input_tokens", "split_reasoning"]

# The key sent when the configured variable is unset: local servers (vLLM, Ollama) need none,
# but the client refuses to start without one.
PLACEHOLDER_KEY = "EMPTY"
# Statuses worth another try besides 5xx: 429 (rate limit), 408 (request timeout) and 409
# (lock conflict) are transient; the official client retries the same set.
_RETRY_STATUSES = frozenset({408, 409, 429})
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


class OpenAITeacherConfig(BaseModel):
    """Where the teacher is, how to sample it, and how hard to try."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        default="https://api.openai.com/v1",
        description="Root of the OpenAI-compatible API, up to and including /v1 "
        "(e.g. http://localhost:8000/v1 for vLLM, https://api.deepseek.com/v1).",
    )
    model: str = Field(description="Model name sent with each request and recorded with traces.")
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        description="NAME of the environment variable holding the API key (never the key "
        f"itself). If it is unset, the placeholder key {PLACEHOLDER_KEY!r} is sent, which local "
        "servers such as vLLM and Ollama accept.",
    )
    concurrency: int = Field(default=8, ge=1, description="Requests in flight at once.")
    max_retries: int = Field(
        default=6,
        ge=0,
        description="Retries per question after its first attempt, for transient failures "
        "(429, 5xx, timeouts, connection errors, malformed or empty replies).",
    )
    backoff_base: float = Field(
        default=1.0,
        ge=0,
        description="Seconds; retry n waits uniform(0, backoff_base * 2**n) (full jitter), "
        "unless the server says how long with Retry-After / retry-after-ms.",
    )
    backoff_max: float = Field(
        default=60.0, ge=0, description="Seconds; cap on any single wait, Retry-After included."
    )
    timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds allowed per request; long reasoning traces take minutes.",
    )
    temperature: float | None = Field(
        default=0.6,
        ge=0,
        description="Sampling temperature. 0.6 is what DeepSeek-R1 and Qwen3 recommend for "
        "thinking: greedy decoding (0) makes reasoning models loop. None omits it, for APIs "
        "that reject it (OpenAI o-series).",
    )
    max_tokens: int = Field(
        default=4096,
        ge=1,
        description="Output-token limit per answer, thinking included: sent with each request "
        "and given to the cost cap as the worst case.",
    )
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = Field(
        default="max_tokens",
        description="Request field that carries max_tokens: most servers take max_tokens; "
        "OpenAI's reasoning models accept only max_completion_tokens.",
    )
    extra_body: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra JSON merged into each request body, passed through unchanged "
        '(e.g. {"top_p": 0.95} or vLLM options such as {"top_k": 20}).',
    )


def estimate_input_tokens(messages: Sequence[Mapping[str, str]]) -> int:
    """A cheap upper-leaning guess at a prompt's tokens: ceil(characters / 4) + 4 per message.

    Good enough for the cost cap to decide before paying (English averages about four
    characters a token; the per-message term covers the chat template's role markers). The
    real count comes back in the response's usage and is what the ledger records.
    """
    chars = sum(len(m.get("content") or "") for m in messages)
    return math.ceil(chars / 4) + 4 * len(messages)


def split_reasoning(content: str) -> tuple[str | None, str]:
    """Split ``<think>...</think>`` off the start of `content`: (thinking or None, answer).

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


class _Retryable(Exception):
    """A failed attempt worth repeating; `retry_after` is the server's requested wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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

    # ------------------------------------------------------------------ internals

    def _api_key(self) -> str:
        return os.environ.get(self.config.api_key_env) or PLACEHOLDER_KEY

    async def _run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        semaphore = asyncio.Semaphore(self.config.concurrency)
        # Set once the sink refuses a question or raises: no new calls after that.
        stopped = False

        async def one(question: Question) -> None:
            nonlocal stopped
            async with semaphore:
                if stopped:
                    return
                try:
                    messages = self.messages(question)
                    tokens = estimate_input_tokens(messages)
                    if not sink.admit(question, tokens, self.config.max_tokens):
                        stopped = True
                        return
                    await self._answer(client, question, messages, sink)
                except BaseException:
                    # Flagged before the semaphore is released: otherwise the next waiting
                    # question would start a (paid) call before the error stops the run.
                    stopped = True
                    raise

        async with openai.AsyncOpenAI(
            base_url=self.config.base_url,
            api_key=self._api_key(),
            max_retries=0,
            timeout=self.config.timeout,
        ) as client:
            tasks = [asyncio.create_task(one(q)) for q in questions]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                # A sink that raises (say, the cache cannot be written) ends the run: stop the
                # other calls before the client closes, so none of them reports a spurious failure.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _answer(
        self,
        client: openai.AsyncOpenAI,
        question: Question,
        messages: list[dict[str, str]],
        sink: ResponseSink,
    ) -> None:
        attempts = self.config.max_retries + 1
        for attempt in range(attempts):
            try:
                response = await self._attempt(client, messages)
            except _Retryable as e:
                if attempt + 1 == attempts:
                    sink.fail(question, self._gave_up(question, attempts, str(e)))
                    return
                await self.sleep(self._delay(attempt, e.retry_after))
            except openai.APIStatusError as e:
                sink.fail(question, self._rejected(question, e))
                return
            else:
                response.extra["attempts"] = attempt + 1
                sink.put(question, response)
                return

    async def _attempt(
        self, client: openai.AsyncOpenAI, messages: list[dict[str, str]]
    ) -> TeacherResponse:
        """One request; raises _Retryable for transient failures, APIStatusError for final ones."""
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
        except openai.APITimeoutError:
            raise _Retryable(f"no response within the {c.timeout:g} s timeout") from None
        except openai.APIConnectionError as e:
            raise _Retryable(f"connection failed: {e.__cause__ or e}") from None
        except openai.APIStatusError as e:
            if e.status_code in _RETRY_STATUSES or e.status_code >= 500:
                retry_after = parse_retry_after(e.response.headers)
                raise _Retryable(f"HTTP {e.status_code}: {e.message}", retry_after) from None
            raise
        except json.JSONDecodeError as e:
            # The client parses a JSON content-type body with response.json() and lets the
            # decoder's error through unwrapped.
            raise _Retryable(f"response body is not valid JSON ({e})") from None
        return self._parse(raw)

    def _parse(self, raw: Any) -> TeacherResponse:
        # A non-JSON content type makes the client hand back the body text instead of a model.
        if not isinstance(raw, ChatCompletion):
            raise _Retryable(f"response is not a chat completion: {str(raw)[:200]!r}")
        choices = getattr(raw, "choices", None)
        if not choices:
            raise _Retryable("response has no choices")
        message = getattr(choices[0], "message", None)
        if message is None:
            raise _Retryable("response's first choice has no message")
        content = message.content if isinstance(message.content, str) else ""
        extra = getattr(message, "model_extra", None) or {}
        thinking = next(
            (
                v
                for k in ("reasoning_content", "reasoning")
                if isinstance(v := extra.get(k), str) and v
            ),
            None,
        )
        if thinking is None:
            thinking, answer = split_reasoning(content)
        else:
            answer = content.strip()
        if not thinking and not answer:
            raise _Retryable("response message has neither content nor reasoning")

        usage = raw.usage
        details = getattr(usage, "prompt_tokens_details", None)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        return TeacherResponse(
            completions=[
                Completion(thinking=thinking or "", answer=answer, output_tokens=output_tokens)
            ],
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=output_tokens,
            cached_input_tokens=int(getattr(details, "cached_tokens", 0) or 0),
            model=raw.model or self.config.model,
            extra={"finish_reason": getattr(choices[0], "finish_reason", None)},
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

    def _rejected(self, question: Question, error: openai.APIStatusError) -> TeacherError:
        status = error.status_code
        c = self.config
        where = f"question {question.id}: {self.endpoint} refused the request with HTTP {status}"
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
        return TeacherError(f"{where}: {error.message}. Not retried: {hint}.")
