"""The OpenAI endpoints without the web framework: requests in, responses or SSE lines out.

Model names are looked up in a table (the base model, every adapter, and "auto" when a router
exists), budgets are clamped to the server's limits, prompts longer than the limit are refused,
and the thinking is returned apart from the answer. Each request's cost is its generated tokens
at the server's measured price per token (hourly price / tokens per busy hour).

Chat completions put the conversation in the chat template and open the thinking section: the
model thinks under the request's budget, then answers. Completions continue a raw prompt (text
or token ids) as OpenAI's and vLLM's do; when the prompt ends inside an opened thinking section
(how s1's code prompts vLLM), the thinking continues under the budget and the answer follows,
unless the request stops on the end-of-thinking marker itself: then its client drives the
thinking (as frugal's endpoint engine does) and the server only continues.

`prepare_chat` and `prepare_completion` do the slow part of a request (templating, tokenising,
routing) and are meant for a worker thread, so the event loop stays free for other clients.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from frugal.generation import BudgetConfig, Continuation, GenerationResult, Section
from frugal.reasoning_format import ReasoningFormat
from frugal.serving.engine import QueueFull, ServingEngine, Ticket
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
from frugal.serving.text_stream import TextStream
from frugal.settings.serve import ServeConfig

logger = logging.getLogger("frugal.serve")

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
AUTO = "auto"
FINISH = {"end_of_turn": "stop", "max_answer_tokens": "length", "length": "length"}
GENERATION_FAILED = "generation failed for this request; see the server log"
UNKNOWN_FIELD_LOG_EVERY_S = 10.0  # a client cannot flood the log with made-up field names


class RequestError(Exception):
    """A request the server refuses: HTTP status, the field at fault, OpenAI's error code."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.code = code or _CODES.get(status, kind)
        self.headers = headers


_CODES = {401: "invalid_api_key", 404: "model_not_found", 413: "request_too_large",
          415: "unsupported_media_type", 429: "rate_limit_exceeded", 499: "client_closed_request",
          503: "service_unavailable", 504: "timeout"}


class ClientGone(Exception):
    """The client disconnected; its generation was cancelled."""


@dataclass
class PreparedJob:
    """A request checked, templated and tokenised, ready for the decode loop."""

    model_name: str
    adapter: str
    prompt: str
    prompt_ids: list[int]
    budget: BudgetConfig
    seed: int | None
    stops: list[str]
    raw: bool  # /v1/completions: the text is the whole continuation
    continuation: Continuation | None = None
    skip_special_tokens: bool = True
    include_stop: bool = False
    return_token_ids: bool = False

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


class OpenAIServing:
    def __init__(
        self,
        engine: ServingEngine,
        fmt: ReasoningFormat,
        *,
        base_name: str,
        adapters: list[str],
        router: Callable[[str], str] | None = None,
        limits: ServeConfig,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.engine = engine
        self.format = fmt
        self.base_name = base_name
        self.adapters = list(adapters)
        self.router = router
        self.limits = limits  # the per-request caps of the server's settings
        self.metrics = metrics or ServerMetrics(0.0)
        vocab = fmt.tokenizer.get_vocab()
        self._vocab_size = max(len(fmt.tokenizer), max(vocab.values()) + 1)
        # No token stands for more characters than its own spelling in the vocabulary (byte-level
        # and sentencepiece alike), so a prompt longer than this is refused without tokenising.
        self._max_token_chars = max(len(token) for token in vocab)
        self._unknown_log = _ThrottledLog(UNKNOWN_FIELD_LOG_EVERY_S)

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

    def _check_fields(self, request: BudgetFields, route: str) -> None:
        unsupported = request.unsupported_field()
        if unsupported:
            raise RequestError(
                400, f"{unsupported} is not supported by this server; remove it from the "
                "request", unsupported, code="unsupported_parameter")
        unknown = request.unknown_fields()
        if unknown:
            # Escaped and cut short: the names come from the client.
            names = ", ".join(ascii(name[:64]) for name in unknown[:8])
            more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
            self._unknown_log.warning("%s: ignoring unknown field(s) %s%s", route, names, more)

    def _tokenise(self, text: str, param: str) -> list[int]:
        try:
            text.encode("utf-8")  # JSON may carry lone surrogates that no tokenizer takes
        except UnicodeEncodeError:
            raise RequestError(400, "the text holds invalid Unicode (a lone surrogate)",
                               param) from None
        limit = self.limits.max_prompt_tokens
        if len(text) > limit * self._max_token_chars:
            self._too_long(f"over {limit}", param)
        ids = self.format.encode(text)
        if len(ids) > limit:
            self._too_long(str(len(ids)), param)
        return ids

    def _too_long(self, count: str, param: str) -> None:
        raise RequestError(
            400, f"the prompt has {count} tokens; this server accepts at most "
            f"{self.limits.max_prompt_tokens}. Shorten it.", param, code="context_length_exceeded")

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
        if sum(len(m["content"]) for m in messages) > (
                self.limits.max_prompt_tokens * self._max_token_chars):
            self._too_long(f"over {self.limits.max_prompt_tokens}", "messages")
        try:
            return self.format.conversation_prompt(messages) + self.format.think_start
        except Exception as error:  # the chat template refuses this conversation
            raise RequestError(400, f"the chat template refused the messages: {error}",
                               "messages") from None

    # -- preparing (in a worker thread) --------------------------------------------------------

    def prepare_chat(self, request: ChatCompletionRequest) -> PreparedJob:
        self._check_fields(request, "/v1/chat/completions")
        prompt = self.chat_prompt(request)
        ids = self._tokenise(prompt, "messages")
        name, adapter = self.resolve_model(request.model, request.messages[-1].text())
        cap = request.max_completion_tokens or request.max_tokens
        return PreparedJob(name, adapter, prompt, ids, self.budget(request, cap), request.seed,
                           request.stops, raw=False)

    def prepare_completion(self, request: CompletionRequest) -> PreparedJob:
        self._check_fields(request, "/v1/completions")
        prompt = request.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise RequestError(400, "send one prompt per request", "prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            if not prompt:
                raise RequestError(400, "the prompt is empty", "prompt")
            ids, text = self._tokenise(prompt, "prompt"), prompt
        else:
            ids = self._check_ids(prompt)
            text = self.format.tokenizer.decode(ids)
        stop_ids = set(request.stop_token_ids or [])
        self._check_ids(sorted(stop_ids), "stop_token_ids", allow_empty=True)
        fmt = self.format
        # A client that stops on the end-of-thinking marker drives the thinking itself.
        drives_thinking = (fmt.stop_token_id in stop_ids
                           or any(fmt.think_end_stop in stop for stop in request.stops))
        forced = fmt.ends_inside_thinking(text) and not drives_thinking
        name, adapter = self.resolve_model(request.model, text)
        if forced:
            if stop_ids or request.ignore_eos:
                raise RequestError(
                    400, "stop_token_ids and ignore_eos apply to plain continuations; this "
                    "prompt ends inside a thinking section, so the server forces its budget "
                    "(stop on the end-of-thinking marker to drive the thinking yourself)",
                    "stop_token_ids" if stop_ids else "ignore_eos")
            budget = self.budget(request, request.max_tokens)
            continuation = None
        else:
            # A plain continuation may be as long as a forced reply's thinking and answer.
            cap = self.limits.max_thinking_tokens + self.limits.max_answer_tokens
            budget = self.budget(request, None).model_copy(update={
                "max_answer_tokens": min(request.max_tokens or cap, cap), "answer_prefix": ""})
            continuation = Continuation(frozenset(stop_ids), request.ignore_eos)
        return PreparedJob(
            name, adapter, text, ids, budget, request.seed, request.stops, raw=True,
            continuation=continuation, skip_special_tokens=request.skip_special_tokens,
            include_stop=request.include_stop_str_in_output,
            return_token_ids=request.return_token_ids,
        )

    def _check_ids(self, ids: list[Any], param: str = "prompt",
                   allow_empty: bool = False) -> list[int]:
        if not ids and not allow_empty:
            raise RequestError(400, "the prompt is empty", param)
        bad = next((t for t in ids if not 0 <= t < self._vocab_size), None)
        if bad is not None:
            raise RequestError(400, f"token id {bad} is outside the vocabulary "
                               f"(0 to {self._vocab_size - 1})", param)
        if param == "prompt" and len(ids) > self.limits.max_prompt_tokens:
            self._too_long(str(len(ids)), param)
        return list(ids)

    # -- endpoints -----------------------------------------------------------------------------

    async def chat(self, job: PreparedJob,
                   is_disconnected: Callable[[], Awaitable[bool]]) -> ChatCompletionResponse:
        reply = _Reply(self.format, job)
        result, seconds = await self._run(job, reply, is_disconnected)
        self.metrics.latency.labels("chat").observe(seconds)
        thinking = result.thinking
        answer = reply.answer.text.strip() if reply.stopped_on else result.answer
        return ChatCompletionResponse(
            model=job.model_name,
            choices=[ChatChoice(
                message=ResponseMessage(content=answer, reasoning=thinking,
                                        reasoning_content=thinking),
                finish_reason=reply.finish_reason(result),
            )],
            usage=self._usage(job, result, reply),
        )

    async def completion(self, job: PreparedJob,
                         is_disconnected: Callable[[], Awaitable[bool]]) -> CompletionResponse:
        reply = _Reply(self.format, job)
        result, seconds = await self._run(job, reply, is_disconnected)
        self.metrics.latency.labels("completions").observe(seconds)
        reply.answer.flush()
        return CompletionResponse(model=job.model_name, choices=[CompletionChoice(
            text=reply.answer.text, finish_reason=reply.finish_reason(result),
            stop_reason=reply.stop_reason(result),
            token_ids=reply.token_ids(result) if job.return_token_ids else None,
            prompt_token_ids=job.prompt_ids if job.return_token_ids else None,
        )], usage=self._usage(job, result, reply))

    def stream(self, job: PreparedJob, *, chat: bool, include_usage: bool) -> AsyncIterator[str]:
        """Submit now (a refusal is still an HTTP error, not a broken stream) and return the
        event stream; must be called from the event loop."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        reply = _Reply(self.format, job, lambda section, text: loop.call_soon_threadsafe(
            events.put_nowait, ("text", (section, text))))
        ticket = self._submit(
            job, reply,
            lambda result: loop.call_soon_threadsafe(events.put_nowait, ("done", result)),
            lambda error: loop.call_soon_threadsafe(_log_and_put, events, error),
            live=True,
        )
        stream = self._events(job, reply, ticket, events, chat=chat, include_usage=include_usage)
        # A response cancelled before its first step never runs the stream's `finally`: when the
        # stream is dropped, its row is cancelled all the same (a no-op once it has finished).
        weakref.finalize(stream, _cancel, ticket)
        return stream

    # -- internals -----------------------------------------------------------------------------

    def _submit(self, job: PreparedJob, reply: _Reply,
                on_done: Callable[[GenerationResult], None],
                on_error: Callable[[BaseException], None], *, live: bool) -> Ticket:
        """Queue the job; `live`: its tokens are needed while generated (see `Job.live`)."""
        if self.engine.failure is not None or not self.engine.alive:
            raise RequestError(503, "the decode loop has stopped; see the server log",
                               kind="server_error")
        try:
            ticket = self.engine.submit(
                job.prompt, job.budget, adapter=job.adapter, seed=job.seed, on_done=on_done,
                on_token=reply.on_token, live=live, on_error=on_error,
                prompt_ids=job.prompt_ids, continuation=job.continuation)
        except QueueFull as full:
            raise RequestError(429, f"the server is busy ({full}); retry after "
                               f"{full.retry_after_s} s", kind="rate_limit_error",
                               headers={"Retry-After": str(full.retry_after_s)}) from None
        except RuntimeError as error:  # shutting down, or the loop died just now
            raise RequestError(503, str(error), kind="server_error") from None
        with reply.lock:  # a stop found before the ticket existed still ends the row
            reply.ticket = ticket
            if reply.stopped_on is not None:
                ticket.ended_by_stop = ticket.cancelled = True
        return ticket

    async def _run(
        self, job: PreparedJob, reply: _Reply, is_disconnected: Callable[[], Awaitable[bool]]
    ) -> tuple[GenerationResult, float]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[GenerationResult] = loop.create_future()
        started = time.monotonic()
        deadline = started + self.limits.request_timeout_s
        ticket = self._submit(
            job, reply, lambda r: loop.call_soon_threadsafe(_settle, done, r),
            lambda e: loop.call_soon_threadsafe(_fail, done, e),
            # A stop string ends the row when its text appears, not at the end of the budget.
            live=bool(job.stops),
        )
        try:
            while True:
                try:
                    result = await asyncio.wait_for(asyncio.shield(done), timeout=0.25)
                    return result, time.monotonic() - started
                except TimeoutError:
                    if await is_disconnected():
                        raise ClientGone() from None
                    if time.monotonic() > deadline:
                        raise RequestError(
                            504, f"the request did not finish within the server's deadline "
                            f"({self.limits.request_timeout_s:g} s); stream it, or ask for "
                            "fewer tokens", kind="timeout_error") from None
        except DecodeFailed:
            raise RequestError(503, GENERATION_FAILED, kind="server_error") from None
        finally:
            if not done.done():  # the client left, the deadline passed, or this was cancelled
                ticket.cancelled = True

    async def _events(self, job: PreparedJob, reply: _Reply, ticket: Ticket,
                      events: asyncio.Queue[tuple[str, Any]], *, chat: bool,
                      include_usage: bool) -> AsyncIterator[str]:
        started = time.monotonic()
        chunk_id = new_id("chatcmpl" if chat else "cmpl")
        finished = False
        first = True
        try:
            if chat:
                yield _sse(ChatCompletionChunk(id=chunk_id, model=job.model_name, choices=[
                    ChunkChoice(delta=Delta(role="assistant", content=""))]))
            while True:
                kind, payload = await events.get()
                if kind == "error":  # generation failed: end the stream, say so
                    yield _sse_error(GENERATION_FAILED)
                    return
                if kind == "text":
                    if first:
                        self.metrics.first_token.observe(time.monotonic() - started)
                        first = False
                    yield self._chunk(chunk_id, job, chat, *payload)
                    continue
                result: GenerationResult = payload
                finished = True
                rest = reply.answer.flush()
                if rest:
                    yield self._chunk(chunk_id, job, chat, Section.ANSWER, rest)
                reason = reply.finish_reason(result)
                usage = self._usage(job, result, reply)
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
                        CompletionChoice(text="", finish_reason=reason,
                                         stop_reason=reply.stop_reason(result))],
                        usage=usage if include_usage else None))
                yield "data: [DONE]\n\n"
                return
        finally:
            if not finished:  # the client left mid-stream: free its batch slot
                ticket.cancelled = True

    def _chunk(self, chunk_id: str, job: PreparedJob, chat: bool, section: str,
               piece: str) -> str:
        if not chat:
            return _sse(CompletionResponse(id=chunk_id, model=job.model_name, choices=[
                CompletionChoice(text=piece, finish_reason=None)]))
        delta = (Delta(reasoning=piece, reasoning_content=piece) if section == Section.THINKING
                 else Delta(content=piece))
        return _sse(ChatCompletionChunk(id=chunk_id, model=job.model_name,
                                        choices=[ChunkChoice(delta=delta)]))

    def _usage(self, job: PreparedJob, result: GenerationResult, reply: _Reply) -> Usage:
        completion = len(reply.token_ids(result))
        thinking = min(result.thinking_tokens, completion)
        self.metrics.count_tokens(job.prompt_tokens, thinking, completion - thinking)
        price = self.metrics.dollars_per_million(self.engine.busy_now()) or 0.0
        return Usage(
            prompt_tokens=job.prompt_tokens,
            completion_tokens=completion,
            total_tokens=job.prompt_tokens + completion,
            completion_tokens_details=ReasoningTokens(reasoning_tokens=thinking),
            cost=round(completion * price / 1e6, 10),
        )


@dataclass
class _Reply:
    """One request's text as its tokens are decided, in the decode thread.

    Chat keeps the thinking and the answer apart; a raw completion's text is everything it
    generated. Stop strings apply to the answer (to all of a plain continuation); the first one
    found ends the row at once. `on_text(section, piece)`, when given, streams the text.
    """

    format: ReasoningFormat
    job: PreparedJob
    on_text: Callable[[str, str], None] | None = None
    ticket: Ticket | None = None
    thinking: TextStream = field(init=False)
    answer: TextStream = field(init=False)  # a raw completion's whole text
    stopped_on: str | None = None
    _tokens: int = 0

    def __post_init__(self) -> None:
        tokenizer, job = self.format.tokenizer, self.job
        self.thinking = TextStream(tokenizer)
        self.answer = TextStream(tokenizer, job.stops if job.continuation or not job.raw else (),
                                 skip_special_tokens=job.skip_special_tokens,
                                 include_stop=job.include_stop)
        self._ends = (set(job.continuation.stop_token_ids) | (
            set() if job.continuation.ignore_eos else self.format.end_of_turn_ids)
            if job.continuation else self.format.end_of_turn_ids)
        self.lock = threading.Lock()

    def on_token(self, token_id: int, section: str, forced: bool) -> None:
        with self.lock:
            if self.stopped_on is not None:
                return  # the row ends at its next step; nothing after the stop counts
            self._tokens += 1
            if self.job.raw:
                if section == Section.ANSWER and self.job.stops and not self.answer.watching:
                    self.answer.watch(self.job.stops)  # a forced reply stops in its answer
                if token_id in self._ends and section == Section.ANSWER and (
                        not self.job.include_stop):
                    return  # the token that ends the row is not text, as in vLLM
                self._emit(Section.ANSWER, self.answer.add(token_id))
            elif section == Section.THINKING:
                self._emit(section, self.thinking.add(token_id))
            elif section == Section.ANSWER:
                self._emit(section, self.answer.add(token_id))
            if self.answer.stopped_on is not None:
                self.stopped_on = self.answer.stopped_on
                if self.ticket is not None:
                    self.ticket.ended_by_stop = True
                    self.ticket.cancelled = True

    def _emit(self, section: str, piece: str) -> None:
        if piece and self.on_text is not None:
            self.on_text(str(section), piece)

    def token_ids(self, result: GenerationResult) -> list[int]:
        """The generated ids that count: those up to the stop string, when one was found."""
        return result.token_ids[: self._tokens] if self.stopped_on else result.token_ids

    def finish_reason(self, result: GenerationResult) -> str:
        return "stop" if self.stopped_on else FINISH.get(result.finish_reason, "stop")

    def stop_reason(self, result: GenerationResult) -> int | str | None:
        if self.stopped_on:
            return self.stopped_on
        last = result.token_ids[-1] if result.token_ids else None
        return last if result.finish_reason == "end_of_turn" else None


class _ThrottledLog:
    """At most one warning per `every_s`; the ones left out are counted in the next."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last = float("-inf")
        self._skipped = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: Any) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.every_s:
                self._skipped += 1
                return
            skipped, self._skipped, self._last = self._skipped, 0, now
        suffix = f" ({skipped} similar warnings left out)" if skipped else ""
        logger.warning(message + suffix, *args)


def _cancel(ticket: Ticket) -> None:
    ticket.cancelled = True


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class DecodeFailed(Exception):
    """The decode loop stopped while this request was in flight."""


def _log_and_put(events: asyncio.Queue[Any], error: BaseException) -> None:
    logger.error("generation failed: %r", error)
    events.put_nowait(("error", error))


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    # The client hears only that it failed (the error may name internal addresses); the
    # operator's log has the error itself.
    logger.error("generation failed: %r", error)
    if not future.done():
        future.set_exception(DecodeFailed(repr(error)))


def _sse_error(message: str) -> str:
    body = {"error": {"message": message, "type": "server_error",
                      "code": "service_unavailable"}}
    return f"data: {json.dumps(body)}\n\n"


def include_usage(request: BudgetFields) -> bool:
    return bool(request.stream_options and request.stream_options.include_usage)


def _sse(model: Any) -> str:
    return f"data: {json.dumps(dump(model), ensure_ascii=False)}\n\n"
