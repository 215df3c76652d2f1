"""The teachers' settings: an OpenAI-compatible API, or a local model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from frugal.endpoint_config import EngineSetting
from frugal.settings import DEFAULT_MODEL
from frugal.settings.budget import BudgetConfig
from frugal.settings.engines import LlamaCppSection

# Sent when the key's variable is unset: vLLM, Ollama and llama.cpp accept any key.
PLACEHOLDER_KEY = "EMPTY"

CHAT_NEEDS_A_SERVER = (
    "local.style chat asks the model through a chat-completions server, which frugal's local "
    "engine is not. Fix: set local.engine (--local-engine) to llama.cpp or vllm (started for "
    "the distillation) or to a server's URL")

# Where a reply's reasoning is read from (frugal.teachers.thinking): per reply, or one place.
ThinkingSource = Literal["auto", "field", "tags", "content"]


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
    max_consecutive_failures: int = Field(
        default=20,
        ge=1,
        description="Run-wide breaker: stop every call after this many failed attempts in a "
        "row, across all questions (a dead or misconfigured endpoint, a max_tokens too low).",
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
    thinking_source: ThinkingSource = Field(
        "auto",
        description="Where each reply's reasoning is read from: field (reasoning_content / "
        "reasoning), tags (a <think> block), content (the chain of thought before the reply's "
        "final-answer line, for chat models without a reasoning channel), or auto: the first "
        "of these a reply has. Changing it re-splits the cached replies without a new call.",
    )

    @field_validator("extra_body")
    @classmethod
    def _no_cost_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The cost cap reserves max_tokens for one completion; these would change that.
        refused = sorted({"max_tokens", "max_completion_tokens", "n"} & set(value))
        if refused:
            raise ValueError(
                f"extra_body may not set {', '.join(refused)}: the cost cap reserves each "
                "call's worst case from max_tokens and one completion. Fix: set max_tokens "
                "(and max_tokens_param) instead"
            )
        return value


class LocalTeacherConfig(BaseModel):
    """A local model answering through the budget-forcing engine."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Model spec (alias, dir, .gguf, id).")
    budget: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(max_thinking_tokens=256, max_answer_tokens=64),
        description="Thinking budget and sampling of each answer.",
    )
    style: Literal["budget", "chat"] = Field(
        "budget", description="budget: frugal's thinking section with budget forcing (a model "
        "taught frugal's format, such as the student itself); chat: the model's own chat "
        "format, its chain of thought before its final-answer line read as the thinking (an "
        "instruct model as the hf teacher; needs engine llama.cpp or a server's URL).",
    )
    batch_size: int = Field(8, ge=1, description="Rows decoded together.")
    samples: int = Field(4, ge=1, description="Answers per question (self teacher only).")
    engine: EngineSetting = Field(
        None, description="A completions server serving `model` (vLLM, llama.cpp's server), "
        "or vllm / llama.cpp started for the distillation; None: the local engine.",
    )
    llama_cpp: LlamaCppSection
