"""`frugal experts`' settings: every expert's training, the merges, and the comparison."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from frugal.endpoint_config import EngineSetting
from frugal.evaluation.benchmarks import BenchmarkSpec
from frugal.settings.train import TrainConfig


class ExpertsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: TrainConfig = Field(default_factory=TrainConfig, description="Every adapter's recipe.")
    min_examples: int = Field(4, ge=1, description="Domains with fewer examples get no expert.")
    merges: list[str] = Field(default_factory=lambda: ["linear", "ties"],
                              description="Merged contenders (PEFT methods).")
    benchmark: str | BenchmarkSpec = Field("tasks", description="Held-out questions.")
    max_thinking_tokens: list[int] = Field(default_factory=lambda: [64],
                                           description="Thinking budgets of the comparison.")
    max_answer_tokens: int = Field(32, ge=1, description="Cap on answer tokens.")
    batch_size: int = Field(16, ge=1, description="Rows decoded together.")
    compare: bool = Field(True, description="Evaluate every contender.")
    machine_price_per_hour: float = Field(0.0, ge=0.0, description="Dollars per hour of "
                                          "this machine, for the ledger.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Evaluation weights: auto is bfloat16 on GPUs and AMX CPUs."
    )
    engine: EngineSetting = Field(
        None, description="Evaluate the contenders on this completions server (serving the "
        "base model and every adapter by name), or on vllm / llama.cpp started for each "
        "evaluation; None: the local engine.",
    )
