"""The side-by-side table of evaluated models: accuracy with its 95% interval at each budget."""

from __future__ import annotations

from collections.abc import Mapping

from frugal.run_files import EvalPoint, EvalSummary


def cell(point: EvalPoint) -> str:
    low, high = point.ci95
    return (
        f"{100 * point.accuracy:.1f}% [{100 * low:.1f}-{100 * high:.1f}] "
        f"@{point.mean_thinking_tokens:.0f} tok"
    )


def comparison(summaries: Mapping[str, EvalSummary]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per model, one column per budget point any model ran, then
    the number of questions and s1's Control, Scaling and Performance."""
    budgets: dict[str, None] = {}
    for summary in summaries.values():
        for point in summary.points:
            budgets.setdefault(point.budget, None)
    headers = ["model", "n", *budgets, "control", "scaling /1k tok", "performance"]
    rows = []
    for label, summary in summaries.items():
        by_budget = {p.budget: p for p in summary.points}
        scaling = summary.scaling_per_1k_tokens
        best = summary.performance
        control = summary.control
        rows.append([
            label,
            str(summary.questions),
            *(cell(by_budget[b]) if b in by_budget else "-" for b in budgets),
            "-" if control is None else f"{100 * control:.0f}%",
            "-" if scaling is None else f"{scaling:+.1f}",
            "-" if best is None else f"{100 * best:.1f}%",
        ])
    return headers, rows
