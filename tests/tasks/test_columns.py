"""Column arithmetic: every column is a true one-digit step, and the columns spell the result."""

from __future__ import annotations

import re

import pytest

from frugal.tasks.columns import column_work

_COLUMN = re.compile(r"(\d+)(?: - 1)? [-+] (\d)(?: \+ 1)? = (\d+)")


def _spelled(work: str) -> int:
    """The number the columns spell: each column's last digit, ones first, and a final carry."""
    columns = [c for c in work.split(": ")[-1].split(", ") if _COLUMN.fullmatch(c)]
    digits = [int(c.rsplit("= ", 1)[1]) for c in columns]
    text = "".join(str(d % 10) for d in reversed(digits))
    if "+" in columns[0] and digits[-1] >= 10:
        text = "1" + text
    return int(text)


@pytest.mark.parametrize("op", ["+", "-"])
def test_columns_are_true_and_spell_the_result(op: str) -> None:
    for a in range(-130, 1300, 7):
        for b in range(-40, 260, 3):
            work = column_work(a, op, b)
            result = a + b if op == "+" else a - b
            assert work.endswith(f"= {result}"), work
            for column in work.split(": ")[-1].split(", ")[:-1]:
                left, right = column.split(" = ")
                assert eval(left) == int(right), (work, column)  # noqa: S307 - digits only
            assert _spelled(work) == abs(result), work


def test_the_written_form_reads_as_on_paper() -> None:
    assert column_work(47, "+", 85) == (
        "47 + 85 in columns: 7 + 5 = 12, 4 + 8 + 1 = 13, so 47 + 85 = 132")
    assert column_work(91, "-", 64) == (
        "91 - 64 in columns: 11 - 4 = 7, 9 - 1 - 6 = 2, so 91 - 64 = 27")
    assert column_work(23, "-", 87).startswith("23 - 87 is below zero, so take 87 - 23")
    assert column_work(5, "-", -3).endswith("so 5 - (-3) = 8")
    with pytest.raises(ValueError, match="adds or subtracts"):
        column_work(2, "×", 3)
