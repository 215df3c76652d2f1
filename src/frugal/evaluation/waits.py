"""s1's claim, checked on a run: does making the model think longer with "Wait" help it?

Compares each Wait count with no Wait at the same thinking budget and says, in one sentence,
whether Waits help, hurt or make no clear difference, going by their 95% intervals.
"""

from __future__ import annotations

from frugal.run_files import EvalPoint


def _shown(point: EvalPoint) -> str:
    waits = f"{point.num_waits} Wait{'s' if point.num_waits != 1 else ''}"
    return (f"{waits} {100 * point.accuracy:.1f}% [{100 * point.ci95[0]:.1f}-"
            f"{100 * point.ci95[1]:.1f}] at {point.mean_thinking_tokens:.0f} thinking tokens")


def wait_verdict(points: list[EvalPoint]) -> str | None:
    """One sentence on the Wait sweep, or None when no budget was run both with and without
    Waits. Waits help (or hurt) only when an interval lies wholly above (below) the no-Wait
    one; otherwise the sentence says the difference is within the noise."""
    by_budget: dict[int, list[EvalPoint]] = {}
    for point in points:
        by_budget.setdefault(point.max_thinking_tokens, []).append(point)
    swept = [(budget, group) for budget, group in by_budget.items()
             if any(p.num_waits == 0 for p in group) and any(p.num_waits > 0 for p in group)]
    if not swept:
        return None
    budget, group = max(swept, key=lambda item: len(item[1]))
    group = sorted(group, key=lambda p: p.num_waits)
    none, waited = group[0], group[1:]
    above = [p for p in waited if p.ci95[0] > none.ci95[1]]
    below = [p for p in waited if p.ci95[1] < none.ci95[0]]
    if above and not below:
        verdict = "Waits help this model"
    elif below and not above:
        verdict = "Waits hurt this model"
    elif above and below:
        verdict = "Waits help or hurt this model depending on how many"
    else:
        best = max(waited, key=lambda p: p.accuracy)
        verdict = (f"Waits make no clear difference for this model (the 95% intervals overlap; "
                   f"best {100 * (best.accuracy - none.accuracy):+.1f} points)")
    figures = "; ".join(_shown(p) for p in group)
    return f"{verdict}: at a budget of {budget} thinking tokens, {figures}."
