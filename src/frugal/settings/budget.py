"""How long a model may and must think, and how it samples: the budget of every generation."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BudgetConfig(BaseModel):
    """How long the model may and must think, and how it samples."""

    model_config = ConfigDict(extra="forbid")

    max_thinking_tokens: int = Field(1024, ge=1, description="Force the answer at this many.")
    min_thinking_tokens: int = Field(0, ge=0, description="Replace an earlier end with Wait.")
    num_waits: int = Field(0, ge=0, description="Replace this many ends of thinking with Wait.")
    wait_text: str = Field("Wait", min_length=1, description="Appended when an end is refused.")
    answer_prefix: str = Field("Final Answer:", description="Forced after a forced end.")
    max_answer_tokens: int = Field(256, ge=1, description="Cap on answer tokens.")
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int = Field(0, description="Sampling seed.")

    @model_validator(mode="after")
    def _min_within_max(self) -> BudgetConfig:
        if self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError(
                f"min_thinking_tokens ({self.min_thinking_tokens}) is larger than "
                f"max_thinking_tokens ({self.max_thinking_tokens}); lower the minimum"
            )
        return self
