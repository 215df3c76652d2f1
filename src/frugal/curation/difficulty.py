"""Difficulty signals: does a reference model already solve the question, and pass-rate bands.

s1's rule: answer each question greedily with each reference model (here through the
budget-forcing engine) and drop it if any of them gets it right; what a small model already
solves teaches it little. The answers go through the teacher cache like any teacher's, so a
re-run of curation never generates them twice. The alternative, open-r1 style, keeps questions
whose `self`-teacher pass rate lies in a band (for example 0.2 to 0.8).
"""

from __future__ import annotations

from pathlib import Path

from frugal.endpoint_config import EndpointConfig
from frugal.events import Events
from frugal.generation import BudgetConfig
from frugal.grading import grade
from frugal.ledger import TokenPrices
from frugal.questions import Question
from frugal.run_files import TEACHER_CACHE
from frugal.teacher_cache import TeacherCache
from frugal.teachers.base import TeacherResponse
from frugal.teachers.local import HFTeacher, LocalTeacherConfig


def solved_by(
    questions: list[Question],
    model: str,
    budget: BudgetConfig,
    run_dir: Path,
    *,
    batch_size: int = 8,
    events: Events,
    engine: EndpointConfig | None = None,
) -> dict[str, bool]:
    """Question id -> whether `model` answers it correctly (greedy), on the local engine or
    on `engine` (asked for `model` by name)."""
    from frugal.distill import collect

    teacher = HFTeacher(LocalTeacherConfig(
        model=model, budget=budget.model_copy(update={"temperature": 0.0}),
        batch_size=batch_size,
        engine=engine.model_copy(update={"model": model}) if engine else None,
    ))
    with TeacherCache(Path(run_dir) / TEACHER_CACHE) as cache:
        got = collect(
            teacher, questions, cache, prices=TokenPrices(), max_cost=None, events=events,
            label=f"difficulty · {model}",
        )
        if got.interrupted:
            raise KeyboardInterrupt
        solved = {}
        for question in questions:
            stored = cache.get(got.keys[question.id])
            if stored is None:
                continue
            completion = TeacherResponse.from_dict(stored).completions[0]
            solved[question.id] = grade(completion.answer, question.answer).correct
    return solved


def outside_band(pass_rate: float | None, band: tuple[float, float]) -> str | None:
    """Why a pass rate is outside [low, high], or None when it is inside."""
    low, high = band
    if pass_rate is None:
        return "no pass rate (distill with --teacher self to get one)"
    if pass_rate < low:
        return f"pass rate {pass_rate:.2f} below {low:.2f}: too hard for the student"
    if pass_rate > high:
        return f"pass rate {pass_rate:.2f} above {high:.2f}: the student already solves it"
    return None
