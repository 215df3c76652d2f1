"""Linear equations in one unknown with an integer solution.

Level 1 needs one step (`x + b = c` or `a x = c`), level 2 two steps (`a x + b = c`),
level 3 has the unknown on both sides (`a x + b = c x + d`), sometimes behind brackets
(`a(x + p) = c x + d`). The solution is drawn first and the constants are computed from it,
so every equation has exactly one integer solution.
"""

from __future__ import annotations

import random

from frugal.tasks.base import Composed, TaskFamily
from frugal.tasks.counting import division_work, sum_work

__all__ = ["LinearEquations"]

_VARIABLES = ("x", "y", "n", "t", "k")
_TEMPLATES = (
    "Solve for {v}: {eq}.",
    "Find the value of {v} that makes {eq} true.",
    "If {eq}, what is {v}?",
    "What value of {v} satisfies the equation {eq}?",
    "Determine {v} given that {eq}.",
)


def _nonzero(rng: random.Random, low: int, high: int) -> int:
    """A random integer with `low <= |n| <= high` and a random sign."""
    return rng.randint(low, high) * rng.choice((1, -1))


def _term(coef: int, var: str) -> str:
    """`3x`, `x`, `-x`: a coefficient of one is not written."""
    if coef == 1:
        return var
    if coef == -1:
        return f"-{var}"
    return f"{coef}{var}"


def _linear(coef: int, const: int, var: str) -> str:
    """`3x + 5`, `-x - 7`, `2x`, `12`: a linear expression written the usual way."""
    if coef == 0:
        return str(const)
    text = _term(coef, var)
    if const:
        text += f" + {const}" if const > 0 else f" - {-const}"
    return text


def _paren(num: int) -> str:
    """A number as an operand: negatives in brackets so "12 ÷ (-3)" reads unambiguously."""
    return f"({num})" if num < 0 else str(num)


def _move_constant(b: int) -> str:
    return f"Subtract {b} from both sides" if b > 0 else f"Add {-b} to both sides"


def _move_term(c: int, var: str) -> str:
    return (
        f"Subtract {_term(c, var)} from both sides"
        if c > 0
        else f"Add {_term(-c, var)} to both sides"
    )


def _solve_steps(a: int, b: int, c: int, d: int, var: str, x: int) -> list[str]:
    """Steps that turn `a v + b = c v + d` into `v = x`."""
    steps = []
    coef = a - c
    if c:
        steps.append(
            f"{_move_term(c, var)} to collect the {var} terms on the left: "
            f"{_linear(coef, b, var)} = {d}."
        )
    if b:
        moved = sum_work(d, "-", b) if b > 0 else sum_work(d, "+", -b)  # counted if small
        steps.append(f"{_move_constant(b)}: {_term(coef, var)} = {moved}.")
    if coef == -1:
        steps.append(f"Multiply both sides by -1: {var} = {x}.")
    elif coef != 1:
        counted = division_work(d - b, coef)  # counted in steps of coef where it is small
        steps.append(f"Divide both sides by {coef}: {var} = {d - b} ÷ {_paren(coef)}"
                     + (f"; {counted}." if counted else f" = {x}."))
    return steps


class LinearEquations(TaskFamily):
    """Solve `a x + b = c` style equations; harder levels need more steps."""

    name = "linear_equations"
    description = "Solve linear equations in one unknown with an integer solution."
    difficulties = (1, 2, 3)

    def compose(self, rng: random.Random, difficulty: int) -> Composed:
        var = rng.choice(_VARIABLES)
        # Every level reduces to a v + b = c v + d; "distribute" is only set for a(v + p).
        distribute: tuple[int, int] | None = None
        if difficulty == 1:
            x = rng.randint(1, 30)
            if rng.random() < 0.5:
                a, b, c = 1, _nonzero(rng, 1, 30), 0
            else:
                a, b, c = rng.randint(2, 12), 0, 0
            lhs = _linear(a, b, var)
        elif difficulty == 2:
            x = _nonzero(rng, 1, 15)
            a, b, c = _nonzero(rng, 2, 12), _nonzero(rng, 1, 40), 0
            lhs = _linear(a, b, var)
        else:
            x = _nonzero(rng, 1, 15)
            a = _nonzero(rng, 2, 9)
            c = rng.choice([n for n in range(-9, 10) if n not in (0, a)])
            if rng.random() < 0.5:
                p = _nonzero(rng, 1, 12)
                distribute = (a, p)
                b = a * p
                lhs = f"{a}({_linear(1, p, var)})"
            else:
                b = _nonzero(rng, 1, 30)
                lhs = _linear(a, b, var)
        d = (a - c) * x + b
        equation = f"{lhs} = {_linear(c, d, var)}"

        steps = [f"We want {var} by itself on one side of {equation}."]
        if distribute is not None:
            steps.append(
                f"Expand the brackets: {lhs} = {_linear(a, b, var)}, so the equation becomes "
                f"{_linear(a, b, var)} = {_linear(c, d, var)}."
            )
        steps += _solve_steps(a, b, c, d, var, x)
        steps.append(
            f"Check: with {var} = {x} the left side is {a * x + b} and the right side is "
            f"{c * x + d}, so they agree."
        )
        return rng.choice(_TEMPLATES).format(v=var, eq=equation), str(x), steps
