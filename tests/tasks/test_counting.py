"""Counting on: every counted number follows from the one before, and the count ends on the
answer."""

from __future__ import annotations

import re

import pytest

from frugal.tasks.counting import COUNTABLE, counting_work, division_work, sum_work

_COUNT = re.compile(r"count (up|down) (\d) (tens?|ones?)(?: from (-?\d+))?: "
                    r"((?:-?\d+ \(\d\)(?:, )?)+)")


@pytest.mark.parametrize("op", ["+", "-"])
def test_each_count_steps_by_its_unit_and_ends_on_the_result(op: str) -> None:
    for a in range(-150, 200, 7):
        for b in range(-60, 99, 5):
            work = counting_work(a, op, b)
            result = a + b if op == "+" else a - b
            if work is None:  # nothing to count, or too much to count
                assert 0 in (a, b) or max(abs(a), abs(b)) >= COUNTABLE, (a, op, b)
                continue
            assert work.endswith(f"So {a} {op} {f'({b})' if b < 0 else b} = {result}"), work
            at = int(re.search(r"from (\d+) count", work).group(1))
            for way, amount, unit, restart, seen in _COUNT.findall(work):
                if restart:
                    assert int(restart) == at, work
                step = (10 if unit.startswith("ten") else 1) * (1 if way == "up" else -1)
                expected = [f"{at + step * i} ({i})" for i in range(1, int(amount) + 1)]
                assert seen.rstrip(", ").split(", ") == expected, work
                at += step * int(amount)
            assert at == abs(result), work


def test_the_written_form() -> None:
    assert counting_work(72, "-", 57) == (
        "72 - 57: from 72 count down 5 tens: 62 (1), 52 (2), 42 (3), 32 (4), 22 (5); then count "
        "down 7 ones from 22: 21 (1), 20 (2), 19 (3), 18 (4), 17 (5), 16 (6), 15 (7). "
        "So 72 - 57 = 15")
    assert counting_work(68, "-", 71).startswith(
        "68 - 71: 71 is more than 68, so the answer is minus 71 - 68: from 71 count down 6 tens")
    assert counting_work(150, "+", 300) is None and counting_work(5, "+", 0) is None
    # What the solutions write: the count where there is one, else the sum stated.
    assert sum_work(72, "-", 57) == counting_work(72, "-", 57)
    assert sum_work(150, "+", 300) == "150 + 300 = 450" and sum_work(5, "-", 0) == "5 - 0 = 5"
    with pytest.raises(ValueError, match="adds or subtracts"):
        counting_work(2, "×", 3)


def test_a_division_counts_in_steps_of_the_divisor() -> None:
    assert division_work(24, 3) == ("count in steps of 3 up to 24: 3 (1), 6 (2), 9 (3), 12 (4), "
                                    "15 (5), 18 (6), 21 (7), 24 (8). So 24 ÷ 3 = 8")
    assert division_work(31 * 2, 2) is None  # more steps than MAX_SKIPS
    assert division_work(7, 2) is None and division_work(-6, 3) is None
