"""`frugal curate`'s settings: what a training example must pass, and how many to select."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from frugal.endpoint_config import EndpointConfig
from frugal.settings import DEFAULT_MODEL
from frugal.settings.budget import BudgetConfig

# How the final sample is drawn: s1's difficulty- and diversity-weighted way, or a baseline.
Strategy = Literal["s1", "random", "longest", "diverse"]

# Items that refer to something the text does not contain are broken training examples.
DEFAULT_FORMAT_PATTERNS: tuple[str, ...] = (
    # "As shown in the figure below", "see the diagram above", "from the graph below".
    r"\b(?:see|shown in|in|from) (?:the )?(?:figure|diagram|image|graph|picture|table) "
    r"(?:above|below)\b",
    # "Figure 3" / "Fig. 2" style references to a numbered figure that is not in the text.
    r"\b(?:see|in|shown in|refer to) (?:figure|fig\.) ?\d+\b",
    # Asymptote drawing code (MATH / AoPS): a picture the model would have to render.
    r"\[asy\]",
    # HTML and Markdown images, LaTeX graphics.
    r"<img\b",
    r"!\[[^\]]*\]\(",
    r"\\includegraphics\b",
)


class CurateConfig(BaseModel):
    """What a training example must pass, and how many to select."""

    model_config = ConfigDict(extra="forbid")

    target: int = Field(1000, ge=1, description="How many items to select (s1: 1,000).")
    strategy: Strategy = Field("s1", description="s1, or an ablation: random, longest, diverse.")
    seed: int = Field(0, description="Seed of the sampler.")
    tokenizer: str = Field(
        DEFAULT_MODEL, description="Model whose tokenizer counts trace tokens."
    )
    max_trace_tokens: int | None = Field(
        4096, ge=1, description="Drop traces longer than this (they would be truncated)."
    )
    require_correct: bool = Field(True, description="Drop traces graded incorrect.")
    format_patterns: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FORMAT_PATTERNS),
        description="Regexes marking broken items (figures referenced but absent, ...).",
    )
    near_duplicate_threshold: float | None = Field(
        None, gt=0, le=1,
        description="Embedding cosine at or above which a question is a near-duplicate; off by "
        "default, because in math a changed number is a different question.",
    )
    eval_sets: list[str] = Field(
        default_factory=list, description="Question files or hub datasets to decontaminate from."
    )
    reference_models: list[str] = Field(
        default_factory=list, description="Drop questions any of these solves (greedy)."
    )
    reference_budget: BudgetConfig = Field(
        default_factory=lambda: BudgetConfig(max_thinking_tokens=256, max_answer_tokens=64),
        description="Thinking budget of the reference models.",
    )
    engine: EndpointConfig | None = Field(
        None, description="A completions server that serves each reference model under its "
        "own name (its `model` is ignored); None: the local engine.",
    )
    pass_rate_band: tuple[float, float] | None = Field(
        None, description="Keep self-teacher pass rates within [low, high] (open-r1 style)."
    )
    clusters: int = Field(8, ge=1, description="k-means clusters for questions without domain.")
    embedder: str = Field("all-minilm-l6-v2", description="Sentence embedding model.")
