"""Arithmetic worked by counting, the one arithmetic a small model does reliably.

SmolLM2-135M, asked directly, adds two 2-digit numbers right about half the time and subtracts
them almost never, but it continues a count ("57, 67, 77" or "52, 51, 50") without error. The
worked solutions therefore move from one number by the other the way a child counts on, in
tens and then in ones, each count numbered so it stops at the right place: `72 - 57: from 72
count down 5 tens: 62 (1), ..., 22 (5); then count down 7 ones from 22: 21 (1), ..., 15 (7).
So 72 - 57 = 15`. A difference that falls below zero says so first and counts the other way
round (`68 - 71: 71 is more than 68, so the answer is minus 71 - 68: from 71 ...`). A
division counts in steps of the divisor. Only numbers below 100 (and quotients up to 30) are
counted; larger ones are stated directly.
"""

from __future__ import annotations

__all__ = ["COUNTABLE", "counting_work", "division_work", "sum_work"]

COUNTABLE = 100  # a number counted on must be below this: at most 9 tens and 9 ones
MAX_SKIPS = 30  # a division is counted in at most this many steps of the divisor


def _numbered(start: int, size: int, amount: int) -> str:
    return ", ".join(f"{start + size * i} ({i})" for i in range(1, amount + 1))


def _walk(x: int, y: int, direction: int) -> str:
    """From `x`, count `y` (< 100) up or down: its tens first, then its ones, each count
    starting again from where the last one ended."""
    tens, ones = divmod(y, 10)
    way = "up" if direction > 0 else "down"
    parts = []
    if tens:
        parts.append(f"count {way} {tens} ten{'s' if tens != 1 else ''}: "
                     + _numbered(x, 10 * direction, tens))
    if ones:
        at = x + 10 * tens * direction
        restart = f" from {at}" if tens else ""  # where the ones start, when tens came first
        parts.append(f"count {way} {ones} one{'s' if ones != 1 else ''}{restart}: "
                     + _numbered(at, direction, ones))
    return f"from {x} " + "; then ".join(parts)


def counting_work(a: int, op: str, b: int) -> str | None:
    """`a op b` (op `+` or `-`) worked by counting, ending `So a op b = result`; None when
    there is nothing to count (0) or it is 100 or more: then the step is stated directly."""
    if op not in "+-":
        raise ValueError(f"counting adds or subtracts, not {op!r}")
    result = a + b if op == "+" else a - b
    expression = f"{a} {op} {f'({b})' if b < 0 else b}"
    signed_b = b if op == "+" else -b
    if a >= 0 and signed_b > 0:  # up from a
        x, y, direction, said = a, signed_b, 1, ""
    elif a >= 0 and -signed_b <= a:  # down from a, staying at or above zero
        x, y, direction, said = a, -signed_b, -1, ""
    elif a >= 0:  # below zero: the difference the other way round, made negative
        x, y, direction = -signed_b, a, -1
        said = f"{-signed_b} is more than {a}, so the answer is minus {x} - {y}: "
    elif signed_b < 0:  # both negative: the sizes add up, and the sign stays
        x, y, direction = -a, -signed_b, 1
        said = f"both are negative, so the answer is minus {x} + {y}: "
    elif signed_b >= -a:  # a negative number and a larger positive one
        x, y, direction = signed_b, -a, -1
        said = f"{signed_b} is more than {-a}, so the answer is {x} - {y}: "
    else:
        x, y, direction = -a, signed_b, -1
        said = f"{signed_b} is less than {-a}, so the answer is minus {x} - {y}: "
    if y == 0 or y >= COUNTABLE:
        return None
    return f"{expression}: {said}{_walk(x, y, direction)}. So {expression} = {result}"


def sum_work(a: int, op: str, b: int) -> str:
    """`a op b = result`, counted on where `counting_work` can count it, else stated."""
    return counting_work(a, op, b) or f"{a} {op} {b} = {a + b if op == '+' else a - b}"


def division_work(n: int, d: int) -> str | None:
    """`n ÷ d` for whole numbers with `d` dividing `n`, counted in steps of `d` up to `n`;
    None when the quotient is above MAX_SKIPS or the numbers are not positive."""
    if d <= 0 or n <= 0 or n % d or n // d > MAX_SKIPS:
        return None
    return (f"count in steps of {d} up to {n}: {_numbered(0, d, n // d)}. "
            f"So {n} ÷ {d} = {n // d}")
