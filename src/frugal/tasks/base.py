"""The interface every synthetic task family implements, and the helpers they share.

A task family turns `(seed, difficulty)` into a `Problem`: a word problem, its exact
reference answer and a correct worked solution. Generation is a pure function of its inputs so
a question's `meta` (family, difficulty, seed) is enough to rebuild it later, which is what the
`program` teacher relies on to produce a trace without any model.

Every family shares one `generate` (the level check, the seeded random stream, the Problem
with its `Final Answer` line); a family only declares how it composes one problem from that
stream (`compose`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "Composed",
    "Problem",
    "TaskFamily",
    "check_difficulty",
    "family_rng",
    "format_fraction",
    "format_number",
    "is_terminating",
    "make_solution",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One generated problem; `solution` ends with the line `Final Answer: {answer}`."""

    family: str
    difficulty: int
    seed: int
    question: str  # natural-language word problem
    answer: str  # canonical reference answer, gradable by frugal.grading.is_correct
    solution: str  # plain-language worked solution, one step per line


# What a family composes: the question, its reference answer, and the worked steps.
Composed = tuple[str, str, list[str]]


class TaskFamily(ABC):
    """A generator of problems of one kind at a few difficulty levels."""

    name: str
    description: str
    difficulties: tuple[int, ...]

    def generate(self, seed: int, difficulty: int) -> Problem:
        check_difficulty(self.name, self.difficulties, difficulty)
        question, answer, steps = self.compose(family_rng(self.name, seed, difficulty),
                                               difficulty)
        return Problem(family=self.name, difficulty=difficulty, seed=seed, question=question,
                       answer=answer, solution=make_solution(steps, answer))

    @abstractmethod
    def compose(self, rng: random.Random, difficulty: int) -> Composed:
        """One problem of this family at `difficulty`, drawn from `rng` alone."""


def family_rng(name: str, seed: int, difficulty: int) -> random.Random:
    """A random generator determined by (family, difficulty, seed) alone.

    Seeding with a string hashes it with SHA-512 inside `random` (not the salted `hash()`),
    so the stream is identical across Python runs and platforms.
    """
    return random.Random(f"{name}:{difficulty}:{seed}")


def check_difficulty(name: str, difficulties: Sequence[int], difficulty: int) -> None:
    """Raise `ValueError` naming the valid levels when `difficulty` is not one of them."""
    if isinstance(difficulty, bool) or difficulty not in difficulties:
        valid = ", ".join(str(d) for d in difficulties)
        raise ValueError(f"{name}: difficulty must be one of {valid}, got {difficulty!r}")


def is_terminating(value: Fraction) -> bool:
    """Whether `value` has a finite decimal expansion (denominator only has factors 2 and 5)."""
    den = value.denominator
    for prime in (2, 5):
        while den % prime == 0:
            den //= prime
    return den == 1


def format_number(value: Fraction | int) -> str:
    """Exact decimal text: `2500`, `0.75`, `-3.125`; never scientific, no trailing zeros.

    Raises `ValueError` for a value with no finite decimal expansion (such as 1/3): answers must
    be exact, and silently rounding would make the reference wrong.
    """
    value = Fraction(value)
    if not is_terminating(value):
        raise ValueError(f"{value} has no finite decimal expansion")
    sign = "-" if value < 0 else ""
    value = abs(value)
    places = 0
    while (value * 10**places).denominator != 1:
        places += 1
    scaled = int(value * 10**places)
    if places == 0:
        return f"{sign}{scaled}"
    whole, frac = divmod(scaled, 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"


def format_fraction(value: Fraction) -> str:
    """Lowest-terms text `7/12` (`Fraction` always reduces), or `3` for a whole number."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def make_solution(steps: Sequence[str], answer: str) -> str:
    """Join the worked steps and append the `Final Answer:` line graders and teachers read."""
    return "\n".join([*steps, f"Final Answer: {answer}"])
