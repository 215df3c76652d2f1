"""`frugal serve`'s settings: what it serves, its limits per request, and what keeps it up
under load and in front of hostile clients."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from frugal.names import SafeName
from frugal.settings.engines import LlamaCppSection

API_KEY_ENV = "FRUGAL_API_KEY"


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(..., description="A run directory, or a model spec.")
    model: str | None = Field(None, description="Base model; default: the run's.")
    adapters: dict[SafeName, str] = Field(
        default_factory=dict, description="Extra name=path (names as for adapters/<name>/)."
    )
    served_name: str | None = Field(None, description="Name of the base model in /v1/models.")
    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, ge=0, le=65535, description="Port.")
    api_key: str | None = Field(None, description=f"Required key; else ${API_KEY_ENV}.")
    max_batch_size: int = Field(16, ge=1, description="Rows decoded together.")
    batch_window_ms: float = Field(10.0, ge=0.0, description="How long an idle server waits "
                                    "to batch arrivals.")
    max_answer_tokens: int = Field(512, ge=1, description="Cap on max_tokens.")
    max_thinking_tokens: int = Field(2048, ge=1, description="Cap on thinking budgets.")
    default_thinking_tokens: int = Field(256, ge=1, description="Thinking budget of requests "
                                         "that set none.")
    max_prompt_tokens: int = Field(2048, ge=1, description="Longer prompts get a 400.")
    machine_price_per_hour: float = Field(0.0, ge=0.0, description="Dollars per hour of this "
                                          "machine: prices every token.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights: auto is bfloat16 on GPUs and AMX CPUs, else float32."
    )
    engine: str = Field(
        "local", description="local (frugal's decode loop), vllm or llama.cpp (that engine's "
        "server started here with every adapter, stopped on exit), or the URL of an "
        "OpenAI-compatible completions server up to /v1 that serves the base model and each "
        "adapter under its name.",
    )
    engine_model: str | None = Field(
        None, description="With an engine URL: the base model's name there (default: the "
        "model spec)."
    )
    llama_cpp: LlamaCppSection
    max_waiting: int = Field(
        64, ge=1, description="Requests that may wait for a batch slot; more get 429 with "
        "Retry-After.")
    request_timeout_s: float = Field(
        600.0, gt=0, description="Deadline of a non-streamed request (504 after it).")
    max_connections: int = Field(
        512, ge=1, description="Open connections uvicorn accepts; beyond it, 503.")
    # Longer than the 5 s after which httpx (and so the openai client) drops an idle pooled
    # connection: the client always closes first, never reuses one the server is closing.
    keep_alive_s: float = Field(15.0, gt=0, description="Idle keep-alive connections close "
                                "after this.")
    body_timeout_s: float = Field(30.0, gt=0, description="A body must arrive within this.")
    max_body_bytes: int = Field(2 << 20, ge=1024, description="Larger bodies get 413.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names clients may use besides the loopback "
        "names and the bind address (DNS-rebinding guard); '*' allows any.")
    allow_no_key: bool = Field(
        False, description="Serve a non-loopback address without an API key.")
    docs: bool = Field(False, description="Serve /docs and /openapi.json.")
    public_metrics: bool = Field(False, description="Serve /metrics without the API key.")
