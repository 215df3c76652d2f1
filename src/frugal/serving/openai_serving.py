"""The OpenAI endpoints without the web framework: requests in, responses or SSE lines out.

Model names are looked up in a table (the base model, every adapter, and "auto" when a router
exists), budgets are clamped to the server's limits, prompts longer than the limit are refused,
and the thinking is returned apart from the answer. Each request's cost is its generated tokens
at the server's measured price per token (hourly price / tokens per busy hour).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from frugal.generation import BudgetConfig, GenerationResult
from frugal.reasoning_format import ReasoningFormat
from frugal.serving.engine import ServingEngine, Ticket
from frugal.serving.metrics import ServerMetrics
from frugal.serving.protocol import (
    BudgetFields,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Delta,
    ModelCard,
    ModelList,
    ReasoningTokens,
    ResponseMessage,
    Usage,
    dump,
    new_id,
)

logger = logging.getLogger("frugal.serve")

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
AUTO = "auto"
FINISH = {"end_of_turn": "stop", "max_answer_tokens": "length", "length": "length"}


@dataclass(frozen=True)
class ServerLimits:
    """Caps every request is held to, whatever it asks."""

    max_answer_tokens: int = 512
    max_thinking_tokens: int = 2048
    default_thinking_tokens: int = 256
    max_prompt_tokens: int = 2048


class RequestError(Exception):
    """A request the server refuses, with the HTTP status and the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class ClientGone(Exception):
    """The client disconnected; its generation was cancelled."""


class OpenAIServing:
    def __init__(
        self,
        engine: ServingEngine,
        fmt: ReasoningFormat,
        *,
        base_name: str,
        adapters: list[str],
        router: Callable[[str], str] | None = None,
        limits: ServerLimits | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.format = fmt
        self.base_name = base_name
        self.adapters = list(adapters)
        self.router = router
        self.limits = limits or ServerLimits()
        self.metrics = metrics or ServerMetrics(0.0)

    # -- models --------------------------------------------------------------------------------

    def models(self) -> ModelList:
        cards = [ModelCard(id=self.base_name, root=self.base_name)]
        cards += [ModelCard(id=name, parent=self.base_name, root=self.base_name)
                  for name in self.adapters]
        if self.router is not None:
            cards.append(ModelCard(id=AUTO, parent=self.base_name, root=self.base_name))
        return ModelList(data=cards)

    def resolve_model(self, name: str, routed_text: str) -> tuple[str, str]:
        """(name to report, PEFT adapter to run) for a request's `model` field."""
        if name == self.base_name:
            return name, BASE_ADAPTER
        if name in self.adapters:
            return name, name
        if name == AUTO and self.router is not None:
            chosen = self.router(routed_text)
            return chosen, chosen if chosen in self.adapters else BASE_ADAPTER
        valid = ", ".join(card.id for card in self.models().data)
        raise RequestError(404, f"model {name!r} does not exist; valid models: {valid}",
                           "model", "model_not_found")

    # -- request checks ------------------------------------------------------------------------

    def budget(self, request: BudgetFields, answer_cap: int | None) -> BudgetConfig:
        limits = self.limits
        asked = request.max_thinking_tokens or request.thinking_token_budget
        maximum = min(asked or limits.default_thinking_tokens, limits.max_thinking_tokens)
        minimum = min(request.min_thinking_tokens or 0, maximum)
        temperature = request.temperature if request.temperature is not None else 0.0
        return BudgetConfig(
            max_thinking_tokens=maximum,
            min_thinking_tokens=minimum,
            num_waits=min(request.num_waits or 0, 16),
            max_answer_tokens=min(answer_cap or limits.max_answer_tokens,
                                  limits.max_answer_tokens),
            temperature=temperature,
            top_p=request.top_p if request.top_p is not None else 1.0,
            seed=request.seed or 0,
        )

    def _prompt_tokens(self, prompt: str) -> int:
        try:
            prompt.encode("utf-8")  # JSON may carry lone surrogates that no tokenizer takes
        except UnicodeEncodeError:
            raise RequestError(400, "the text holds invalid Unicode (a lone surrogate)") from None
        count = len(self.format.encode(prompt))
        if count > self.limits.max_prompt_tokens:
            raise RequestError(
                400, f"the prompt has {count} tokens; this server accepts at most "
                f"{self.limits.max_prompt_tokens}. Shorten the messages.", "messages",
            )
        return count

    def _warn_unknown(self, request: BudgetFields, route: str) -> None:
        unknown = request.unknown_fields()
        if unknown:
            logger.warning("%s: ignoring unknown field(s) %s", route, ", ".join(unknown))

    def chat_prompt(self, request: ChatCompletionRequest) -> str:
        try:
            messages = [
                {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in request.messages
            ]
        except ValueError as error:
            raise RequestError(400, str(error), "messages") from None
        if messages[-1]["role"] != "user":
            raise RequestError(400, "the last message must come from the user", "messages")
        try:
            return self.format.conversation_prompt(messages) + self.format.think_start
        except Exception as error:  # the chat template refuses this conversation
            raise RequestError(400, f"the chat template refused the messages: {error}",
                               "messages") from None

    # -- endpoints -----------------------------------------------------------------------------

    async def chat(
        self, request: ChatCompletionRequest, is_disconnected: Callable[[], Awaitable[bool]]
    ) -> ChatCompletionResponse:
        job = self._prepare_chat(request)
        result, seconds = await self._run(job, is_disconnected)
        usage = self._usage(job, result)
        thinking, answer = result.thinking, result.answer
        self.metrics.latency.labels("chat").observe(seconds)
        return ChatCompletionResponse(
            model=job.model_name,
            choices=[ChatChoice(
                message=ResponseMessage(content=answer, reasoning_content=thinking),
                finish_reason=FINISH.get(result.finish_reason, "stop"),
            )],
            usage=usage,
        )

    async def completion(
        self, request: CompletionRequest, is_disconnected: Callable[[], Awaitable[bool]]
    ) -> CompletionResponse:
        job = self._prepare_completion(request)
        result, seconds = await self._run(job, is_disconnected)
        self.metrics.latency.labels("completions").observe(seconds)
        return CompletionResponse(
            model=job.model_name,
            choices=[CompletionChoice(
                text=result.answer, reasoning_content=result.thinking,
                finish_reason=FINISH.get(result.finish_reason, "stop"),
            )],
            usage=self._usage(job, result),
        )

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[str]:
        job = self._prepare_chat(request)
        return self._stream(job, chat=True, include_usage=_include_usage(request))

    def completion_stream(self, request: CompletionRequest) -> AsyncIterator[str]:
        job = self._prepare_completion(request)
        return self._stream(job, chat=False, include_usage=_include_usage(request))

    # -- internals -----------------------------------------------------------------------------

    def _prepare_chat(self, request: ChatCompletionRequest) -> _PreparedJob:
        self._warn_unknown(request, "/v1/chat/completions")
        prompt = self.chat_prompt(request)
        question = request.messages[-1].text()
        name, adapter = self.resolve_model(request.model, question)
        cap = request.max_completion_tokens or request.max_tokens
        return _PreparedJob(name, adapter, prompt, self._prompt_tokens(prompt),
                            self.budget(request, cap), request.seed)

    def _prepare_completion(self, request: CompletionRequest) -> _PreparedJob:
        self._warn_unknown(request, "/v1/completions")
        text = request.prompt
        if isinstance(text, list):
            if len(text) != 1:
                raise RequestError(400, "send one prompt per request", "prompt")
            text = text[0]
        if not text.strip():
            raise RequestError(400, "the prompt is empty", "prompt")
        # The prompt is the question: the model thinks, then answers, in its reasoning format.
        prompt = self.format.generation_prompt(text)
        name, adapter = self.resolve_model(request.model, text)
        return _PreparedJob(name, adapter, prompt, self._prompt_tokens(prompt),
                            self.budget(request, request.max_tokens), request.seed)

    def _submit(self, job: _PreparedJob, on_done: Callable[[GenerationResult], None],
                on_token: Callable[[int, str, bool], None] | None = None,
                on_error: Callable[[BaseException], None] | None = None) -> Ticket:
        if self.engine.failure is not None or not self.engine.alive:
            raise RequestError(503, "the decode loop has stopped; see the server log",
                               kind="server_error")
        try:
            return self.engine.submit(job.prompt, job.budget, adapter=job.adapter,
                                      seed=job.seed, on_done=on_done, on_token=on_token,
                                      on_error=on_error)
        except RuntimeError as error:  # shutting down, or the loop died just now
            raise RequestError(503, str(error), kind="server_error") from None

    async def _run(
        self, job: _PreparedJob, is_disconnected: Callable[[], Awaitable[bool]]
    ) -> tuple[GenerationResult, float]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[GenerationResult] = loop.create_future()
        started = time.monotonic()
        ticket = self._submit(
            job, lambda r: loop.call_soon_threadsafe(_settle, done, r),
            on_error=lambda e: loop.call_soon_threadsafe(_fail, done, e),
        )
        try:
            while True:
                try:
                    result = await asyncio.wait_for(asyncio.shield(done), timeout=0.25)
                    return result, time.monotonic() - started
                except TimeoutError:
                    if await is_disconnected():
                        raise ClientGone() from None
        except DecodeFailed:
            raise RequestError(503, "the decode loop stopped; see the server log",
                               kind="server_error") from None
        finally:
            if not done.done():  # the client left, or this task was cancelled
                ticket.cancelled = True

    def _stream(self, job: _PreparedJob, *, chat: bool,
                include_usage: bool) -> AsyncIterator[str]:
        """Submit now (a refusal is still an HTTP error, not a broken stream) and return the
        event stream; must be called from the event loop."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def on_token(token_id: int, section: str, forced: bool) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("token", (token_id, section)))

        def on_done(result: GenerationResult) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("done", result))

        def on_error(error: BaseException) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("error", error))

        ticket = self._submit(job, on_done, on_token, on_error)
        return self._events(job, ticket, events, chat=chat, include_usage=include_usage)

    async def _events(self, job: _PreparedJob, ticket: Ticket,
                      events: asyncio.Queue[tuple[str, Any]], *, chat: bool,
                      include_usage: bool) -> AsyncIterator[str]:
        started = time.monotonic()
        chunk_id = new_id("chatcmpl" if chat else "cmpl")
        text = _SectionText(self.format)
        finished = False
        first = True
        try:
            if chat:
                yield _sse(ChatCompletionChunk(id=chunk_id, model=job.model_name, choices=[
                    ChunkChoice(delta=Delta(role="assistant", content=""))]))
            while True:
                kind, payload = await events.get()
                if kind == "error":  # the decode loop died: end the stream, say why
                    yield _sse_error("the decode loop stopped; see the server log")
                    return
                if kind == "token":
                    delta = text.add(*payload)
                    if delta is None:
                        continue
                    if first:
                        self.metrics.first_token.observe(time.monotonic() - started)
                        first = False
                    section, piece = delta
                    yield self._chunk(chunk_id, job, chat, section, piece)
                    continue
                result: GenerationResult = payload
                finished = True
                reason = FINISH.get(result.finish_reason, "stop")
                usage = self._usage(job, result)
                self.metrics.latency.labels("chat" if chat else "completions").observe(
                    time.monotonic() - started)
                if chat:
                    yield _sse(ChatCompletionChunk(id=chunk_id, model=job.model_name, choices=[
                        ChunkChoice(delta=Delta(), finish_reason=reason)]))
                    if include_usage:
                        yield _sse(ChatCompletionChunk(id=chunk_id, model=job.model_name,
                                                       choices=[], usage=usage))
                else:
                    yield _sse(CompletionResponse(id=chunk_id, model=job.model_name, choices=[
                        CompletionChoice(text="", finish_reason=reason)],
                        usage=usage if include_usage else None))
                yield "data: [DONE]\n\n"
                return
        finally:
            if not finished:  # the client left mid-stream: free its batch slot
                ticket.cancelled = True

    def _chunk(self, chunk_id: str, job: _PreparedJob, chat: bool, section: str,
               piece: str) -> str:
        thinking = section == "thinking"
        if chat:
            delta = Delta(reasoning_content=piece) if thinking else Delta(content=piece)
            return _sse(ChatCompletionChunk(id=chunk_id, model=job.model_name,
                                            choices=[ChunkChoice(delta=delta)]))
        choice = (CompletionChoice(text="", reasoning_content=piece, finish_reason=None)
                  if thinking else CompletionChoice(text=piece, finish_reason=None))
        return _sse(CompletionResponse(id=chunk_id, model=job.model_name, choices=[choice]))

    def _usage(self, job: _PreparedJob, result: GenerationResult) -> Usage:
        completion = len(result.token_ids)
        self.metrics.count_tokens(job.prompt_tokens, result.thinking_tokens,
                                  completion - result.thinking_tokens)
        price = self.metrics.dollars_per_million(self.engine.busy_now()) or 0.0
        return Usage(
            prompt_tokens=job.prompt_tokens,
            completion_tokens=completion,
            total_tokens=job.prompt_tokens + completion,
            completion_tokens_details=ReasoningTokens(reasoning_tokens=result.thinking_tokens),
            cost=round(completion * price / 1e6, 10),
        )


@dataclass(frozen=True)
class _PreparedJob:
    model_name: str
    adapter: str
    prompt: str
    prompt_tokens: int
    budget: BudgetConfig
    seed: int | None


class _SectionText:
    """Turns a row's tokens into text deltas per section. Decoding each section's tokens whole
    and sending what is new keeps multi-token characters intact."""

    def __init__(self, fmt: ReasoningFormat) -> None:
        self.format = fmt
        self.ids: dict[str, list[int]] = {"thinking": [], "answer": []}
        self.sent: dict[str, str] = {"thinking": "", "answer": ""}

    def add(self, token_id: int, section: str) -> tuple[str, str] | None:
        if section not in self.ids:  # the delimiter between sections is structure, not text
            return None
        self.ids[section].append(token_id)
        text = self.format.tokenizer.decode(self.ids[section], skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half a character: wait for the rest
            return None
        piece = text[len(self.sent[section]):]
        self.sent[section] = text
        return (section, piece) if piece else None


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class DecodeFailed(Exception):
    """The decode loop stopped while this request was in flight."""


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(DecodeFailed(repr(error)))


def _sse_error(message: str) -> str:
    body = {"error": {"message": message, "type": "server_error", "code": 503}}
    return f"data: {json.dumps(body)}\n\n"


def _include_usage(request: BudgetFields) -> bool:
    return bool(request.stream_options and request.stream_options.include_usage)


def _sse(model: Any) -> str:
    return f"data: {json.dumps(dump(model), ensure_ascii=False)}\n\n"
