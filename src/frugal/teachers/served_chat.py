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
slot busy, each writing the whole output limit, with room to spare), and a request that runs
past it fails its question instead of being retried; re-running distill asks it again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import httpx

from frugal.endpoint_config import EndpointConfig
from frugal.questions import Question
from frugal.settings.teachers import OpenAITeacherConfig
from frugal.teachers.base import Completion, ResponseSink, TeacherResponse
from frugal.teachers.local import HFTeacher
from frugal.teachers.openai_teacher import OpenAITeacher

PROBE_TOKENS = 32  # tokens the speed probe writes
SLACK = 2.0  # a request may take this many times its measured worst case
SETTLE_SECONDS = 60.0  # and this long besides: prompt processing, a busy machine


def request_timeout(seconds_per_token: float, output_tokens: int, slots: int) -> float:
    """Seconds a request may take: every slot writing its whole output limit at the measured
    one-stream speed (batching only makes it faster), times the slack, plus settling time."""
    return SLACK * seconds_per_token * output_tokens * slots + SETTLE_SECONDS


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
        placeholder = EndpointConfig(base_url="http://unused/v1", model=self.model)
        return OpenAITeacher(self._chat_config(placeholder, 1.0)).completions(response)

    def run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        with ExitStack() as resources:
            endpoint = self._served(resources)
            limit = self.config.budget.max_thinking_tokens + self.config.budget.max_answer_tokens
            if isinstance(self.config.engine, str):  # started here: its speed sets the limit
                per_token = measure_seconds_per_token(endpoint)
                timeout = request_timeout(per_token, limit, endpoint.concurrency)
                sink.notice(f"{self.model} on llama.cpp: {1 / per_token:.1f} tokens/s on one "
                            f"stream, {endpoint.concurrency} slots; each request may take up to "
                            f"{timeout:.0f} s ({limit} tokens at most), and is not asked again "
                            "while it runs")
            else:
                timeout = self.config.engine.timeout if self.config.engine else 600.0
            OpenAITeacher(self._chat_config(endpoint, timeout)).run(questions, sink)

    def _served(self, resources: ExitStack) -> EndpointConfig:
        engine = self.config.engine
        if isinstance(engine, EndpointConfig):
            return engine
        if engine != "llama.cpp":
            raise ValueError(
                "distill.local.style chat asks the model through a chat-completions server: set "
                "distill.local.engine to llama.cpp (started here) or to a server's URL")
        from frugal.engine_servers import PROMPT_TOKENS_BOUND, context_length, managed_endpoint

        budget = self.config.budget
        endpoint = resources.enter_context(managed_endpoint(
            "llama.cpp", self.config.model, {}, dtype="auto", llama_cpp=self.config.llama_cpp,
            context_tokens=context_length(PROMPT_TOKENS_BOUND, budget.max_thinking_tokens,
                                          budget.max_answer_tokens)))
        return endpoint


def measure_seconds_per_token(endpoint: EndpointConfig) -> float:
    """Seconds per written token of one request alone on the server (prompt included)."""
    body = {"model": endpoint.model, "max_tokens": PROBE_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": "Count from 1 to 100, one per line."}]}
    url = endpoint.base_url.rstrip("/") + "/chat/completions"
    with httpx.Client(timeout=600.0) as client:
        client.post(url, json={**body, "max_tokens": 1}).raise_for_status()  # warm-up
        started = time.perf_counter()
        reply = client.post(url, json=body)
        reply.raise_for_status()
        elapsed = time.perf_counter() - started
    written = reply.json().get("usage", {}).get("completion_tokens") or PROBE_TOKENS
    return elapsed / max(1, written)
