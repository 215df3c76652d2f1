"""`ledger.json`: every cost of a run, with the prices it assumed (DESIGN.md section 3).

Each stage appends one entry per invocation with what that invocation spent: teacher tokens and
dollars (input, cached input and output tokens times the per-million prices), compute seconds and
dollars (wall seconds times the machine's hourly price). A re-run that pays for nothing appends
an entry of zero dollars, so the total is always the sum of what was really paid.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from frugal.run_files import LEDGER, write_json


class TokenPrices(BaseModel):
    """Teacher API prices in dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(0.0, ge=0, description="Dollars per 1M input tokens.")
    output_per_million: float = Field(0.0, ge=0, description="Dollars per 1M output tokens.")
    cached_input_per_million: float | None = Field(
        None, ge=0, description="Dollars per 1M prompt-cache hits; defaults to the input price."
    )

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        cached_price = self.cached_input_per_million
        if cached_price is None:
            cached_price = self.input_per_million
        fresh = max(input_tokens - cached_input_tokens, 0)
        return (
            fresh * self.input_per_million
            + cached_input_tokens * cached_price
            + output_tokens * self.output_per_million
        ) / 1_000_000


def compute_cost(seconds: float, price_per_hour: float) -> float:
    return seconds * price_per_hour / 3600


def read_ledger(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / LEDGER
    if not path.is_file():
        return {"entries": []}
    return json.loads(path.read_text())


def append_entry(run_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Add one entry (stamped with the time) and rewrite the ledger atomically."""
    ledger = read_ledger(run_dir)
    ledger["entries"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry})
    ledger["total_dollars"] = round(sum(e.get("dollars", 0.0) for e in ledger["entries"]), 6)
    write_json(Path(run_dir) / LEDGER, ledger)
    return ledger
