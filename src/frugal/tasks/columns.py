"""Written column arithmetic: addition and subtraction worked one digit at a time, as text.

A small model cannot add 47 + 85 in one step, but it knows that 7 + 5 = 12. The worked
solutions therefore do every addition and subtraction the way it is done on paper, ones column
first: `7 + 5 = 12, 4 + 8 + 1 = 13, so 47 + 85 = 132`, where `+ 1` is the carry;
`91 - 64` borrows as `11 - 4 = 7, 9 - 1 - 6 = 2, so 91 - 64 = 27`. Every stated calculation
is true, so a solution still checks line by line.
"""

from __future__ import annotations

__all__ = ["column_work", "product_work", "quotient_work"]


def _digits(n: int, width: int) -> list[int]:
    """The digits of `n` from the ones column up, padded with zeros to `width`."""
    return [(n // 10**i) % 10 for i in range(width)]


def _add_columns(a: int, b: int) -> list[str]:
    width = max(len(str(a)), len(str(b)))
    columns, carry = [], 0
    for top, bottom in zip(_digits(a, width), _digits(b, width), strict=True):
        total = top + bottom + carry
        columns.append(f"{top} + {bottom}{' + 1' if carry else ''} = {total}")
        carry = total // 10
    return columns


def _subtract_columns(a: int, b: int) -> list[str]:
    """Columns of a - b for a >= b >= 0; a borrowed ten shows as a leading 1 on the top digit."""
    width = len(str(a))
    columns, borrow = [], 0
    for top, bottom in zip(_digits(a, width), _digits(b, width), strict=True):
        borrows = top - borrow < bottom
        shown = top + 10 if borrows else top
        paid = " - 1" if borrow else ""
        columns.append(f"{shown}{paid} - {bottom} = {shown - borrow - bottom}")
        borrow = int(borrows)
    return columns


def _written(expression: str, columns: list[str], result: int) -> str:
    return f"{', '.join(columns)}, so {expression} = {result}"


def _direct(expression: str, columns: list[str], result: int) -> str:
    return f"{expression} in columns: {_written(expression, columns, result)}"


def column_work(a: int, op: str, b: int) -> str:
    """`a op b` (op `+` or `-`, any signs) worked in columns: `a op b in columns: ..., so
    a op b = result`.

    A negative operand or result is reduced to whole-number columns first, saying so:
    `23 - 87` works out 87 - 23 and puts the minus sign back.
    """
    if op not in "+-":
        raise ValueError(f"column arithmetic adds or subtracts, not {op!r}")
    result = a + b if op == "+" else a - b
    shown_b = f"({b})" if b < 0 else str(b)
    expression = f"{a} {op} {shown_b}"
    # a op b as (sign) x ± y with whole numbers x, y.
    signed_b = b if op == "+" else -b
    if a >= 0 and signed_b >= 0:
        return _direct(expression, _add_columns(a, signed_b), result)
    if a < 0 and signed_b < 0:
        return (f"{expression} has two negative parts, so add {-a} + {-signed_b} in columns and "
                f"keep the minus sign: {_written(expression, _add_columns(-a, -signed_b), result)}")
    big, small = (a, -signed_b) if a >= 0 else (signed_b, -a)  # result = big - small
    if big >= small:
        return _direct(expression, _subtract_columns(big, small), result)
    return (f"{expression} is below zero, so take {small} - {big} in columns and put a minus "
            f"sign: {_written(expression, _subtract_columns(small, big), result)}")


def _zeros(n: int) -> int:
    """How many zeros `n` ends with (0 for 0)."""
    count = 0
    while n and n % 10 == 0:
        n, count = n // 10, count + 1
    return count


def _zeros_text(count: int) -> str:
    return f"{count} zero{'s' if count != 1 else ''}"


def _multiplier_rank(n: int) -> tuple[int, int, int]:
    """Lower is the better multiplier: fewer non-zero digits, a shorter number once its zeros
    are off, then more zeros (they are only written down)."""
    zeros = _zeros(n)
    return (sum(d != "0" for d in str(n)), len(str(n // 10**zeros)), -zeros)


def _times_digit(a: int, digit: int) -> str:
    """`a × digit` in columns, ones first; `+ c` is the carry from the column before."""
    if a < 10:
        return f"{a} × {digit} = {a * digit}"
    columns, carry = [], 0
    for top in _digits(a, len(str(a))):
        total = top * digit + carry
        columns.append(f"{top} × {digit}{f' + {carry}' if carry else ''} = {total}")
        carry = total // 10
    return _direct(f"{a} × {digit}", columns, a * digit)


def product_work(a: int, b: int) -> str:
    """`a × b` for whole numbers, written so that every step is a one-digit product, a column
    addition or writing zeros: `14 × 60` is 14 × 6 in columns, then one zero."""
    if a < 0 or b < 0:
        raise ValueError("column products take whole numbers")
    product = a * b
    if _multiplier_rank(a) < _multiplier_rank(b):
        a, b = b, a  # the multiplier is the number with fewer non-zero digits
    expression = f"{a} × {b}"
    if a < 10 and b < 10 or 0 in (a, b):
        return f"{expression} = {product}"
    zeros = _zeros(b)
    core = b // 10**zeros
    if core == 1:
        return f"{expression}: put {_zeros_text(zeros)} after {a}, so {expression} = {product}"
    if core < 10:
        work = _times_digit(a, core)
    else:  # one partial product per digit of the multiplier, then their sum
        parts = [int(d) * 10**i for i, d in enumerate(reversed(str(core))) if d != "0"][::-1]
        pieces = [product_work(a, part) for part in parts]
        total = parts_sum = a * parts[0]
        sums = []
        for part in parts[1:]:
            sums.append(column_work(total, "+", a * part))
            total += a * part
        parts_sum = total
        work = (f"{a} × {core} = {' + '.join(f'{a} × {p}' for p in parts)}; "
                + "; ".join(pieces + sums) + f"; so {a} × {core} = {parts_sum}")
    if zeros:
        work += f"; put {_zeros_text(zeros)} after {a * core}, so {expression} = {product}"
    return work


def quotient_work(n: int, d: int) -> str:
    """`n ÷ d` for a whole `n` that `d` divides: zeros dropped for tens, else short division,
    left to right, each step `14 ÷ 4 is 3 remainder 2`."""
    if n < 0 or d <= 0 or n % d:
        raise ValueError(f"{n} ÷ {d} is not a whole-number division")
    expression, quotient = f"{n} ÷ {d}", n // d
    zeros = min(_zeros(d), _zeros(n))
    if zeros:
        dropped = f"drop {_zeros_text(zeros)} from both"
        if d == 10**zeros:
            return f"{expression}: {dropped}, so {expression} = {quotient}"
        rest = quotient_work(n // 10**zeros, d // 10**zeros)
        return f"{expression}: {dropped}, then {rest}"
    steps, remainder, digits = [], 0, str(n)
    # The first step takes as many leading digits as it needs to reach the divisor.
    lead = next((i for i in range(1, len(digits)) if int(digits[:i]) >= d), len(digits))
    for number, digit in enumerate([digits[:lead], *digits[lead:]]):
        current = remainder * 10 ** len(digit) + int(digit) if number else int(digit)
        step, remainder = divmod(current, d)
        left = f" remainder {remainder}" if remainder else ""
        steps.append(f"{current} ÷ {d} is {step}{left}")
    if len(steps) == 1:
        return f"{expression} = {quotient}"
    return f"{expression} in columns: {', '.join(steps)}, so {expression} = {quotient}"
