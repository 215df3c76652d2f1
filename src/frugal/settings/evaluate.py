"""`frugal eval`'s settings: what to evaluate, on which benchmark, at which budgets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from frugal.endpoint_config import EngineSetting
from frugal.evaluation.benchmarks import BenchmarkSpec
from frugal.names import SafeName
from frugal.settings.engines import LlamaCppSection


class EvalConfig(BaseModel):
    """What to evaluate, on which benchmark, at which budgets."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="Base model spec; default: the adapter's base, else SmolLM2."
    )
    # Not a SafeName: a path to an adapter directory is fine too; find_adapter checks a name.
    adapter: str | None = Field(
        None, min_length=1, description="An adapter of the run (name) or a path."
    )
    route: bool = Field(
        False, description="Experts + router: each question goes to the expert the run's "
        "router picks (all expert-* adapters loaded; rows of different experts share batches).",
    )
    label: SafeName | None = Field(
        None, description="Name under eval/; default: adapter or 'base'."
    )
    benchmark: str | BenchmarkSpec = Field("tasks", description="Built-in name, spec or data.")
    limit: int | None = Field(None, ge=1, description="Evaluate the first N questions.")
    max_thinking_tokens: list[int] = Field(
        default_factory=lambda: [64, 128, 256, 512], description="Budget sweep (maximum)."
    )
    num_waits: list[int] = Field(default_factory=lambda: [0], description="Wait sweep.")
    waits_at: Literal["every-budget", "best-budget"] = Field(
        "every-budget", description="Where the Wait sweep runs: at every budget, or, after the "
        "budget sweep at the first num_waits value, only at the budget that scored best there "
        "(s1's Wait curve at a fraction of the cost).",
    )
    min_thinking_tokens: int = Field(0, ge=0, description="Minimum thinking (Wait when the "
                                     "model stops before it).")
    max_answer_tokens: int = Field(64, ge=1, description="Cap on answer tokens.")
    samples: int = Field(1, ge=1, description="Samples per question (maj@k, pass@k).")
    temperature: float = Field(0.0, ge=0.0, description="Needed above 0 with samples > 1.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int = Field(0, description="Sampling seed.")
    batch_size: int = Field(8, ge=1, description="Rows decoded together.")
    system: str | None = Field(None, description="Optional system prompt.")
    machine_price_per_hour: float = Field(0.0, ge=0.0, description="For the ledger.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights: auto is bfloat16 on GPUs and AMX CPUs, else float32."
    )
    engine: EngineSetting = Field(
        None, description="An OpenAI-compatible completions server that generates, budget "
        "forcing driven from here; 'vllm' or 'llama.cpp' starts one for this evaluation (the "
        "base model and its adapters) and stops it after; None: frugal's local engine.",
    )
    llama_cpp: LlamaCppSection

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if not self.max_thinking_tokens or min(self.max_thinking_tokens) < 1:
            raise ValueError("max_thinking_tokens needs at least one budget, each >= 1")
        if not self.num_waits or min(self.num_waits) < 0:
            raise ValueError("num_waits needs at least one value, each >= 0")
        if self.min_thinking_tokens > min(self.max_thinking_tokens):
            raise ValueError(
                f"min_thinking_tokens {self.min_thinking_tokens} is above the smallest budget "
                f"{min(self.max_thinking_tokens)}"
            )
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(
                f"samples={self.samples} with temperature 0 gives {self.samples} identical "
                "greedy answers. Fix: set a temperature such as 0.7."
            )
        return self


class RunEvalConfig(EvalConfig):
    """`frugal run`'s evaluation: `EvalConfig`'s settings for the base model and the trained
    one, whose model, adapter and label `frugal run` sets for each."""

    base: bool = Field(True, description="Also evaluate the untrained base model.")
    compare: dict[SafeName, str] = Field(
        default_factory=dict, description="Other models evaluated beside the base and the "
        "trained one, at the trained one's points, by label: a model spec, or another run's "
        "trained model (e.g. {program-taught: runs/quickstart/models/tuned}); a path that "
        "does not exist yet is skipped with a note.")
    base_at: Literal["every-point", "largest-budget"] = Field(
        "every-point", description="The base model's points: the whole sweep, or only the "
        "largest budget at the first num_waits value (where it is compared; it costs one point).",
    )

    @model_validator(mode="after")
    def _per_model_fields_are_set_by_the_run(self) -> RunEvalConfig:
        chosen = sorted(name for name in ("model", "adapter", "label", "route")
                        if getattr(self, name))  # None and False are what a dump writes
        if chosen:
            raise ValueError(
                f"{', '.join(chosen)}: frugal run sets these for each model it evaluates. "
                "Fix: remove them from the recipe's eval section (the recipe's model and "
                "train.name say what is evaluated)"
            )
        return self
