"""Arithmetic: answers re-checked by Python, and difficulty grows operands and operations."""

from __future__ import annotations

import re

from frugal.tasks import FAMILIES, Problem

FAMILY = FAMILIES["arithmetic"]
SEEDS = range(50)


def _expression(problem: Problem) -> str:
    match = re.search(r"[\d(][\d\s+\-×()]*[\d)]", problem.question)
    assert match, problem.question
    return match.group(0)


def _python_value(expression: str) -> int:
    python = expression.replace("×", "*")
    assert re.fullmatch(r"[\d\s+\-*()]+", python)
    return eval(python, {"__builtins__": {}})


def _operators(expression: str) -> int:
    return len(re.findall(r" [-+×] ", expression))


def test_answer_matches_python_evaluation() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            problem = FAMILY.generate(seed, level)
            assert int(problem.answer) == _python_value(_expression(problem)), problem


def test_solution_does_one_operation_per_step() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            problem = FAMILY.generate(seed, level)
            steps = [line for line in problem.solution.splitlines() if line.startswith("Step ")]
            assert len(steps) == _operators(_expression(problem))
            # After each step the remaining expression still has the final value.
            for line in steps[:-1]:
                rest = line.split("The expression is now ", 1)[1].rstrip(".")
                assert _python_value(rest) == int(problem.answer)


def test_difficulty_adds_operations_digits_multiplication_and_brackets() -> None:
    by_level = {
        level: [_expression(FAMILY.generate(seed, level)) for seed in SEEDS]
        for level in FAMILY.difficulties
    }
    ops = {level: [_operators(e) for e in exprs] for level, exprs in by_level.items()}
    assert max(ops[1]) <= 2 and min(ops[3]) >= 3
    assert sum(ops[1]) < sum(ops[2]) < sum(ops[3])

    def longest_number(expression: str) -> int:
        return max(len(n) for n in re.findall(r"\d+", expression))

    assert {longest_number(e) for e in by_level[1]} == {2}
    assert {longest_number(e) for e in by_level[3]} == {4}
    assert not any("×" in e or "(" in e for e in by_level[1])
    assert all("×" in e and "(" not in e for e in by_level[2])
    assert all("(" in e for e in by_level[3])
    # Bigger operands and more steps give much larger answers on average.
    magnitude = {
        level: sum(abs(_python_value(e)) for e in exprs) / len(exprs)
        for level, exprs in by_level.items()
    }
    assert magnitude[1] < magnitude[2] < magnitude[3]
