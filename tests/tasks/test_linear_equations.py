"""Linear equations: the answer satisfies the equation parsed from the question, uniquely."""

from __future__ import annotations

import re

from frugal.tasks import FAMILIES, Problem

FAMILY = FAMILIES["linear_equations"]
SEEDS = range(50)

# One side of an equation as the questions write it: "3x + 5", "-x", "2(x - 12)", "20".
_TERM = r"-?\d*(?:[a-z]|\([a-z] [-+] \d+\))|-?\d+"
_SIDE = rf"(?:{_TERM})(?: [-+] (?:\d*[a-z]|\d+))*"
_EQUATION = re.compile(rf"(?<![A-Za-z])({_SIDE}) = ({_SIDE})(?![\w(])")


def _equation(problem: Problem) -> tuple[str, str, str]:
    """(left side, right side, variable) of the equation in the question."""
    match = _EQUATION.search(problem.question)
    assert match, problem.question
    left, right = match.groups()
    variables = set(re.findall(r"[a-z]", left + right))
    assert len(variables) == 1, problem.question
    return left, right, variables.pop()


def _value(side: str, var: str, x: int) -> int:
    python = re.sub(r"(\d)([a-z(])", r"\1*\2", side)
    return eval(python, {"__builtins__": {}}, {var: x})


def test_answer_solves_the_equation_and_is_the_only_solution() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            problem = FAMILY.generate(seed, level)
            left, right, var = _equation(problem)
            x = int(problem.answer)
            assert _value(left, var, x) == _value(right, var, x), problem
            # Linear with a nonzero net coefficient: any other value breaks the equality.
            assert _value(left, var, x + 1) != _value(right, var, x + 1), problem


def test_difficulty_adds_steps_and_puts_the_unknown_on_both_sides() -> None:
    def occurrences(problem: Problem) -> tuple[int, int]:
        left, right, var = _equation(problem)
        return left.count(var), right.count(var)

    for seed in SEEDS:
        easy = FAMILY.generate(seed, 1)
        assert occurrences(easy) == (1, 0)
        left, _, var = _equation(easy)
        # One step: either "x + b" or "a x", never both.
        assert left.startswith(var) or not re.search(r" [-+] ", left)
        medium = FAMILY.generate(seed, 2)
        assert occurrences(medium) == (1, 0)
        left, _, var = _equation(medium)
        assert re.fullmatch(rf"-?\d+{var} [-+] \d+", left), left
        assert occurrences(FAMILY.generate(seed, 3)) == (1, 1)


def test_level_three_includes_brackets_to_expand() -> None:
    questions = [FAMILY.generate(seed, 3).question for seed in SEEDS]
    assert any("(" in q for q in questions)
    assert any("(" not in q for q in questions)
