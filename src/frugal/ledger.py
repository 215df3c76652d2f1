"""`ledger.json`: every cost of a run, with the prices it assumed.

See docs/design.md, "Ledger and money".

Each stage appends one entry per invocation with what that invocation spent: teacher tokens and
dollars (input, cached input and output tokens times the per-million prices), compute seconds and
dollars (wall seconds times the machine's hourly price). A re-run that pays for nothing appends
an entry of zero dollars, so the total is always the sum of what was really paid.

Teacher dollars are never below what the teacher cache shows was paid: distillation writes each
call's charge to the cache before the request is sent, and `reconcile_teacher_cache` (run at the
start and the end of every distillation, under the run-directory lock) appends whatever the cache
holds that the ledger does not, such as the calls of a run that was killed before it could write
its entry. Dollars are kept unrounded, so the ledger equals the provider's bill to the cent and
beyond.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from frugal.run_files import (
    LEDGER,
    LEDGER_LOCK,
    Ledger,
    LedgerEntry,
    RunFileError,
    read_json,
    record_json,
    write_json,
)


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


def read_ledger(run_dir: Path) -> Ledger:
    """The run's ledger (no entries before the first cost); a corrupt one is an error
    (RunFileError), never silently reset, because the costs it records would be lost."""
    path = Path(run_dir) / LEDGER
    fix = (f"correct {LEDGER} by hand or restore it from a backup; deleting it forgets the "
           "costs recorded so far (paid teacher calls stay in the teacher cache, so none is "
           "paid twice)")
    data = read_json(path, default={"entries": []}, fix=fix)
    try:
        return Ledger.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RunFileError(path, f'not a ledger (an object whose "entries" is a list of '
                           f"entries; {where}: {first['msg']})", fix) from None


def append_entry(run_dir: Path, entry: LedgerEntry) -> Ledger:
    """Add one entry (stamped with the time) and rewrite the ledger atomically.

    The read-modify-write holds a lock of its own: `frugal serve` appends its entry without
    the run-directory lock (it only reads the run), and neither append may lose the other's.
    """
    with _appending(Path(run_dir)):
        ledger = read_ledger(run_dir)
        ledger.entries.append(entry.model_copy(
            update={"time": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        ledger.total_dollars = sum(e.dollars for e in ledger.entries)
        write_json(Path(run_dir) / LEDGER, {
            "entries": [record_json(e) for e in ledger.entries],
            "total_dollars": ledger.total_dollars,
        })
    return ledger


@contextmanager
def _appending(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LEDGER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocking: an append takes milliseconds
        yield
    finally:
        os.close(fd)


def teacher_dollars(ledger: Ledger) -> float:
    """Teacher dollars the ledger records (what the teacher cache's charges must add up to)."""
    return sum(e.teacher_dollars for e in ledger.entries)


def reconcile_teacher_cache(run_dir: Path, cache_total: float, *, reason: str) -> float:
    """Append the teacher dollars the cache holds and the ledger lacks; return that gap.

    Must run under the run-directory lock, after the cache has charged crashed calls
    (`TeacherCache.recover_pending`).
    """
    gap = cache_total - teacher_dollars(read_ledger(run_dir))
    # Float sums in another order differ by ~1e-16; a real gap is at least a token's price.
    if gap > 1e-12:
        append_entry(run_dir, LedgerEntry(stage="distill", kind="reconcile",
                                          teacher_dollars=gap, dollars=gap, note=reason))
    return max(gap, 0.0)
