"""Number sequences: the next term, a far term, or the sum of the first terms.

Level 1 continues an arithmetic sequence; level 2 continues a geometric one or asks for a far
term of an arithmetic one (`a + (n - 1) d`); level 3 continues a sequence whose differences
grow steadily (constant second differences) or sums the first `n` terms of an arithmetic
sequence. Every answer is a whole number.
"""

from __future__ import annotations

import random

from frugal.tasks.base import Composed, TaskFamily

__all__ = ["Sequences"]

_KINDS = {1: ("arithmetic_next",), 2: ("geometric_next", "nth_term"), 3: ("quadratic_next", "sum")}
_NEXT_TEMPLATES = (
    "What is the next number in the sequence {terms}, ...?",
    "Find the next term of the sequence {terms}, ...",
    "A pattern of numbers goes {terms}, ... What number comes next?",
)
_NTH_TEMPLATES = (
    "The sequence {terms}, ... keeps adding the same amount. What is its {nth} term?",
    "Find the {nth} term of the arithmetic sequence {terms}, ...",
)
_SUM_TEMPLATES = (
    "What is the sum of the first {n} terms of the arithmetic sequence {terms}, ...?",
    "Add up the first {n} terms of the sequence {terms}, ..., which keeps the same difference.",
)


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _listing(terms: list[int]) -> str:
    return ", ".join(map(str, terms))


def _operand(n: int) -> str:
    """A number after an operator: negatives bracketed, so "5 - (-3)" never reads "5 - -3"."""
    return f"({n})" if n < 0 else str(n)


def _differences(terms: list[int]) -> list[str]:
    return [f"{b} - {_operand(a)} = {b - a}" for a, b in zip(terms, terms[1:], strict=False)]


def _arithmetic_next(rng: random.Random) -> tuple[str, int, list[str]]:
    start, step = rng.randint(1, 60), rng.randint(2, 15) * rng.choice((1, 1, -1))
    terms = [start + i * step for i in range(rng.randint(4, 5))]
    answer = terms[-1] + step
    # Counted, not subtracted: a small model counts on reliably and subtracts badly. Counting
    # from the first term to the second, and from the last term in step, needs no difference.
    way, direction = ("up", 1) if step > 0 else ("down", -1)
    pairs = ", ".join(f"{terms[0] + direction * i} and {terms[-1] + direction * i}"
                      for i in range(1, abs(step) + 1))
    steps = [
        f"Each term goes {way} by the same amount. Count {way} from {terms[0]} to {terms[1]} "
        f"and, step for step, {way} from {terms[-1]}: {pairs}.",
    ]
    return rng.choice(_NEXT_TEMPLATES).format(terms=_listing(terms)), answer, steps


def _geometric_next(rng: random.Random) -> tuple[str, int, list[str]]:
    start, ratio = rng.randint(1, 12), rng.randint(2, 5)
    terms = [start * ratio**i for i in range(4)]
    answer = terms[-1] * ratio
    ratios = ", ".join(f"{b} ÷ {a} = {ratio}" for a, b in zip(terms, terms[1:], strict=False))
    steps = [
        f"The differences grow, so compare ratios instead: {ratios}.",
        f"Each term is {ratio} times the one before, so the next term is "
        f"{terms[-1]} × {ratio} = {answer}.",
    ]
    return rng.choice(_NEXT_TEMPLATES).format(terms=_listing(terms)), answer, steps


def _nth_term(rng: random.Random) -> tuple[str, int, list[str]]:
    start, step = rng.randint(-20, 40), rng.randint(2, 12)
    n = rng.randint(10, 60)
    terms = [start + i * step for i in range(4)]
    answer = start + (n - 1) * step
    steps = [
        f"The first term is {start} and each term adds {step} ({', '.join(_differences(terms))}).",
        f"To reach the {_ordinal(n)} term we add {step} a total of {n} - 1 = {n - 1} times.",
        f"So the {_ordinal(n)} term is {start} + {n - 1} × {step} = {answer}.",
    ]
    question = rng.choice(_NTH_TEMPLATES).format(terms=_listing(terms), nth=_ordinal(n))
    return question, answer, steps


def _quadratic_next(rng: random.Random) -> tuple[str, int, list[str]]:
    start, first_gap, growth = rng.randint(1, 30), rng.randint(1, 9), rng.randint(1, 4)
    terms = [start]
    for i in range(4):
        terms.append(terms[-1] + first_gap + i * growth)
    gaps = [b - a for a, b in zip(terms, terms[1:], strict=False)]
    next_gap = gaps[-1] + growth
    answer = terms[-1] + next_gap
    second = ", ".join(f"{b} - {a} = {b - a}" for a, b in zip(gaps, gaps[1:], strict=False))
    steps = [
        f"Differences between neighbours: {', '.join(_differences(terms))}.",
        f"The differences themselves grow by the same amount: {second}.",
        f"So the next difference is {gaps[-1]} + {growth} = {next_gap}.",
        f"The next term is {terms[-1]} + {next_gap} = {answer}.",
    ]
    return rng.choice(_NEXT_TEMPLATES).format(terms=_listing(terms)), answer, steps


def _series_sum(rng: random.Random) -> tuple[str, int, list[str]]:
    start, step, n = rng.randint(1, 30), rng.randint(2, 9), rng.randint(8, 40)
    terms = [start + i * step for i in range(4)]
    last = start + (n - 1) * step
    answer = n * (start + last) // 2  # n(first + last) is always even for whole terms
    steps = [
        f"The first term is {start} and the common difference is {step}.",
        f"The {_ordinal(n)} term is {start} + {n - 1} × {step} = {last}.",
        "Pairing the first term with the last, the second with the second-to-last, and so on, "
        "every pair has the same total, so the sum is n × (first + last) ÷ 2.",
        f"First plus last: {start} + {last} = {start + last}.",
        f"Sum: {n} × {start + last} ÷ 2 = {answer}.",
    ]
    question = rng.choice(_SUM_TEMPLATES).format(terms=_listing(terms), n=n)
    return question, answer, steps


_BUILDERS = {
    "arithmetic_next": _arithmetic_next,
    "geometric_next": _geometric_next,
    "nth_term": _nth_term,
    "quadratic_next": _quadratic_next,
    "sum": _series_sum,
}


class Sequences(TaskFamily):
    """Continue, index into, or sum number sequences."""

    name = "sequences"
    description = "Number sequences: next term, a far term, or the sum of the first terms."
    difficulties = (1, 2, 3)

    def compose(self, rng: random.Random, difficulty: int) -> Composed:
        question, value, steps = _BUILDERS[rng.choice(_KINDS[difficulty])](rng)
        answer = str(value)
        steps.append(f"So the answer is {answer}.")
        return question, answer, steps
