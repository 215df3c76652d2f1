"""Unit conversions of length, mass, time and volume with exact answers.

Units of one system form a ladder (mm < cm < m < km) with a whole-number factor between
neighbours. Level 1 converts one rung down (km -> m), so the answer is a whole number; level 2
converts one rung either way with decimals; level 3 crosses two rungs, one
multiplication or division per rung. All arithmetic is on `Fraction`s: a question's number is
drawn as a short decimal on whichever side keeps both sides terminating decimals.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction

from frugal.tasks.base import Composed, TaskFamily, format_number

__all__ = ["UnitConversion"]


@dataclass(frozen=True)
class _Ladder:
    dimension: str  # "length", "mass", "time" or "volume": picks the word-problem templates
    units: tuple[tuple[str, str], ...]  # (singular, plural), smallest unit first
    factors: tuple[int, ...]  # factors[i] = how many units[i] make one units[i + 1]


_LADDERS = (
    _Ladder(
        "length",
        (
            ("millimeter", "millimeters"),
            ("centimeter", "centimeters"),
            ("meter", "meters"),
            ("kilometer", "kilometers"),
        ),
        (10, 100, 1000),
    ),
    _Ladder(
        "length",
        (("inch", "inches"), ("foot", "feet"), ("yard", "yards"), ("mile", "miles")),
        (12, 3, 1760),
    ),
    _Ladder(
        "mass",
        (
            ("milligram", "milligrams"),
            ("gram", "grams"),
            ("kilogram", "kilograms"),
            ("tonne", "tonnes"),
        ),
        (1000, 1000, 1000),
    ),
    _Ladder("mass", (("ounce", "ounces"), ("pound", "pounds")), (16,)),
    _Ladder(
        "time",
        (
            ("second", "seconds"),
            ("minute", "minutes"),
            ("hour", "hours"),
            ("day", "days"),
            ("week", "weeks"),
        ),
        (60, 60, 24, 7),
    ),
    _Ladder(
        "volume",
        (("milliliter", "milliliters"), ("liter", "liters"), ("cubic meter", "cubic meters")),
        (1000, 1000),
    ),
    _Ladder(
        "volume",
        (("cup", "cups"), ("pint", "pints"), ("quart", "quarts"), ("gallon", "gallons")),
        (2, 2, 4),
    ),
)

_GENERIC_TEMPLATES = (
    "How many {to} are in {value} {source}?",
    "Convert {value} {source} to {to}.",
    "Express {value} {source} in {to}.",
)
_DIMENSION_TEMPLATES = {
    "length": "A hiking trail is {value} {source} long. How long is it in {to}?",
    "mass": "A package weighs {value} {source}. What is its weight in {to}?",
    "time": "A task takes {value} {source}. How many {to} is that?",
    "volume": "A container holds {value} {source} of water. How many {to} of water is that?",
}


def _nice_number(rng: random.Random, difficulty: int) -> Fraction:
    """The "round" side of a conversion: a whole number at level 1, else a short decimal."""
    if difficulty == 1:
        return Fraction(rng.randint(2, 25))
    high = 999 if difficulty == 2 else 99
    return Fraction(
        rng.randint(2, high), 10 ** rng.choice((1, 2) if difficulty == 2 else (0, 1, 2))
    )


def _quantity(value: Fraction, unit: tuple[str, str]) -> str:
    return f"{format_number(value)} {unit[0] if value == 1 else unit[1]}"


def _pick_units(rng: random.Random, difficulty: int) -> tuple[_Ladder, int, int]:
    """A ladder and (from, to) rung indices; level 1 always goes one rung down."""
    if difficulty == 3:
        ladder = rng.choice([lad for lad in _LADDERS if len(lad.units) >= 3])
        start, end = rng.choice(
            [
                (i, j)
                for i in range(len(ladder.units))
                for j in range(len(ladder.units))
                if abs(i - j) == 2
            ]
        )
        return ladder, start, end
    ladder = rng.choice(_LADDERS)
    low = rng.randrange(len(ladder.factors))
    if difficulty == 1 or rng.random() < 0.5:
        return ladder, low + 1, low  # down: big unit to small unit
    return ladder, low, low + 1


class UnitConversion(TaskFamily):
    """Convert between units of one measurement system; harder levels chain conversions."""

    name = "unit_conversion"
    description = "Convert lengths, masses, times and volumes between units, exactly."
    difficulties = (1, 2, 3)

    def compose(self, rng: random.Random, difficulty: int) -> Composed:
        ladder, start, end = _pick_units(rng, difficulty)
        lo, hi = min(start, end), max(start, end)
        total = 1
        for factor in ladder.factors[lo:hi]:
            total *= factor
        # Going down multiplies, so draw the value round; going up divides, so draw the answer
        # round and work back. Either way both numbers are terminating decimals.
        nice = _nice_number(rng, difficulty)
        if start > end:
            value, answer = nice, nice * total
        else:
            value, answer = nice * total, nice
        source, target = ladder.units[start], ladder.units[end]

        steps = [f"We convert {_quantity(value, source)} to {target[1]}."]
        current = value
        rungs = range(start, end, -1) if start > end else range(start, end)
        for rung in rungs:
            if start > end:  # one rung down: big unit rung -> small unit rung - 1
                factor, big, small = ladder.factors[rung - 1], rung, rung - 1
                new = current * factor
                how = f"multiply by {factor}: {format_number(current)} × {factor}"
                unit = ladder.units[small]
            else:  # one rung up: small unit rung -> big unit rung + 1
                factor, big, small = ladder.factors[rung], rung + 1, rung
                new = current / factor
                how = f"divide by {factor}: {format_number(current)} ÷ {factor}"
                unit = ladder.units[big]
            steps.append(
                f"1 {ladder.units[big][0]} = {factor} {ladder.units[small][1]}, so {how} = "
                f"{_quantity(new, unit)}."
            )
            current = new
        assert current == answer
        steps.append(f"So {_quantity(value, source)} is {_quantity(answer, target)}.")

        template = rng.choice((*_GENERIC_TEMPLATES, _DIMENSION_TEMPLATES[ladder.dimension]))
        shown = format_number(value)
        question = template.format(
            value=shown, source=source[0] if value == 1 else source[1], to=target[1]
        )
        return question, format_number(answer), steps
