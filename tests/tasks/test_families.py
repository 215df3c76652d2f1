"""Contract every task family keeps: gradable answers, worked solutions, determinism."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from fractions import Fraction

import pytest

from frugal.grading import grade, is_correct
from frugal.tasks import FAMILIES, Problem, TaskFamily
from frugal.tasks.base import format_number

SEEDS = range(50)
CASES = [(name, level) for name, family in FAMILIES.items() for level in family.difficulties]


def _problems(name: str, level: int) -> list[Problem]:
    return [FAMILIES[name].generate(seed, level) for seed in SEEDS]


def test_at_least_five_families_with_the_interface() -> None:
    assert len(FAMILIES) >= 5
    for name, family in FAMILIES.items():
        assert isinstance(family, TaskFamily)
        assert family.name == name
        assert family.description
        assert len(family.difficulties) >= 2


@pytest.mark.parametrize(("name", "level"), CASES)
def test_solution_ends_with_final_answer_and_grades_correct(name: str, level: int) -> None:
    for problem in _problems(name, level):
        assert (problem.family, problem.difficulty) == (name, level)
        lines = problem.solution.splitlines()
        assert lines[-1] == f"Final Answer: {problem.answer}"
        assert "Final Answer:" not in "\n".join(lines[:-1])
        assert len(lines) >= 3  # at least two reasoning lines before the answer line
        assert all(line.strip() for line in lines)
        assert grade(problem.solution, problem.answer).correct, problem


@pytest.mark.parametrize(("name", "level"), CASES)
def test_question_is_prose_and_does_not_leak_the_solution(name: str, level: int) -> None:
    for problem in _problems(name, level):
        assert problem.question.strip() == problem.question
        assert problem.question[-1] in ".?"
        assert "Final Answer" not in problem.question
        assert len(problem.question.split()) >= 3


@pytest.mark.parametrize(("name", "level"), CASES)
def test_a_wrong_answer_does_not_grade_correct(name: str, level: int) -> None:
    # The answer format must let the grader tell a near miss from the reference.
    for problem in _problems(name, level)[:15]:
        wrong = _near_miss(problem.answer)
        assert not is_correct(wrong, problem.answer), (wrong, problem.answer)
        assert not grade(f"Working...\nFinal Answer: {wrong}", problem.answer).correct


def _near_miss(answer: str) -> str:
    """An answer one unit away from ``answer``, in the same format."""
    weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    if answer in weekdays:
        return weekdays[(weekdays.index(answer) + 1) % 7]
    if "," in answer:
        day = datetime.strptime(answer, "%B %d, %Y") + timedelta(days=1)
        return f"{day:%B} {day.day}, {day.year}"
    if answer.endswith("%"):
        return f"{int(answer[:-1]) + 1}%"
    value = Fraction(answer)
    if "/" in answer:
        return f"{value.numerator + 1}/{value.denominator}"
    if "." in answer:
        return format_number(value + Fraction(1, 10 ** len(answer.split(".")[1])))
    return str(int(value) + 1)


@pytest.mark.parametrize(("name", "level"), CASES)
def test_generation_is_deterministic(name: str, level: int) -> None:
    family = FAMILIES[name]
    for seed in (0, 7, 123456789):
        assert family.generate(seed, level) == family.generate(seed, level)


@pytest.mark.parametrize(("name", "level"), CASES)
def test_different_seeds_give_mostly_different_questions(name: str, level: int) -> None:
    questions = {problem.question for problem in _problems(name, level)}
    assert len(questions) >= 45


def test_generation_is_stable_across_interpreters() -> None:
    # Seeding is by string (SHA-512 inside `random`), never the salted hash(), so a fresh
    # interpreter with a different hash seed regenerates exactly the same problems.
    script = (
        "import json, dataclasses\n"
        "from frugal.tasks import FAMILIES\n"
        "print(json.dumps([dataclasses.asdict(f.generate(s, d)) for f in FAMILIES.values() "
        "for d in f.difficulties for s in (1, 2)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout
    here = [f.generate(s, d) for f in FAMILIES.values() for d in f.difficulties for s in (1, 2)]
    assert [Problem(**row) for row in json.loads(out)] == here


@pytest.mark.parametrize("name", list(FAMILIES))
def test_unknown_difficulty_is_rejected(name: str) -> None:
    family = FAMILIES[name]
    for bad in (0, max(family.difficulties) + 1, True):
        with pytest.raises(ValueError, match="difficulty"):
            family.generate(0, bad)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_harder_levels_have_longer_solutions(name: str) -> None:
    family = FAMILIES[name]
    easiest, hardest = min(family.difficulties), max(family.difficulties)

    def mean_lines(level: int) -> float:
        return sum(len(p.solution.splitlines()) for p in _problems(name, level)) / len(SEEDS)

    assert mean_lines(hardest) > mean_lines(easiest)


# A stated calculation such as "27 + 28 + 31 = 86", "45 - (-12) = 57" or "29.07 ÷ 3 = 9.69".
_NUM = r"(?:\(-\d+(?:\.\d+)?\)|-?\d+(?:\.\d+)?)"  # a bracketed negative: "(-12)"
_CALCULATION = re.compile(
    rf"(?<![\w.])({_NUM}(?: [-+×÷] {_NUM})+) = (-?\d+(?:\.\d+)?)(?![\d/]| [-+×÷])"
)


def _exact(expression: str) -> Fraction:
    python = re.sub(r"\d+(?:\.\d+)?", lambda m: f"Fraction('{m.group(0)}')", expression)
    python = python.replace("×", "*").replace("÷", "/")
    return eval(python, {"__builtins__": {}, "Fraction": Fraction})


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_calculation_stated_in_a_solution_is_right(name: str) -> None:
    family = FAMILIES[name]
    checked = 0
    for level in family.difficulties:
        for problem in _problems(name, level):
            for expression, result in _CALCULATION.findall(problem.solution):
                assert _exact(expression) == Fraction(result), (expression, result, problem)
                checked += 1
    # Most solutions state at least one calculation, so the check really ran.
    assert checked >= len(SEEDS) * len(family.difficulties)
