"""Where generation runs: frugal's local engine, or an OpenAI-compatible completions server.

Kept apart from the engine itself so that configs (recipes, evaluation, teachers) can name an
endpoint without importing torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from frugal.settings.engines import MANAGED_ENGINES, LlamaCppConfig, ManagedEngine


class EndpointConfig(BaseModel):
    """Where the completions server is and how hard to drive it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Root of the OpenAI-compatible API, up to and including "
                          "/v1 (e.g. http://127.0.0.1:8000/v1).")
    model: str = Field(description="The served base model's name (adapters are picked by their "
                       "own served names).")
    api_key_env: str = Field("FRUGAL_ENGINE_API_KEY", description="NAME of the environment "
                             "variable holding the server's key; unset sends a placeholder.")
    concurrency: int = Field(32, ge=1, description="Requests in flight at once, so the server "
                             "batches them.")
    timeout: float = Field(600.0, gt=0, description="Seconds allowed per request.")
    api: Literal["auto", "openai", "llama.cpp"] = Field(
        "auto", description="The server's API: openai (/v1/completions with vLLM's token-id "
        "fields), llama.cpp (its native /completion), or auto (asks the server).")
    model_urls: dict[str, str] = Field(
        default_factory=dict, description="Served name -> base URL of a server of its own "
        "(one llama.cpp server per merged adapter); other names go to base_url.")

    def url_for(self, model: str) -> str:
        """The base URL (up to /v1) of the server that serves `model`."""
        return self.model_urls.get(model, self.base_url)


# Where a stage generates: frugal's local engine (None), an engine it starts itself, or a
# server at a URL.
EngineSetting = EndpointConfig | ManagedEngine | None


def engine_key(engine: EndpointConfig | ManagedEngine, llama_cpp: LlamaCppConfig) -> str:
    """What, besides the model's weights, decides an engine's answers (for cache and resume
    keys): the server and its model name, or the engine started and, for llama.cpp, its GGUF
    type."""
    if engine == "llama.cpp":
        return f"llama.cpp ({llama_cpp.weights})"
    if isinstance(engine, str):
        return engine
    return f"{engine.base_url} ({engine.model})"


def endpoint_option(
    engine: str, model: str | None, api_key_env: str | None = None, *, managed: bool = False
) -> EndpointConfig | ManagedEngine | None:
    """`--engine local` (None), `--engine vllm|llama.cpp` where a command can start one, or
    `--engine URL` with the name the server serves the base model under."""
    if engine == "local":
        return None
    if engine in MANAGED_ENGINES and managed:
        return engine  # type: ignore[return-value]
    if not engine.startswith(("http://", "https://")):
        also = ", " + ", ".join(MANAGED_ENGINES) if managed else ""
        raise ValueError(
            f"--engine {engine!r}: give 'local'{also} or the URL of an OpenAI-compatible "
            "completions server up to /v1, e.g. http://127.0.0.1:8000/v1"
        )
    if not model:
        raise ValueError("--engine URL needs --engine-model (or --model): the name the server "
                         "serves the base model under")
    return EndpointConfig(
        base_url=engine, model=model, **({"api_key_env": api_key_env} if api_key_env else {})
    )
