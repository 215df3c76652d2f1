"""Percentages and fractions: percent of a number, percent change, and adding fractions.

Level 1 takes a round percentage of a number and adds fractions with related denominators;
level 2 uses any whole percentage, asks for a percent change, and adds or subtracts unlike
fractions; level 3 chains two percentage changes, undoes a discount or raise, and combines three
fractions. Numbers are drawn so every answer is exact: a whole number, a terminating decimal, a
percentage, or a fraction in lowest terms such as `7/12`.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

from frugal.tasks.base import Composed, TaskFamily, format_fraction, format_number

__all__ = ["Percentages"]

_KINDS = {
    1: ("percent_of", "fractions"),
    2: ("percent_of", "percent_change", "fractions"),
    3: ("successive_change", "reverse_percent", "fractions"),
}

_PERCENT_OF_WORDED = (
    "A school has {base} students, and {p}% of them walk to school. "
    "How many students walk to school?",
    "A jar holds {base} marbles and {p}% of them are red. How many red marbles are in the jar?",
)
_PERCENT_OF_PLAIN = (
    "What is {p}% of {base}?",
    "Find {p}% of {base}.",
    "A shop's sales were {base} dollars, and {p}% of them came from online orders. "
    "How many dollars of sales came from online orders?",
)
_CHANGE_TEMPLATES = {
    "increase": (
        "A price rose from {a} dollars to {b} dollars. By what percent did it increase?",
        "The number of members of a club went from {a} to {b}. What was the percent increase?",
    ),
    "decrease": (
        "The population of a village fell from {a} to {b}. By what percent did it decrease?",
        "A laptop's price dropped from {a} dollars to {b} dollars. What was the percent decrease?",
    ),
}
_SUCCESSIVE_TEMPLATES = (
    "A jacket costs {base} dollars. Its price is {verb1} by {p1}%, and then the new price is "
    "{verb2} by {p2}%. What is the final price in dollars?",
    "An investment worth {base} dollars {verb1} by {p1}% in the first year and then {verb2} by "
    "{p2}% in the second year. What is it worth after two years, in dollars?",
)
_REVERSE_TEMPLATES = {
    "decrease": (
        "After a {p}% discount, a coat costs {final} dollars. "
        "What was the original price in dollars?",
        "After a {p}% decrease, a museum had {final} visitors in a month. "
        "How many visitors did it have before the decrease?",
    ),
    "increase": (
        "After a {p}% increase, a gym membership costs {final} dollars a year. "
        "What did it cost per year before the increase?",
        "The price of a concert ticket increased by {p}% to {final} dollars. "
        "What was the price before the increase?",
    ),
}
_FRACTION_PLAIN = (
    "What is {expr}? Give the answer as a fraction in lowest terms.",
    "Compute {expr} and simplify the result.",
    "Simplify {expr}.",
)
_FRACTION_WORDED = (
    "A recipe needs {f1} cup of sugar and {f2} cup of milk. "
    "How many cups is that in total, as a fraction in lowest terms?",
    "Maya ran {f1} of a mile in the morning and {f2} of a mile in the evening. "
    "How far did she run altogether, in miles, as a fraction in lowest terms?",
)


def _multiplier(percent: int, direction: str) -> Fraction:
    """Factor that applies a `percent` increase or decrease: 1.25 for +25%, 0.8 for -20%."""
    return 1 + Fraction(percent, 100) * (1 if direction == "increase" else -1)


def _step_base(percent: int) -> int:
    """Smallest whole base whose `percent`% is whole: 4 for 25%, 20 for 5%."""
    return 100 // math.gcd(percent, 100)


def _percent_of(rng: random.Random, difficulty: int) -> tuple[str, str, list[str]]:
    if difficulty == 1:
        p = rng.choice((5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80))
        base = _step_base(p) * rng.randint(2, 400 // _step_base(p) + 2)
        template = rng.choice(_PERCENT_OF_WORDED + _PERCENT_OF_PLAIN[:2])
    else:
        p, base = rng.randint(1, 99), rng.randint(20, 900)
        template = rng.choice(_PERCENT_OF_PLAIN)
    result = Fraction(base * p, 100)
    answer = format_number(result)
    share = Fraction(p, 100)
    if difficulty == 1:  # a whole answer: the base divides by the share's denominator
        # A round percentage is a simple fraction: divide, then multiply by a small number.
        part = base // share.denominator
        steps = [f"{p}% is {p}/100 = {share.numerator}/{share.denominator}, so {p}% of {base} "
                 f"is {base} ÷ {share.denominator}"
                 + (f" × {share.numerator}." if share.numerator > 1 else "."),
                 f"{base} ÷ {share.denominator} = {part}."]
        if share.numerator > 1:
            steps.append(f"{part} × {share.numerator} = {part * share.numerator}.")
        return template.format(p=p, base=base), answer, steps
    steps = [
        f"{p}% means {p} out of every 100, so {p}% of {base} is {base} × {p} ÷ 100.",
        f"First multiply: {base} × {p} = {base * p}.",
        f"Then divide by 100: {base * p} ÷ 100 = {answer}.",
    ]
    return template.format(p=p, base=base), answer, steps


def _percent_change(rng: random.Random) -> tuple[str, str, list[str]]:
    direction = rng.choice(("increase", "decrease"))
    q = rng.randint(5, 150) if direction == "increase" else rng.randint(5, 90)
    a = _step_base(q) * rng.randint(1, max(1, 1000 // _step_base(q)))
    if a < 10:
        a *= 10  # keep the starting value from looking trivially small
    b = int(a * _multiplier(q, direction))
    diff = abs(b - a)
    ratio = Fraction(diff, a)
    steps = [
        f"The {direction} is {max(a, b)} - {min(a, b)} = {diff}.",
        f"Compare it with the original value: {diff} ÷ {a} = {format_number(ratio)}.",
        f"As a percentage: {format_number(ratio)} × 100 = {q}%.",
    ]
    question = rng.choice(_CHANGE_TEMPLATES[direction]).format(a=a, b=b)
    return question, f"{q}%", steps


def _successive_change(rng: random.Random) -> tuple[str, str, list[str]]:
    base = rng.randint(2, 60) * 20
    changes = [
        (rng.choice(("increase", "decrease")), rng.choice(range(5, 55, 5))) for _ in range(2)
    ]
    value = Fraction(base)
    steps = [f"Apply the changes one after the other, starting from {base} dollars."]
    for order, (direction, p) in zip(("first", "second"), changes, strict=True):
        factor = _multiplier(p, direction)
        new = value * factor
        steps.append(
            f"The {order} change, a {p}% {direction}, multiplies the value by "
            f"{format_number(factor)}: {format_number(value)} × {format_number(factor)} = "
            f"{format_number(new)}."
        )
        value = new
    steps.append(
        "The second percentage is taken of the new value, not the original, so the two "
        "percentages cannot simply be added."
    )
    answer = format_number(value)
    steps.append(f"So the final value is {answer} dollars.")
    (d1, p1), (d2, p2) = changes
    question = rng.choice(_SUCCESSIVE_TEMPLATES).format(
        base=base, p1=p1, p2=p2, verb1=f"{d1}d", verb2=f"{d2}d"
    )
    return question, answer, steps


def _reverse_percent(rng: random.Random) -> tuple[str, str, list[str]]:
    direction = rng.choice(("increase", "decrease"))
    p = rng.choice(range(5, 65, 5))
    original = _step_base(p) * rng.randint(3, 1000 // _step_base(p) + 3)
    factor = _multiplier(p, direction)
    final = int(original * factor)
    sign, kept = ("+", 100 + p) if direction == "increase" else ("-", 100 - p)
    steps = [
        f"After a {p}% {direction} the value is 100% {sign} {p}% = {kept}% of the original, "
        f"so original × {format_number(factor)} = {final}.",
        f"Divide to undo it: original = {final} ÷ {format_number(factor)} = {original}.",
        f"Check: {original} × {format_number(factor)} = {final}.",
    ]
    question = rng.choice(_REVERSE_TEMPLATES[direction]).format(p=p, final=final)
    return question, str(original), steps


def _proper_fraction(rng: random.Random, den: int) -> Fraction:
    """A fraction strictly between 0 and 1 written in lowest terms with denominator `den`."""
    return Fraction(rng.choice([n for n in range(1, den) if math.gcd(n, den) == 1]), den)


def _fractions(rng: random.Random, difficulty: int) -> tuple[str, str, list[str]]:
    if difficulty == 1:
        den = rng.randint(3, 12)
        other = den * rng.choice((1, 2, 3)) if den <= 6 else den
        terms, ops = [_proper_fraction(rng, den), _proper_fraction(rng, other)], ["+"]
    else:
        count = 2 if difficulty == 2 else 3
        dens = rng.sample(range(2, 13), count)
        terms = [_proper_fraction(rng, den) for den in dens]
        ops = [rng.choice("+-")] if difficulty == 2 else ["+", "-"]
        if difficulty == 2 and ops[0] == "-":
            terms.sort(reverse=True)  # keep the difference positive
        elif difficulty == 3 and terms[0] + terms[1] <= terms[2]:
            terms[1], terms[2] = terms[2], terms[1]  # now a + c - b, which is positive
    result = terms[0]
    for op, term in zip(ops, terms[1:], strict=True):
        result = result + term if op == "+" else result - term
    lcd = math.lcm(*(t.denominator for t in terms))
    numerators = [t.numerator * (lcd // t.denominator) for t in terms]
    texts = [format_fraction(t) for t in terms]
    expr = " ".join([texts[0], *(f"{op} {t}" for op, t in zip(ops, texts[1:], strict=True))])

    dens = sorted({t.denominator for t in terms})
    if len(dens) == 1:
        steps = [f"The fractions already share the denominator {lcd}."]
    else:
        steps = [f"The least common denominator of {', '.join(map(str, dens))} is {lcd}."]
    rewrites = [
        f"{text} = {n}/{lcd}"
        for text, n, t in zip(texts, numerators, terms, strict=True)
        if t.denominator != lcd
    ]
    if rewrites:
        steps.append(f"Rewrite over {lcd}: {', '.join(rewrites)}.")
    combined = " ".join(
        [str(numerators[0]), *(f"{op} {n}" for op, n in zip(ops, numerators[1:], strict=True))]
    )
    raw = sum(n if op == "+" else -n for op, n in zip(["+", *ops], numerators, strict=True))
    steps.append(f"Combine the numerators: {combined} = {raw}, giving {raw}/{lcd}.")
    answer = format_fraction(result)
    common = math.gcd(raw, lcd)
    if common > 1:
        steps.append(f"Divide top and bottom by {common}: {raw}/{lcd} = {answer}.")
    else:
        steps.append(f"{raw}/{lcd} is already in lowest terms.")

    if len(terms) == 2 and ops == ["+"] and rng.random() < 0.4:
        question = rng.choice(_FRACTION_WORDED).format(f1=texts[0], f2=texts[1])
    else:
        question = rng.choice(_FRACTION_PLAIN).format(expr=expr)
    return question, answer, steps


class Percentages(TaskFamily):
    """Percent of a number, percent change, and fraction arithmetic with exact answers."""

    name = "percentages"
    description = "Percentages (of a number, change, reverse) and adding or subtracting fractions."
    difficulties = (1, 2, 3)

    def compose(self, rng: random.Random, difficulty: int) -> Composed:
        kind = rng.choice(_KINDS[difficulty])
        if kind == "percent_of":
            question, answer, steps = _percent_of(rng, difficulty)
        elif kind == "percent_change":
            question, answer, steps = _percent_change(rng)
        elif kind == "successive_change":
            question, answer, steps = _successive_change(rng)
        elif kind == "reverse_percent":
            question, answer, steps = _reverse_percent(rng)
        else:
            question, answer, steps = _fractions(rng, difficulty)
        return question, answer, steps
