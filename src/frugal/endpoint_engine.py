"""Budget forcing on any OpenAI-compatible completions server (vLLM, SGLang, llama.cpp, frugal).

The server generates; this client keeps frugal's exact budget-forcing semantics, the way s1's own
code drives vLLM, but on token ids so nothing is re-tokenised differently:

1. Thinking: ask for up to the remaining thinking budget, stopping at the end-of-thinking marker
   token and the end-of-turn tokens (`stop_token_ids`).
2. When the model stops before `min_thinking_tokens`, or before `num_waits` Waits, drop its marker,
   append the Wait tokens (forced) to the ids so far and continue. The server's prefix cache
   makes each continuation cost only the new tokens.
3. At the cap, append the end-of-thinking delimiter and the answer prefix (forced); when the model
   closed its thinking itself, keep its marker and force the rest of the delimiter; when it ended
   its turn inside thinking, force the delimiter and the prefix so it still answers.
4. The answer: up to the remaining answer budget, stopping at the end of turn.

Results carry the local engine's fields (`GenerationResult`: thinking and answer tokens, Waits,
forced maximum, which tokens were forced). Many rows are in flight at once so the server batches
them; a live row (a streaming client, or stop strings) asks for a few tokens at a time, so its
client sees them as they come; any other row asks for a whole section per request.
Requests use `prompt` as a list of token ids and `return_token_ids` (vLLM), or llama.cpp's
native `/completion` (detected; see `_llama_cpp_completion`); a server that
returns only text is read by re-encoding that text, which the result says in `finish_reason`
only when it matters (never for vLLM). Formats whose end-of-thinking marker is plain text (no
single token) are not supported here: their marker cannot be a token-level stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from frugal.endpoint_config import EndpointConfig
from frugal.generation import (
    Engine,
    GenerationResult,
    Job,
    JobSource,
    Section,
    continuation_end_ids,
)
from frugal.reasoning_format import ReasoningFormat
from frugal.settings.teachers import PLACEHOLDER_KEY

BASE_ADAPTER = "__base__"  # what the serving layer names "no adapter" (PEFT's name)
CANCEL_POLL_S = 0.1  # how often a row in flight checks whether its client is still there
HTTP_ATTEMPTS = 3  # a request the server closed without answering is sent again, this often
STREAM_CHUNK = 8  # tokens per request of a live row
# The connection closed under a request (not a timeout): reset, or closed before any answer.
_CONNECTION_LOST = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass
class _Row:
    """One job's state between requests."""

    job: Job
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    thinking_tokens: int = 0
    answer_tokens: int = 0
    waits: int = 0
    forced_max: bool = False
    finish_reason: str = "length"
    requests: int = 0

    def add(self, ids: Sequence[int], section: Section, forced: bool) -> None:
        if self.job.on_token is not None:  # streaming: each token as soon as it is known
            for token_id in ids:
                self.job.on_token(token_id, section, forced)
        self.token_ids.extend(ids)
        self.forced.extend([forced] * len(ids))
        self.sections.extend([section] * len(ids))
        if section == Section.THINKING:
            self.thinking_tokens += len(ids)
        elif section == Section.ANSWER:
            self.answer_tokens += len(ids)


class EndpointEngine(Engine):
    """Budget-forced generation through a completions server; the tokenizer stays local."""

    def __init__(self, config: EndpointConfig, tokenizer: Any,
                 fmt: ReasoningFormat | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.format = fmt or ReasoningFormat.for_tokenizer(tokenizer)
        stop_id = self.format.stop_token_id
        if stop_id is None:
            raise ValueError(
                f"the {self.format.kind} reasoning format ends thinking with the text "
                f"{self.format.think_end_stop!r}, not one token, so a completions server cannot "
                "stop on it exactly. Fix: use the local engine for this model."
            )
        self._stop_id = stop_id
        self._end_ids = sorted(self.format.end_of_turn_ids)
        self._think_end_ids = self.format.encode(self.format.think_end)
        # After the model's own marker token, the rest of the delimiter ("answer\n" in s1's).
        rest = self.format.think_end.split(self.format.think_end_stop, 1)[1]
        self._rest_ids = self.format.encode(rest) if rest else []

    # -- the engine interface --------------------------------------------------------------

    def run_jobs(
        self,
        source: JobSource,
        batch_size: int,
        finish: Callable[[GenerationResult], None],
        logits_processor: Any = None,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Run every job `source` hands out, up to `concurrency` (at least `batch_size`) in
        flight, calling `finish` with each result as it ends; returns when the source is
        exhausted and every row has finished. A server's endless queue works as a source."""
        if logits_processor:
            raise ValueError("logits processors run inside the local engine only")
        asyncio.run(self._run_source(source, max(batch_size, self.config.concurrency), finish))

    # -- internals ---------------------------------------------------------------------------

    async def _run_source(self, source: JobSource, concurrency: int,
                          finish: Callable[[GenerationResult], None]) -> None:
        semaphore = asyncio.Semaphore(concurrency)
        gate = _AdapterGate()
        key = os.environ.get(self.config.api_key_env) or PLACEHOLDER_KEY
        running: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []  # rows that failed with nobody to tell but the run

        def settled(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if not task.cancelled() and task.exception() is not None:
                failures.append(task.exception())  # type: ignore[arg-type]

        async with _Clients(self.config, key) as client:
            await client.detect_api()

            async def one(job: Job) -> None:
                tuned = _served_adapter(job) is not None
                # Separate servers per adapter (llama.cpp) cannot mix base and LoRA rows.
                gated = client.api != "llama.cpp"
                async with semaphore:
                    if gated:
                        await gate.enter(tuned)
                    try:
                        result = await self._run_row(client, job)
                    except Exception as error:
                        if job.on_error is None:
                            raise
                        job.on_error(error)  # this row alone fails; the others go on
                        return
                    finally:
                        if gated:
                            await gate.leave()
                finish(result)

            try:
                while not source.exhausted() and not failures:
                    free = concurrency - len(running)
                    if free <= 0:  # jobs stay in the source (a server's bounded queue) meanwhile
                        await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
                        continue
                    # The source may block (a server's queue waits for requests): off the loop,
                    # so the rows in flight keep going.
                    for job in await asyncio.to_thread(source.take, free, idle=True):
                        task = asyncio.create_task(one(job))
                        running.add(task)
                        task.add_done_callback(settled)
                while running and not failures:
                    await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
                if failures:
                    raise failures[0]
            except BaseException:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                raise

    async def _run_row(self, client: _Clients, job: Job) -> GenerationResult:
        row = _Row(job, job.prompt_ids or self.format.encode(job.prompt))
        try:
            if job.continuation is not None:
                await self._continue(client, row)
            else:
                await self._drive(client, row)
        except _Cancelled:
            row.finish_reason = "cancelled"
        return self.result_of(row)

    async def _drive(self, client: _Clients, row: _Row) -> None:
        budget = row.job.budget
        wait_ids = self.format.encode(budget.wait_text)
        prefix_ids = self.format.encode(budget.answer_prefix) if budget.answer_prefix else []
        # Thinking, with Waits until the model may stop or the cap forces the answer.
        while True:
            remaining = budget.max_thinking_tokens - row.thinking_tokens
            if remaining <= 0:
                self._force_answer_start(row, prefix_ids)
                break
            ids, stopped_on = await self._complete(
                client, row, remaining, [self._stop_id, *self._end_ids]
            )
            row.add(ids, Section.THINKING, forced=False)
            if stopped_on is None:  # the budget (or a live row's chunk) ran out mid-thought
                if not ids:  # asking again would get nothing again, forever
                    raise EndpointError("the server generated no token and no stop")
                continue
            if row.thinking_tokens < budget.min_thinking_tokens or row.waits < budget.num_waits:
                row.waits += 1
                # The cap beats a half-inserted Wait, as in the local engine.
                room = budget.max_thinking_tokens - row.thinking_tokens
                row.add(wait_ids[:room], Section.THINKING, forced=True)
                continue
            if stopped_on == self._stop_id:  # the model closed its thinking itself
                row.add([stopped_on], Section.DELIMITER, forced=False)
                row.add(self._rest_ids, Section.DELIMITER, forced=True)
            else:  # it ended its turn inside thinking: open the answer so it still answers
                row.add(self._think_end_ids, Section.DELIMITER, forced=True)
                row.add(prefix_ids[: budget.max_answer_tokens], Section.ANSWER, forced=True)
            break
        # The answer.
        remaining = budget.max_answer_tokens - row.answer_tokens
        if remaining <= 0:
            row.finish_reason = "max_answer_tokens"
        else:
            await self._answer(client, row, remaining, self._end_ids)

    async def _continue(self, client: _Clients, row: _Row) -> None:
        """A plain continuation (no forcing): one request, ending at the job's stops."""
        stops = sorted(continuation_end_ids(row.job, set(self._end_ids)))
        await self._answer(client, row, row.job.budget.max_answer_tokens, stops)

    async def _answer(self, client: _Clients, row: _Row, max_tokens: int,
                      stops: list[int]) -> None:
        """Generate the rest of the row as its answer, up to `max_tokens` or a stop token."""
        while True:
            ids, stopped_on = await self._complete(client, row, max_tokens, stops)
            row.add(ids, Section.ANSWER, forced=False)
            max_tokens -= len(ids)
            if stopped_on is not None:
                row.add([stopped_on], Section.ANSWER, forced=False)
                row.finish_reason = "end_of_turn"
                return
            if max_tokens <= 0 or not ids:
                row.finish_reason = "max_answer_tokens"
                return

    def _force_answer_start(self, row: _Row, prefix_ids: list[int]) -> None:
        row.forced_max = True
        row.add(self._think_end_ids, Section.DELIMITER, forced=True)
        row.add(prefix_ids[: row.job.budget.max_answer_tokens], Section.ANSWER, forced=True)

    async def _complete(
        self, client: _Clients, row: _Row, max_tokens: int, stop_ids: list[int]
    ) -> tuple[list[int], int | None]:
        """Continue the row by up to `max_tokens` (a live row: up to STREAM_CHUNK, so its
        client gets tokens while they are generated; the callers ask again for the rest);
        (new ids without the stop token, the stop token it ended on or None when it did not
        stop). Streaming by short requests rather than the servers' own streams: llama.cpp's
        leaves out the ids of tokens that end inside a UTF-8 character, and the prefix cache
        makes each request cost only its new tokens."""
        budget = row.job.budget
        if row.job.cancelled is not None and row.job.cancelled():
            raise _Cancelled  # the client left: nothing more is asked of the server
        row.requests += 1
        seed = None
        if budget.temperature > 0:
            seed = row.job.seed if row.job.seed is not None else budget.seed * 1_000_003
            seed = (seed + row.requests) % (2**31)
        model = _served_adapter(row.job) or self.config.model
        prompt = row.prompt_ids + row.token_ids
        if row.job.live:  # every request costs a round trip, so only where tokens are awaited
            max_tokens = min(max_tokens, STREAM_CHUNK)
        complete = (self._llama_cpp_completion if client.api == "llama.cpp"
                    else self._openai_completion)
        request = asyncio.ensure_future(
            complete(client, model, prompt, max_tokens, stop_ids, budget, seed))
        ids, stopped_on = await self._unless_cancelled(request, row.job)
        # The stop token, where a server returns it, or writes past it: cut there.
        cut = next((i for i, t in enumerate(ids) if t in stop_ids), None)
        if cut is not None:
            return ids[:cut], ids[cut]
        return ids, stopped_on

    async def _openai_completion(
        self, client: _Clients, model: str, prompt: list[int], max_tokens: int,
        stop_ids: list[int], budget: Any, seed: int | None,
    ) -> tuple[list[int], int | None]:
        """One request to /v1/completions with vLLM's token-id fields."""
        extra: dict[str, Any] = {
            "stop_token_ids": stop_ids,
            # Only the format's own markers end a section, as in the local engine: a model's
            # extra EOS ids (generation_config) would otherwise stop it where frugal does not.
            "ignore_eos": True,
            "skip_special_tokens": False,
            "include_stop_str_in_output": True,
            "return_token_ids": True,
        }
        sampling: dict[str, Any] = {"temperature": budget.temperature}
        if seed is not None:
            sampling |= {"top_p": budget.top_p, "seed": seed}
        reply = await client.openai_for(self.config.url_for(model)).completions.create(
            model=model, prompt=prompt, max_tokens=max_tokens, extra_body=extra, **sampling)
        choice = reply.choices[0]
        ids = self._generated_ids(choice)
        if choice.finish_reason != "stop":
            return ids, None
        reason = (choice.model_extra or {}).get("stop_reason")
        if isinstance(reason, int) and reason in stop_ids:
            return ids, reason
        # EOS, which the server reports without a stop reason.
        return ids, self._end_ids[0] if self._end_ids else self._stop_id

    async def _llama_cpp_completion(
        self, client: _Clients, model: str, prompt: list[int], max_tokens: int,
        stop_ids: list[int], budget: Any, seed: int | None,
    ) -> tuple[list[int], int | None]:
        """One request to llama.cpp's native /completion. It has no stop token ids: each stop
        token is rendered as its text (`preserved_tokens`) and stopped on as that text (the
        caller cuts at the token; the same text spelled in plain tokens does not end a section,
        as in the local engine, so generation goes on); the end of turn also ends generation
        as llama.cpp's end-of-generation tokens (so EOS is not ignored: llama.cpp's
        `ignore_eos` would forbid those tokens, not only not stop on them)."""
        if model != self.config.model and model not in self.config.model_urls:
            raise EndpointError(
                f"adapter {model!r}: llama.cpp's server at {self.config.base_url} serves one "
                "model, so adapters need a server each. Fix: use --engine llama.cpp, which "
                "starts them, or run it on the merged model (frugal export --gguf).")
        texts = [self.tokenizer.convert_ids_to_tokens(t) for t in stop_ids]
        body: dict[str, Any] = {
            "prompt": prompt, "n_predict": max_tokens, "return_tokens": True,
            "cache_prompt": True, "stop": texts, "preserved_tokens": texts,
            "temperature": budget.temperature,
            # Sampling as frugal's engine does it: nucleus only, none of llama.cpp's defaults.
            # Greedy is top-1: with top_k 0 llama.cpp sorts the whole vocabulary for every
            # token of every slot (measured: 259-261 against 290-292 tok/s at 16 slots).
            "top_p": budget.top_p, "top_k": 1 if budget.temperature == 0 else 0,
            "min_p": 0.0, "repeat_penalty": 1.0,
        }
        if seed is not None:
            body["seed"] = seed
        url = self.config.url_for(model).removesuffix("/").removesuffix("/v1") + "/completion"
        reply = await self._llama_cpp_post(client, url, body)
        ids = [int(t) for t in reply.get("tokens") or []]
        if reply.get("stop_type") == "eos" and not set(ids) & set(stop_ids):
            # An end-of-generation token llama.cpp knows but the format does not name.
            return ids, self._end_ids[0] if self._end_ids else self._stop_id
        return ids, None

    async def _llama_cpp_post(self, client: _Clients, url: str,
                              body: dict[str, Any]) -> dict[str, Any]:
        """One /completion request, sent again when the connection is lost before any answer:
        llama.cpp's HTTP server closes idle keep-alive connections, and a request sent on one
        as it closes gets no answer at all, so nothing was generated for it."""
        for attempt in range(1, HTTP_ATTEMPTS + 1):
            try:
                response = await client.http.post(url, json=body)
            except _CONNECTION_LOST as error:
                if attempt == HTTP_ATTEMPTS:
                    raise EndpointError(f"llama.cpp's server at {url} closed the connection "
                                        f"{attempt} times without answering ({error!r})") \
                        from error
                continue
            if response.status_code != 200:
                raise EndpointError(f"llama.cpp's server answered {response.status_code} at "
                                    f"{url}: {response.text[:500]}")
            reply = response.json()
            if not isinstance(reply, dict) or "error" in reply:
                raise EndpointError(f"llama.cpp's server at {url} answered {str(reply)[:500]}")
            return reply
        raise AssertionError("unreachable")

    @staticmethod
    async def _unless_cancelled(request: asyncio.Future[Any], job: Job) -> Any:
        """The request's reply; if the job's client leaves meanwhile, the request is abandoned
        (its connection closed, so a server that aborts on disconnect stops generating) and the
        row ends."""
        if job.cancelled is None:
            return await request
        while True:
            done, _ = await asyncio.wait({request}, timeout=CANCEL_POLL_S)
            if done:
                return request.result()
            if job.cancelled():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
                raise _Cancelled

    def _generated_ids(self, choice: Any) -> list[int]:
        token_ids = (choice.model_extra or {}).get("token_ids")
        if isinstance(token_ids, list):
            return [int(t) for t in token_ids]
        # A server without token ids: read its text back, the only thing it gives.
        return self.format.encode(choice.text or "")


class _Cancelled(Exception):
    """The row's client went away."""


class EndpointError(RuntimeError):
    """The server refused a request or answered in a way the engine cannot read."""


class _Clients:
    """The HTTP clients of one run: an openai client per server URL (several when each
    adapter has a server of its own), a plain one for llama.cpp's native API, and which API
    the servers speak."""

    def __init__(self, config: EndpointConfig, key: str) -> None:
        self.config = config
        self.key = key
        self.api = config.api
        self._openai: dict[str, openai.AsyncOpenAI] = {}
        headers = {"Authorization": f"Bearer {key}"}
        self.http = httpx.AsyncClient(timeout=config.timeout, headers=headers,
                                      limits=httpx.Limits(max_connections=None))

    def openai_for(self, url: str) -> openai.AsyncOpenAI:
        if url not in self._openai:
            self._openai[url] = openai.AsyncOpenAI(base_url=url, api_key=self.key,
                                                   timeout=self.config.timeout, max_retries=2)
        return self._openai[url]

    async def detect_api(self) -> None:
        """llama.cpp's server answers /props with its generation settings; vLLM, SGLang and
        frugal's own server do not have it and speak the OpenAI API with token-id fields."""
        if self.api != "auto":
            return
        root = self.config.base_url.removesuffix("/").removesuffix("/v1")
        try:
            reply = await self.http.get(root + "/props", timeout=10)
            props = reply.json() if reply.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            props = {}
        is_llama_cpp = isinstance(props, dict) and "default_generation_settings" in props
        self.api = "llama.cpp" if is_llama_cpp else "openai"

    async def __aenter__(self) -> _Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._openai.values():
            await client.close()
        await self.http.aclose()


def _served_adapter(job: Job) -> str | None:
    """The adapter a job asks the server for by name; None for the base model."""
    return None if job.adapter in (None, BASE_ADAPTER) else job.adapter


class _AdapterGate:
    """Keeps base-model rows and adapter rows out of each other's server batches.

    vLLM's CPU build (0.32) computed base-model requests batched with LoRA requests with the
    LoRA applied (measured in tests/test_vllm.py), so rows in flight are all of one kind;
    adapters mix with each other. A kind that is waiting stops new rows of the other kind from
    entering, so neither starves.
    """

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        self._tuned = False
        self._in_flight = 0
        self._waiting = {True: 0, False: 0}

    async def enter(self, tuned: bool) -> None:
        async with self._changed:
            self._waiting[tuned] += 1
            await self._changed.wait_for(lambda: self._in_flight == 0 or (
                self._tuned == tuned and not self._waiting[not tuned]))
            self._waiting[tuned] -= 1
            self._tuned = tuned
            self._in_flight += 1

    async def leave(self) -> None:
        async with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()
