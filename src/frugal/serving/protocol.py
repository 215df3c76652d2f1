"""Request and response models of the OpenAI API subset frugal serves, in OpenAI field order.

Budget forcing rides on extra body fields (`max_thinking_tokens`, `min_thinking_tokens`,
`num_waits`, and vLLM's `thinking_token_budget` as an alias of the maximum); the thinking comes
back in `reasoning` (vLLM's name since 2026) and `reasoning_content` (DeepSeek's, and vLLM's
before), and `usage` carries the reasoning tokens and the request's cost in dollars. The
completions endpoint takes vLLM's fields for driving a model token by token (`prompt` as token
ids, `stop_token_ids`, `ignore_eos`, `return_token_ids`, ...). OpenAI fields frugal cannot
honour are refused by name (`UNSUPPORTED`) unless they carry their neutral value; fields no API
defines are kept aside so the server can log and ignore them instead of failing.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Requests may carry fields of newer API versions; they are logged and ignored.
_LENIENT = ConfigDict(extra="allow")
MAX_STOPS = 16
MAX_STOP_CHARS = 256


# OpenAI request fields frugal's server cannot honour, with the values that ask nothing of it.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "audio": (None,),
    "prediction": (None,),
    "modalities": (None, ["text"]),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None, ""),
}


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ContentPart(BaseModel):
    model_config = _LENIENT
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = _LENIENT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        if any(part.type != "text" for part in self.content):
            raise ValueError("only text content parts are supported")
        return "".join(part.text or "" for part in self.content)


class StreamOptions(BaseModel):
    model_config = _LENIENT
    include_usage: bool = False


class BudgetFields(BaseModel):
    """The budget-forcing and sampling fields both endpoints accept."""

    model_config = _LENIENT

    max_tokens: int | None = Field(None, description="Cap on answer tokens.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    user: str | None = None
    stop: str | list[str] | None = Field(None, description="Ends the answer where it appears.")
    max_thinking_tokens: int | None = Field(None, ge=1)
    thinking_token_budget: int | None = Field(None, ge=1, description="vLLM's name for the max.")
    min_thinking_tokens: int | None = Field(None, ge=0)
    num_waits: int | None = Field(None, ge=0)

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @model_validator(mode="after")
    def _check(self) -> BudgetFields:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature is not None and 0 < self.temperature < 0.01:
            # Dividing logits by ~0 overflows them; 0 already means greedy.
            raise ValueError("temperature must be 0 (greedy) or at least 0.01")
        if len(self.stops) > MAX_STOPS or any(not 0 < len(s) <= MAX_STOP_CHARS
                                              for s in self.stops):
            raise ValueError(f"stop: at most {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} "
                             "characters")
        return self

    def unknown_fields(self) -> list[str]:
        return sorted(name for name in self.model_extra or {} if name not in UNSUPPORTED)

    def unsupported_field(self) -> str | None:
        """The first OpenAI field set to something frugal cannot honour, if any."""
        extra = self.model_extra or {}
        return next((name for name, neutral in UNSUPPORTED.items()
                     if name in extra and extra[name] not in neutral), None)


class ChatCompletionRequest(BudgetFields):
    model: str
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Alias of max_tokens.")


class CompletionRequest(BudgetFields):
    """A raw prompt to continue (text or token ids), with vLLM's token-level fields."""

    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    stop_token_ids: list[int] | None = Field(None, max_length=MAX_STOPS)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    return_token_ids: bool = False


class ReasoningTokens(BaseModel):
    reasoning_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: ReasoningTokens
    cost: float = Field(description="Dollars: compute seconds times the hourly price.")


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning: str | None = None
    reasoning_content: str | None = None  # the same text, under the older name


class ChatChoice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str


def _now() -> int:
    return int(time.time())


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    stop_reason: int | str | None = None  # the stop token or string it ended on (vLLM)
    token_ids: list[int] | None = None  # with return_token_ids
    prompt_token_ids: list[int] | None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "frugal"
    parent: str | None = None
    root: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict without None fields the client does not expect to see as null."""
    return model.model_dump(exclude_none=True)
