"""`frugal distill`'s settings: which teacher writes the traces, its prices, and the cap."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from frugal.ledger import TokenPrices
from frugal.settings.teachers import (
    CHAT_NEEDS_A_SERVER,
    LocalTeacherConfig,
    OpenAITeacherConfig,
)

TeacherKind = Literal["openai", "hf", "program", "dataset", "self"]


class DistillConfig(BaseModel):
    """Which teacher answers, what it costs, and when to stop paying."""

    model_config = ConfigDict(extra="forbid")

    teacher: TeacherKind = Field("program", description="Who writes the traces.")
    openai: OpenAITeacherConfig | None = Field(
        None, description="Endpoint, model and retries of the openai teacher."
    )
    local: LocalTeacherConfig = Field(
        default_factory=LocalTeacherConfig, description="Model of the hf and self teachers."
    )
    prices: TokenPrices = Field(default_factory=TokenPrices, description="Teacher token prices.")
    machine_price_per_hour: float = Field(
        0.0, ge=0, description="Dollars per hour of this machine, for local teachers' compute."
    )
    max_cost: float | None = Field(
        None, ge=0, description="Dollars this run directory may pay its teacher, in all; no call "
        "is sent whose worst case would cross it. Needs the teacher's prices."
    )
    limit: int | None = Field(None, ge=1, description="Distill only the first N pool questions.")
    retry_failed: bool = Field(
        False, description="Ask again questions that failed for good with these same settings "
        "(an empty reply at the output cap, a program that cannot solve them).",
    )

    @model_validator(mode="after")
    def _chat_style_is_one_answer(self) -> DistillConfig:
        if self.teacher == "hf" and self.local.style == "chat" and self.local.engine is None:
            raise ValueError(CHAT_NEEDS_A_SERVER)
        if self.teacher == "self" and self.local.style == "chat":
            raise ValueError(
                "local.style chat is for the hf teacher (an instruct model answering in its own "
                "format); the self teacher samples the student in frugal's format. Fix: set "
                "teacher: hf, or local.style: budget")
        return self

    @model_validator(mode="after")
    def _cap_needs_prices(self) -> DistillConfig:
        prices = self.prices
        if self.max_cost is not None and not (
            prices.input_per_million or prices.output_per_million
        ):
            raise ValueError(
                "max_cost is set but the teacher's token prices are zero, so it would limit "
                "nothing. Fix: set prices.input_per_million and prices.output_per_million "
                "(--price-input / --price-output) to what the provider charges, or drop max_cost"
            )
        return self
