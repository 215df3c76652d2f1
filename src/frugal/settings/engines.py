"""Settings of the inference engines frugal starts itself (vLLM, llama.cpp's server)."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# The engines `--engine` can start for a command (as opposed to one already running at a URL).
ManagedEngine = Literal["vllm", "llama.cpp"]
MANAGED_ENGINES: tuple[str, ...] = typing.get_args(ManagedEngine)

GgufType = Literal["f32", "f16", "q8_0", "q4_0"]
GGUF_TYPES: tuple[str, ...] = typing.get_args(GgufType)


class LlamaCppConfig(BaseModel):
    """How `--engine llama.cpp` runs llama.cpp's server."""

    model_config = ConfigDict(extra="forbid")

    weights: GgufType = Field(
        "q8_0", description="GGUF weights of the exported models: q8_0 (fast on CPUs, "
        "accuracy kept), q4_0 (faster again, but a small model loses accuracy: see the "
        "README), f16, or f32 (token-for-token closest to frugal's float32 engine).")
    slots: int = Field(16, ge=1, description="Parallel slots of each llama.cpp server "
                       "(requests it decodes together, with continuous batching).")
    threads: int | None = Field(None, ge=1, description="CPU threads of each server; default: "
                                "llama.cpp's (the physical cores).")


# The `llama_cpp` section of every stage that can start llama.cpp (serve, eval, local teachers).
LlamaCppSection = Annotated[LlamaCppConfig, Field(default_factory=LlamaCppConfig,
                                                  description="How engine llama.cpp runs.")]
