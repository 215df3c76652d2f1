"""Start the inference engine a stage names (`vllm`, `llama.cpp`) for a model and its adapters.

`frugal eval` and `frugal serve` take `--engine vllm|llama.cpp`: the engine is started here on
the base model with every adapter, its endpoint is handed to the endpoint engine (which keeps
frugal's budget forcing), and it is stopped when the stage ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from frugal.endpoint_config import EndpointConfig
from frugal.settings.engines import LlamaCppConfig, ManagedEngine

# The prompt room a started engine leaves each row when the prompts are not known in advance
# (evaluation, teachers): a question in the chat template, with room to spare.
PROMPT_TOKENS_BOUND = 2048


def context_length(prompt_tokens: int, thinking_tokens: int, answer_tokens: int) -> int:
    """The context an engine must hold for one row: prompt, thinking, Waits' slack, answer."""
    return prompt_tokens + thinking_tokens + answer_tokens + 64


@contextmanager
def managed_endpoint(
    kind: ManagedEngine,
    model: str,
    adapters: Mapping[str, Path],
    *,
    dtype: str,
    context_tokens: int,
    llama_cpp: LlamaCppConfig | None = None,
) -> Iterator[EndpointConfig]:
    """Serve `model` and `adapters` with the engine `kind`; yield where to reach it."""
    if kind == "vllm":
        from frugal.vllm_server import serve_with_vllm

        with serve_with_vllm(model, adapters, dtype="float32" if dtype == "auto" else dtype,
                             max_model_len=context_tokens) as endpoint:
            yield endpoint
    elif kind == "llama.cpp":
        from frugal.llama_cpp_server import serve_with_llama_cpp

        with serve_with_llama_cpp(model, adapters, config=llama_cpp,
                                  context_tokens=context_tokens) as endpoint:
            yield endpoint
    else:
        raise ValueError(f"engine {kind!r}: frugal starts vllm or llama.cpp")
