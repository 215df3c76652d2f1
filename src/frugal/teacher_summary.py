"""What a run's teacher did: what it answered and got right, where its thinking came from, what
curation kept of it, and what each kept trace cost.

Read from the run directory alone (traces.jsonl, selected.jsonl, ledger.json), for the report.
The teacher's accuracy is on the pool's questions (the ones it was asked), graded against their
references as every trace is; the cost of a kept trace is all the distillation cost (token
dollars, and machine time at its price for a local teacher) over the traces curation kept.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from frugal.evaluation.metrics import wilson_interval
from frugal.ledger import read_ledger
from frugal.run_files import SELECTED, TRACES, SelectedItem, Trace, read_records


@dataclass
class TeacherSummary:
    teacher: str
    model: str
    answered: int
    correct: int
    thinking_from: dict[str, int]  # where each trace's thinking was found (model teachers)
    kept: int
    dollars: float
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.answered)

    @property
    def per_kept(self) -> float | None:
        return self.dollars / self.kept if self.kept else None

    def sentence(self, machine_price_per_hour: float) -> str:
        low, high = self.ci95
        found = ", ".join(f"{where} {count}" for where, count in self.thinking_from.items())
        per_kept = (f"${self.per_kept:.6f} per kept trace" if self.per_kept is not None
                    else "no trace kept")
        return (
            f"Teacher `{self.model}` ({self.teacher}) answered {self.answered} pool questions "
            f"and got **{self.correct}** right (**{100 * self.accuracy:.1f}%**, 95% CI "
            f"{100 * low:.1f}-{100 * high:.1f})"
            + (f"; its thinking was found in: {found}" if found else "")
            + f". Curation kept {self.kept} of its traces. Distillation cost "
            f"${self.dollars:.6f} ({self.seconds / 60:.1f} min of machine time at "
            f"${machine_price_per_hour}/h, plus any token charges): {per_kept}."
        )


def summarize(run_dir: Path) -> TeacherSummary | None:
    """The teacher's record in `run_dir`, None before distillation."""
    traces_path = run_dir / TRACES
    if not traces_path.is_file():
        return None
    traces = read_records(traces_path, Trace, fix="run `frugal distill` again")
    if not traces:
        return None
    selected_path = run_dir / SELECTED
    kept = len(read_records(selected_path, SelectedItem, fix="run `frugal curate` again")) \
        if selected_path.is_file() else 0
    distilled = [e for e in read_ledger(run_dir).entries if e.stage == "distill"]
    return TeacherSummary(
        teacher=traces[0].teacher or "", model=traces[0].model or "",
        answered=len(traces), correct=sum(t.correct for t in traces),
        thinking_from=dict(Counter(t.thinking_from for t in traces if t.thinking_from)),
        kept=kept, dollars=sum(e.dollars for e in distilled),
        seconds=sum(e.compute_seconds for e in distilled),
    )
