"""Scores of an evaluation: confidence intervals, s1's sweep metrics, maj@k and pass@k.

s1 (section 3.2) judges a test-time scaling method over a set A of evaluated compute amounts:
- Control: the share of evaluations whose thinking stayed within the budget bounds
  [a_min, a_max]; we apply it to every generation of the sweep, the strictest reading.
- Scaling: the average slope of accuracy over every pair of points, sum over a < b of
  (f(b) - f(a)) / (b - a), divided by the number of pairs; here f is accuracy in percent and
  a the mean thinking tokens a point used, reported per 1,000 thinking tokens.
- Performance: the best accuracy on the curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import combinations

# Two-sided 95% normal quantile.
Z_95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, as fractions; (0, 1) when there is no data.

    Wilson rather than the normal approximation because it stays inside [0, 1] and is honest
    at the small sample sizes and extreme accuracies of small-model evaluations.
    """
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # Rounding can put a bound a hair past the estimate at p = 0 or 1; the bounds contain p.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def control(thinking_tokens: Sequence[int], low: Sequence[int], high: Sequence[int]) -> float:
    """Share of generations whose thinking length lies within its own [low, high] bounds."""
    if not thinking_tokens:
        return 0.0
    inside = sum(
        lo <= used <= hi for used, lo, hi in zip(thinking_tokens, low, high, strict=True)
    )
    return inside / len(thinking_tokens)


def scaling(points: Sequence[tuple[float, float]]) -> float | None:
    """Average pairwise slope of (mean thinking tokens, accuracy) points, per token.

    Pairs with the same token count have no slope and are left out; None when no pair is left.
    """
    slopes = [
        (fb - fa) / (b - a)
        for (a, fa), (b, fb) in combinations(sorted(points), 2)
        if b != a
    ]
    return sum(slopes) / len(slopes) if slopes else None


def performance(accuracies: Sequence[float]) -> float | None:
    """The best accuracy of the sweep."""
    return max(accuracies) if accuracies else None


def majority_vote(
    answers: Sequence[str | None], same: Callable[[str, str], bool]
) -> int | None:
    """Index of a sample that gives the most common answer (the first such sample on ties).

    `same` decides equivalence (math-verify says "72" and "72.00" agree), so answers are
    grouped by comparing each to the groups' first members. None when no sample has an answer.
    """
    groups: list[list[int]] = []
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        for group in groups:
            if same(answers[group[0]], answer):  # type: ignore[arg-type]
                group.append(index)
                break
        else:
            groups.append([index])
    if not groups:
        return None
    return max(groups, key=len)[0]  # max keeps the first of equal-sized groups


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))
