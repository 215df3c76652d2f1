"""Sequences: answers recomputed by brute force from the terms shown in the question."""

from __future__ import annotations

import re

from frugal.tasks import FAMILIES, Problem

FAMILY = FAMILIES["sequences"]
SEEDS = range(50)


def _terms(problem: Problem) -> list[int]:
    match = re.search(r"(-?\d+(?:, -?\d+)+), \.\.\.", problem.question)
    assert match, problem.question
    return [int(t) for t in match.group(1).split(", ")]


def _differences(values: list[int]) -> list[int]:
    return [b - a for a, b in zip(values, values[1:], strict=False)]


def _kind_and_expected(problem: Problem) -> tuple[str, int]:
    terms, question = _terms(problem), problem.question
    count = re.search(r"first (\d+) terms", question)
    index = re.search(r"(\d+)(?:st|nd|rd|th) term", question)
    if count or index:
        step = _differences(terms)
        assert len(set(step)) == 1, "an arithmetic sequence was promised"
        n = int((count or index).group(1))
        sequence = [terms[0] + i * step[0] for i in range(n)]
        return ("sum", sum(sequence)) if count else ("nth", sequence[-1])
    ratios = {b / a for a, b in zip(terms, terms[1:], strict=False) if a}
    if len(ratios) == 1 and 0 not in terms and ratios != {1.0}:
        return "geometric", terms[-1] * round(ratios.pop())
    first = _differences(terms)
    if len(set(first)) == 1:
        return "arithmetic", terms[-1] + first[0]
    second = _differences(first)
    assert len(set(second)) == 1, problem.question
    return "quadratic", terms[-1] + first[-1] + second[0]


def test_answer_matches_brute_force() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            problem = FAMILY.generate(seed, level)
            assert int(problem.answer) == _kind_and_expected(problem)[1], problem


def test_difficulty_moves_to_harder_kinds() -> None:
    kinds = {
        level: {_kind_and_expected(FAMILY.generate(seed, level))[0] for seed in range(100)}
        for level in FAMILY.difficulties
    }
    assert kinds == {1: {"arithmetic"}, 2: {"geometric", "nth"}, 3: {"quadratic", "sum"}}
