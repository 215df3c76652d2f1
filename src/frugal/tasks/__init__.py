"""Built-in synthetic task families: the offline question pool and the expert domains.

Each family (arithmetic, linear equations, unit conversion, dates, percentages, sequences)
generates word problems with exact reference answers and correct worked solutions from
`(seed, difficulty)` alone. This module turns them into pools of
`frugal.questions.Question` objects and back: a question's `meta` records family,
difficulty and seed, and `rebuild` regenerates the problem from it, which is how the
`program` teacher writes traces without calling any model.

Typical use::

    problems = generate_problems(per_family=200, seed=0)
    questions = [problem_to_question(p) for p in problems]
    problem = rebuild(questions[0].meta)
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from frugal.questions import Question, question_id
from frugal.tasks.arithmetic import Arithmetic
from frugal.tasks.base import Problem, TaskFamily
from frugal.tasks.dates import Dates
from frugal.tasks.linear_equations import LinearEquations
from frugal.tasks.percentages import Percentages
from frugal.tasks.sequences import Sequences
from frugal.tasks.unit_conversion import UnitConversion

__all__ = [
    "FAMILIES",
    "Problem",
    "TaskFamily",
    "generate_problems",
    "problem_to_question",
    "rebuild",
]

FAMILIES: dict[str, TaskFamily] = {
    family.name: family
    for family in (
        Arithmetic(),
        LinearEquations(),
        UnitConversion(),
        Dates(),
        Percentages(),
        Sequences(),
    )
}

# Draws allowed per requested problem before giving up on finding distinct questions: far more
# than any family needs at sensible sizes, but it stops an impossible request from looping.
_MAX_DRAWS_PER_PROBLEM = 50


def _family(name: str) -> TaskFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        valid = ", ".join(sorted(FAMILIES))
        raise ValueError(f"unknown task family {name!r}; valid families: {valid}") from None


def generate_problems(
    families: Sequence[str] | None = None,
    per_family: int | Mapping[str, int] = 100,
    difficulties: Sequence[int] | None = None,
    seed: int = 0,
) -> list[Problem]:
    """`per_family` distinct problems from each family, spread evenly over the difficulties.

    `per_family` is one count for every family, or a count per family name (the families are
    then its names, so a mix can give a hard family more examples). `families` defaults to all
    of `FAMILIES` (a single name is accepted too; repeated names count once) and
    `difficulties` to each family's own levels. Problem `i` of a
    family gets level `difficulties[i % len(difficulties)]`, so the counts per level differ
    by at most one. Problem seeds are drawn from a generator seeded by
    `(seed, family)`; a draw whose question text repeats an earlier one is skipped, so the
    result has no exact duplicates. Raises `ValueError` for an unknown family, a level a family
    does not have, or a request larger than a family can fill with distinct questions.
    """
    if isinstance(families, str):
        families = [families]  # one name, not a sequence of one-letter names
    if isinstance(per_family, Mapping):
        if families is not None and set(families) != set(per_family):
            raise ValueError(
                f"per_family names the families {sorted(per_family)} but families is "
                f"{sorted(families)}. Fix: leave families unset, or give a count for each.")
        families = list(per_family)
    names = list(dict.fromkeys(FAMILIES if families is None else families))
    counts = per_family if isinstance(per_family, Mapping) else dict.fromkeys(names, per_family)
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(
                f"per_family must be a non-negative integer, got {count!r} for {name}")
    # Check every name and level before generating anything.
    plans: list[tuple[TaskFamily, tuple[int, ...]]] = []
    for name in names:
        family = _family(name)
        levels = tuple(family.difficulties if difficulties is None else difficulties)
        if not levels:
            raise ValueError("difficulties must not be empty")
        for level in levels:
            if level not in family.difficulties:
                valid = ", ".join(map(str, family.difficulties))
                raise ValueError(
                    f"{family.name} has no difficulty {level!r}; valid difficulties: {valid}"
                )
        plans.append((family, levels))

    problems: list[Problem] = []
    seen: set[str] = set()
    for family, levels in plans:
        seeds = random.Random(f"pool:{seed}:{family.name}")
        wanted = counts[family.name]
        for index in range(wanted):
            level = levels[index % len(levels)]
            for _ in range(_MAX_DRAWS_PER_PROBLEM):
                problem = family.generate(seeds.getrandbits(32), level)
                key = question_id(problem.question)
                if key not in seen:
                    break
            else:
                raise ValueError(
                    f"{family.name} could not produce {wanted} distinct questions at "
                    f"difficulty {level}; ask for fewer"
                )
            seen.add(key)
            problems.append(problem)
    return problems


def problem_to_question(problem: Problem) -> Question:
    """The pool record for a problem; its `meta` is enough for `rebuild`."""
    return Question(
        id=question_id(problem.question),
        question=problem.question,
        answer=problem.answer,
        domain=problem.family,
        source="tasks",
        solution=problem.solution,
        meta={"family": problem.family, "difficulty": problem.difficulty, "seed": problem.seed},
    )


def rebuild(meta: Mapping[str, object] | None) -> Problem:
    """Regenerate the problem a question was made from, given the question's `meta`.

    Raises `ValueError` naming what is wrong: no meta, a missing key, an unknown family, or a
    difficulty or seed that is not an integer.
    """
    if meta is None:
        raise ValueError("question has no meta: it was not generated by a task family")
    for key in ("family", "difficulty", "seed"):
        if key not in meta:
            raise ValueError(f"question meta is missing {key!r}; it has {sorted(meta)}")
    family = _family(str(meta["family"]))
    difficulty, seed = meta["difficulty"], meta["seed"]
    for key, value in (("difficulty", difficulty), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"question meta {key!r} must be an integer, got {value!r}")
    assert isinstance(difficulty, int) and isinstance(seed, int)
    return family.generate(seed, difficulty)
