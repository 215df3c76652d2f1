"""A local instruct model as a teacher, answering in its own chat format on a served engine.

`distill.local.style: chat` is for models that were never taught frugal's thinking section
(every instruct model: Qwen2.5-Coder, SmolLM2): asked through their own chat template, they write
their chain of thought and then a final-answer line, which `frugal.teachers.thinking` splits
into thinking and answer. The model runs on llama.cpp's server, started here (`engine:
llama.cpp`: a GGUF model is served from its file as it is) or already running (`engine: URL`),
and is asked through the OpenAI teacher's machinery (its chat-completions endpoint, the cache,
every reply stored whole), at no token price: the ledger charges its machine time.

A server started here is never asked a question again while it may still be answering it: the
time limit of a request follows the speed measured on that server right after it starts (every
slot busy: one slot's share of it, writing the whole output limit, twice over, plus a minute),
and a request that runs past it fails its question instead of being retried; re-running distill
asks it again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import httpx

from frugal.endpoint_config import EndpointConfig
from frugal.questions import Question
from frugal.settings.teachers import CHAT_NEEDS_A_SERVER, OpenAITeacherConfig
from frugal.teachers.base import Completion, ResponseSink, TeacherResponse
from frugal.teachers.local import HFTeacher
from frugal.teachers.openai_teacher import OpenAITeacher, completions_of

PROBE_TOKENS = 32  # tokens each request of the speed probe writes
SLACK = 2.0  # a request may take this many times its measured duration
SETTLE_SECONDS = 60.0  # and this long besides: prompt processing, a busy machine


def request_timeout(tokens_per_second: float, slots: int, output_tokens: int) -> float:
    """Seconds a request may take: its whole output limit at one slot's share of the speed
    measured with every slot busy, times the slack, plus settling time."""
    return SLACK * output_tokens * slots / tokens_per_second + SETTLE_SECONDS


class ServedChatTeacher(HFTeacher):
    """The `hf` teacher with `style: chat`: the model's own chat answers from a served engine."""

    kind = "hf"

    def cache_params(self) -> dict[str, Any]:
        return {**super().cache_params(), "style": "chat"}

    def _chat_config(self, endpoint: EndpointConfig, timeout: float) -> OpenAITeacherConfig:
        budget = self.config.budget
        return OpenAITeacherConfig(
            base_url=endpoint.base_url, model=endpoint.model, api_key_env=endpoint.api_key_env,
            concurrency=endpoint.concurrency, timeout=timeout, max_retries=0,
            temperature=budget.temperature,
            max_tokens=budget.max_thinking_tokens + budget.max_answer_tokens,
            thinking_source="auto")

    def completions(self, response: TeacherResponse) -> list[Completion]:
        return completions_of(response, "auto")

    def run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        with ExitStack() as resources:
            endpoint = self._served(resources)
            limit = self.config.budget.max_thinking_tokens + self.config.budget.max_answer_tokens
            engine = self.config.engine
            if isinstance(engine, EndpointConfig):  # someone else's server: its own setting
                timeout = engine.timeout
            else:  # started here: its measured speed sets the limit
                slots = endpoint.concurrency
                speed = measure_tokens_per_second(endpoint, slots)
                timeout = request_timeout(speed, slots, limit)
                sink.notice(f"{self.model} on {engine}: {speed:.1f} tokens/s with its {slots} "
                            f"slots busy; each request may take up to {timeout:.0f} s ({limit} "
                            "tokens at most), and is not asked again while it runs")
            OpenAITeacher(self._chat_config(endpoint, timeout)).run(questions, sink)

    def _served(self, resources: ExitStack) -> EndpointConfig:
        engine = self.config.engine
        if isinstance(engine, EndpointConfig):
            return engine
        if engine is None:  # refused by DistillConfig; kept for a config built another way
            raise ValueError(CHAT_NEEDS_A_SERVER)
        from frugal.engine_servers import PROMPT_TOKENS_BOUND, context_length, managed_endpoint

        budget = self.config.budget
        endpoint = resources.enter_context(managed_endpoint(
            engine, self.config.model, {}, dtype="auto", llama_cpp=self.config.llama_cpp,
            context_tokens=context_length(PROMPT_TOKENS_BOUND, budget.max_thinking_tokens,
                                          budget.max_answer_tokens)))
        return endpoint


def measure_tokens_per_second(endpoint: EndpointConfig, streams: int) -> float:
    """Tokens per second the server writes with `streams` requests at once (prompts included
    in the time, as in a teacher's requests)."""
    body = {"model": endpoint.model, "max_tokens": PROBE_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 100, one per line."}]}
    url = endpoint.base_url.rstrip("/") + "/chat/completions"

    async def probe() -> float:
        async with httpx.AsyncClient(timeout=600.0) as client:
            (await client.post(url, json={**body, "max_tokens": 1})).raise_for_status()  # warm
            started = time.perf_counter()
            replies = await asyncio.gather(*(client.post(url, json=body)
                                             for _ in range(streams)))
            elapsed = time.perf_counter() - started
        written = 0
        for reply in replies:
            reply.raise_for_status()
            written += reply.json().get("usage", {}).get("completion_tokens") or PROBE_TOKENS
        return written / elapsed

    return asyncio.run(probe())
