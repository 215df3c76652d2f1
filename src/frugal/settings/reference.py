"""The hosted model a specialist is weighed against: its prices and what is assumed of it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from frugal.ledger import TokenPrices


class ReferenceApi(BaseModel):
    """A hosted model priced per token, to which the specialist's costs are compared."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("reference API", min_length=1, description="What to call it in reports.")
    prices: TokenPrices = Field(
        default_factory=lambda: TokenPrices(input_per_million=0.15, output_per_million=0.60),
        description="Its dollars per million input and output tokens.",
    )
    accuracy: float = Field(
        1.0, gt=0, le=1, description="Share of the questions it answers right: unmeasured here, "
        "so 1.0 by default, the case most favourable to the API.",
    )
    output_tokens: int | None = Field(
        None, ge=1, description="Tokens it writes per answer; default: as many as the specialist "
        "wrote at its best budget.",
    )
