"""The one-sentence verdict on s1's Waits, from the intervals of a Wait sweep."""

from __future__ import annotations

from frugal.evaluation.metrics import wilson_interval
from frugal.evaluation.waits import wait_verdict
from frugal.run_files import EvalPoint


def point(budget: int, waits: int, correct: int, n: int = 200) -> EvalPoint:
    return EvalPoint(
        budget=f"think{budget}-waits{waits}", max_thinking_tokens=budget, num_waits=waits,
        questions=n, generations=n, correct=correct, accuracy=correct / n,
        ci95=list(wilson_interval(correct, n)), mean_thinking_tokens=50.0 + 10 * waits,
        mean_answer_tokens=5.0)


def test_waits_that_lift_accuracy_beyond_the_interval_help() -> None:
    verdict = wait_verdict([point(64, 0, 60), point(128, 0, 80), point(128, 1, 120),
                            point(128, 2, 130)])
    assert verdict is not None and verdict.startswith("Waits help this model")
    assert "at a budget of 128" in verdict and "2 Waits 65.0%" in verdict


def test_overlapping_intervals_are_no_clear_difference_and_drops_hurt() -> None:
    same = wait_verdict([point(128, 0, 100), point(128, 1, 104), point(128, 2, 95)])
    assert same is not None and "no clear difference" in same and "+2.0 points" in same
    worse = wait_verdict([point(128, 0, 120), point(128, 1, 60)])
    assert worse is not None and worse.startswith("Waits hurt this model")


def test_no_verdict_without_a_budget_run_both_ways() -> None:
    assert wait_verdict([point(64, 0, 10), point(128, 0, 20)]) is None
    assert wait_verdict([point(64, 0, 10), point(128, 1, 20)]) is None
