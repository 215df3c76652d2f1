"""`frugal pool`'s settings: where the questions come from, and how many."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from frugal.questions import FieldMap


class PoolConfig(BaseModel):
    """Where the questions come from and how many."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        "tasks",
        description="'tasks' (built-in families), 'gsm8k', or a file path / hub dataset name.",
    )
    families: list[str] | None = Field(None, description="Task families; all when unset.")
    per_family: PositiveInt | dict[str, PositiveInt] = Field(
        200, description="Questions per task family: one count for all, or a count per family "
        "(for example {percentages: 120, dates: 60}; the families are then its names).")
    difficulties: list[int] | None = Field(None, description="Task difficulty levels; all.")
    seed: int = Field(0, description="Seed of the task generators.")
    limit: int | None = Field(None, ge=1, description="Keep at most this many questions.")
    fields: FieldMap = Field(default_factory=FieldMap, description="Column names of a file.")
    answer_format: Literal["plain", "gsm8k"] | None = Field(
        None, description="Override the file's answer format (gsm8k: '#### N' answers)."
    )
    split: str = Field("train", description="Split of a hub dataset.")
    config_name: str | None = Field(None, description="Configuration of a hub dataset.")
