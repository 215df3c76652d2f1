"""Multi-digit arithmetic: chains of +, - and × evaluated with the order of operations.

Difficulty sets the number of operations, the size of the operands and whether parentheses
appear. The worked solution reduces the expression one operation at a time (innermost first,
multiplication before addition and subtraction) and shows the expression left after each step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from frugal.tasks.base import Composed, TaskFamily
from frugal.tasks.counting import counting_work

__all__ = ["Arithmetic"]


@dataclass(frozen=True)
class _Num:
    value: int


@dataclass(frozen=True)
class _Op:
    op: str  # "+", "-" or "×"
    left: _Node
    right: _Node


_Node = _Num | _Op
_PRECEDENCE = {"+": 1, "-": 1, "×": 2}
_VERB = {"+": "add", "-": "subtract", "×": "multiply"}


@dataclass(frozen=True)
class _Level:
    min_ops: int
    max_ops: int
    digits: int  # every +/- operand has exactly this many digits
    max_multiplier: int  # multipliers are 2..max_multiplier; 0 means no multiplication
    parentheses: bool


_LEVELS = {
    1: _Level(min_ops=1, max_ops=2, digits=2, max_multiplier=0, parentheses=False),
    2: _Level(min_ops=2, max_ops=3, digits=3, max_multiplier=29, parentheses=False),
    3: _Level(min_ops=3, max_ops=4, digits=4, max_multiplier=99, parentheses=True),
}

_TEMPLATES = (
    "Compute {expr}.",
    "What is the value of {expr}?",
    "Evaluate {expr}, following the usual order of operations.",
    "Calculate the exact value of the expression {expr}.",
    "Work out {expr} without a calculator.",
)


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def _evaluate(node: _Node) -> int:
    if isinstance(node, _Num):
        return node.value
    return _apply(node.op, _evaluate(node.left), _evaluate(node.right))


def _render(node: _Node, leftmost: bool = True) -> str:
    """Infix text with only the parentheses the tree needs.

    A negative number gets parentheses unless it opens the expression, so "5 - (-3)" never
    reads as "5 - -3".
    """
    if isinstance(node, _Num):
        return str(node.value) if node.value >= 0 or leftmost else f"({node.value})"
    left = _render_child(node.left, node.op, is_right=False, leftmost=leftmost)
    right = _render_child(node.right, node.op, is_right=True, leftmost=False)
    return f"{left} {node.op} {right}"


def _render_child(child: _Node, parent_op: str, *, is_right: bool, leftmost: bool) -> str:
    if isinstance(child, _Op):
        child_prec, parent_prec = _PRECEDENCE[child.op], _PRECEDENCE[parent_op]
        # A right operand of equal precedence is bracketed too: "a - (b + c)" differs from
        # "a - b + c", and bracketing "a + (b - c)" keeps the tree's evaluation order visible.
        if child_prec < parent_prec or (is_right and child_prec == parent_prec):
            return f"({_render(child)})"
    return _render(child, leftmost)


def _reduce_first(node: _Op) -> tuple[_Node, _Op]:
    """Evaluate the leftmost innermost operation; return the new tree and the step done."""
    if isinstance(node.left, _Op):
        new_left, step = _reduce_first(node.left)
        return _Op(node.op, new_left, node.right), step
    if isinstance(node.right, _Op):
        new_right, step = _reduce_first(node.right)
        return _Op(node.op, node.left, new_right), step
    return _Num(_evaluate(node)), node


def _operand(rng: random.Random, level: _Level) -> int:
    return rng.randint(10 ** (level.digits - 1), 10**level.digits - 1)


def _flat_tree(rng: random.Random, level: _Level, n_ops: int) -> _Node:
    """A left-to-right chain such as "a + b × m - c", parsed with × binding tighter."""
    ops = [rng.choice("+-×" if level.max_multiplier else "+-") for _ in range(n_ops)]
    if level.max_multiplier and "×" not in ops:
        ops[rng.randrange(n_ops)] = "×"  # every level-2 problem practises multiplication
    terms: list[_Node] = [_Num(_operand(rng, level))]
    signs: list[str] = []
    for op in ops:
        if op == "×":
            terms[-1] = _Op("×", terms[-1], _Num(rng.randint(2, level.max_multiplier)))
        else:
            signs.append(op)
            terms.append(_Num(_operand(rng, level)))
    tree = terms[0]
    for sign, term in zip(signs, terms[1:], strict=True):
        tree = _Op(sign, tree, term)
    return tree


def _nested_tree(rng: random.Random, level: _Level, n_ops: int) -> _Node:
    """A random expression tree; a multiplier is always a plain number, to keep values sane."""
    if n_ops == 0:
        return _Num(_operand(rng, level))
    op = rng.choice("+-×")
    if op == "×":
        multiplier = _Num(rng.randint(11, level.max_multiplier))
        return _Op("×", _nested_tree(rng, level, n_ops - 1), multiplier)
    n_left = rng.randint(0, n_ops - 1)
    left = _nested_tree(rng, level, n_left)
    return _Op(op, left, _nested_tree(rng, level, n_ops - 1 - n_left))


def _build(rng: random.Random, level: _Level) -> _Op:
    n_ops = rng.randint(level.min_ops, level.max_ops)
    if not level.parentheses:
        tree = _flat_tree(rng, level, n_ops)
        assert isinstance(tree, _Op)
        return tree
    # Redraw until the expression has brackets and a multiplication; most draws qualify.
    for _ in range(1000):
        tree = _nested_tree(rng, level, n_ops)
        text = _render(tree)
        if isinstance(tree, _Op) and "(" in text and "×" in text:
            return tree
    raise RuntimeError("could not draw a bracketed expression")  # pragma: no cover


def _solution(tree: _Op, answer: int) -> list[str]:
    expr = _render(tree)
    steps = []
    if "(" in expr:
        steps = [f"We need to evaluate {expr}.",
                 "Brackets come first, then multiplication, then addition and subtraction "
                 "from left to right."]
    elif "×" in expr:
        steps = [f"We need to evaluate {expr}.",
                 "Multiplication comes before addition and subtraction, which go from left to "
                 "right."]
    current: _Node = tree
    number = 1
    while isinstance(current, _Op):
        current, done = _reduce_first(current)
        assert isinstance(done.left, _Num) and isinstance(done.right, _Num)
        a, b, value = done.left.value, done.right.value, _evaluate(done)
        counted = counting_work(a, done.op, b) if done.op != "×" else None
        if counted:  # counted on in tens and ones: see frugal.tasks.counting
            line = f"Step {number} ({_VERB[done.op]}): {counted}."
        else:
            line = f"Step {number} ({_VERB[done.op]}): {_render(done)} = {value}."
        if isinstance(current, _Op):
            line += f" The expression is now {_render(current)}."
        steps.append(line)
        number += 1
    steps.append(f"So the value of the expression is {answer}.")
    return steps


class Arithmetic(TaskFamily):
    """Multi-digit +, -, × chains; level 3 adds parentheses."""

    name = "arithmetic"
    description = "Evaluate multi-digit +, -, × expressions using the order of operations."
    difficulties = (1, 2, 3)

    def compose(self, rng: random.Random, difficulty: int) -> Composed:
        tree = _build(rng, _LEVELS[difficulty])
        answer = _evaluate(tree)
        question = rng.choice(_TEMPLATES).format(expr=_render(tree))
        return question, str(answer), _solution(tree, answer)
