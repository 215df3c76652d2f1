"""`frugal train`'s settings: how to fine-tune; defaults suit a small model on a laptop CPU."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from frugal.names import SafeName
from frugal.settings import DEFAULT_MODEL


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | str = Field(
        "all-linear", description="Modules to adapt: names, or 'all-linear'."
    )


class TrainConfig(BaseModel):
    """How to fine-tune; defaults suit a small model on a laptop CPU."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Base model spec.")
    method: Literal["lora", "full", "qlora"] = Field("lora", description="What to train.")
    base_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Frozen base weights of LoRA: auto picks bfloat16 on GPUs that "
        "support it, float32 elsewhere.",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings.")
    name: SafeName = Field("default", description="Adapter name: adapters/<name>/.")
    system: str | None = Field(None, description="System prompt of every example.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    epochs: float = Field(3.0, gt=0, description="Passes over the data.")
    max_steps: int = Field(-1, description="Stop after this many steps (-1: use epochs).")
    batch_size: int = Field(8, ge=1, description="Examples (bfd: packed rows) per device step.")
    micro_batch_size: int | None = Field(
        None, ge=1,
        description="Examples per forward pass; the rest of a batch comes by gradient "
        "accumulation, with the same loss. Default: 1 on CPUs (no padding and no attention "
        "across a flattened batch, which a CPU computes in full), the whole batch on GPUs.",
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer update.")
    max_seq_length: int = Field(2048, ge=16, description="Longest example; longer are left out.")
    packing: Literal["padding-free", "bfd", "none"] = Field(
        "padding-free",
        description="padding-free: each batch's examples in one row with position ids (same "
        "steps as padded batches, no padding); bfd: TRL's best-fit-decreasing packing into rows "
        "of max_seq_length (fewer, fuller steps); none: padded batches. Position ids restart at "
        "every example, and transformers masks block-diagonally, so examples never mix.",
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps warming up.")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    logging_steps: int = Field(1, ge=1, description="Log every N steps.")
    seed: int = Field(0, description="Seed of initialisation, data order and dropout.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    machine_price_per_hour: float = Field(
        0.0, ge=0, description="Dollars per hour of this machine, for the ledger."
    )
