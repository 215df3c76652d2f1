"""Shared helpers: exact number formatting and stable seeding."""

from __future__ import annotations

from fractions import Fraction

import pytest

from frugal.tasks.base import (
    check_difficulty,
    family_rng,
    format_fraction,
    format_number,
    is_terminating,
    make_solution,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(2500), "2500"),
        (Fraction(3, 4), "0.75"),
        (Fraction(-25, 8), "-3.125"),
        (Fraction(1, 10**6), "0.000001"),
        (Fraction(6_200_000_000), "6200000000"),
        (Fraction(0), "0"),
        (7, "7"),
    ],
)
def test_format_number_is_exact(value: Fraction, text: str) -> None:
    assert format_number(value) == text
    assert Fraction(text) == value


def test_format_number_refuses_repeating_decimals() -> None:
    assert not is_terminating(Fraction(1, 3))
    assert is_terminating(Fraction(7, 40))
    with pytest.raises(ValueError, match="finite decimal"):
        format_number(Fraction(1, 3))


def test_format_fraction_lowest_terms() -> None:
    assert format_fraction(Fraction(14, 24)) == "7/12"
    assert format_fraction(Fraction(12, 4)) == "3"
    assert format_fraction(Fraction(-17, 12)) == "-17/12"


def test_family_rng_depends_only_on_its_inputs() -> None:
    draws = [family_rng("dates", 5, 2).random() for _ in range(2)]
    assert draws[0] == draws[1]
    assert family_rng("dates", 5, 2).random() != family_rng("dates", 6, 2).random()
    assert family_rng("dates", 5, 2).random() != family_rng("dates", 5, 3).random()
    assert family_rng("dates", 5, 2).random() != family_rng("arithmetic", 5, 2).random()


def test_check_difficulty_and_make_solution() -> None:
    check_difficulty("x", (1, 2), 2)
    with pytest.raises(ValueError, match="one of 1, 2"):
        check_difficulty("x", (1, 2), 3)
    assert make_solution(["a", "b"], "4") == "a\nb\nFinal Answer: 4"
