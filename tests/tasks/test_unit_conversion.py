"""Unit conversion: answers re-derived from the legal unit definitions, independently."""

from __future__ import annotations

import re
from fractions import Fraction

from frugal.tasks import FAMILIES, Problem

FAMILY = FAMILIES["unit_conversion"]
SEEDS = range(50)

# Each unit's size in one base unit per dimension (meter, gram, second, milliliter), from the
# legal definitions (inch = 2.54 cm, pound = 453.59237 g, US gallon = 3785.411784 mL), so the
# test does not reuse the generator's neighbour-to-neighbour factors.
_SIZES = {
    ("millimeter", "millimeters"): ("length", Fraction("0.001")),
    ("centimeter", "centimeters"): ("length", Fraction("0.01")),
    ("meter", "meters"): ("length", Fraction(1)),
    ("kilometer", "kilometers"): ("length", Fraction(1000)),
    ("inch", "inches"): ("length", Fraction("0.0254")),
    ("foot", "feet"): ("length", Fraction("0.3048")),
    ("yard", "yards"): ("length", Fraction("0.9144")),
    ("mile", "miles"): ("length", Fraction("1609.344")),
    ("milligram", "milligrams"): ("mass", Fraction("0.001")),
    ("gram", "grams"): ("mass", Fraction(1)),
    ("kilogram", "kilograms"): ("mass", Fraction(1000)),
    ("tonne", "tonnes"): ("mass", Fraction(1_000_000)),
    ("ounce", "ounces"): ("mass", Fraction("28.349523125")),
    ("pound", "pounds"): ("mass", Fraction("453.59237")),
    ("second", "seconds"): ("time", Fraction(1)),
    ("minute", "minutes"): ("time", Fraction(60)),
    ("hour", "hours"): ("time", Fraction(3600)),
    ("day", "days"): ("time", Fraction(86400)),
    ("week", "weeks"): ("time", Fraction(604800)),
    ("milliliter", "milliliters"): ("volume", Fraction(1)),
    ("liter", "liters"): ("volume", Fraction(1000)),
    ("cubic meter", "cubic meters"): ("volume", Fraction(1_000_000)),
    ("cup", "cups"): ("volume", Fraction("3785.411784") / 16),
    ("pint", "pints"): ("volume", Fraction("3785.411784") / 8),
    ("quart", "quarts"): ("volume", Fraction("3785.411784") / 4),
    ("gallon", "gallons"): ("volume", Fraction("3785.411784")),
}
_BY_NAME = {name: size for names, size in _SIZES.items() for name in names}
_UNIT = "|".join(sorted(map(re.escape, _BY_NAME), key=len, reverse=True))
_CONVERSION_LINE = re.compile(r"^1 [a-z ]+ = \d+ [a-z ]+, so (?:multiply|divide) by \d+", re.M)


def _parse(problem: Problem) -> tuple[Fraction, str, str]:
    """(value, from unit, to unit) read from the question text."""
    numbers = re.findall(r"\d+(?:\.\d+)?", problem.question)
    assert len(numbers) == 1, problem.question
    source = re.search(rf"{re.escape(numbers[0])} ({_UNIT})\b", problem.question)
    assert source, problem.question
    units = re.findall(rf"\b({_UNIT})\b", problem.question)
    assert len(units) == 2 and source.group(1) in units, problem.question
    units.remove(source.group(1))
    return Fraction(numbers[0]), source.group(1), units[0]


def test_answer_matches_independent_conversion() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            problem = FAMILY.generate(seed, level)
            value, source, target = _parse(problem)
            (dim_from, size_from), (dim_to, size_to) = _BY_NAME[source], _BY_NAME[target]
            assert dim_from == dim_to, problem.question
            assert Fraction(problem.answer) == value * size_from / size_to, problem


def test_answers_are_exact_decimals_without_float_noise() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            answer = FAMILY.generate(seed, level).answer
            assert re.fullmatch(r"\d+(?:\.\d*[1-9])?", answer), answer


def test_difficulty_adds_decimals_and_chained_conversions() -> None:
    def conversions(problem: Problem) -> int:
        return len(_CONVERSION_LINE.findall(problem.solution))

    def has_decimal(problem: Problem) -> bool:
        return "." in problem.answer or re.search(r"\d\.\d", problem.question) is not None

    easy = [FAMILY.generate(seed, 1) for seed in SEEDS]
    medium = [FAMILY.generate(seed, 2) for seed in SEEDS]
    hard = [FAMILY.generate(seed, 3) for seed in SEEDS]
    # Level 1: one step down to a smaller unit, whole numbers only.
    assert all(conversions(p) == 1 and not has_decimal(p) for p in easy)
    assert all(Fraction(p.answer) > _parse(p)[0] for p in easy)
    # Level 2: one step either way, usually with decimals.
    assert all(conversions(p) == 1 for p in medium)
    assert sum(has_decimal(p) for p in medium) >= 40
    assert any(Fraction(p.answer) < _parse(p)[0] for p in medium)
    # Level 3: two chained conversions.
    assert all(conversions(p) == 2 for p in hard)
