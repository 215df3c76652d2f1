"""Percentages and fractions: answers recomputed with Fraction from the question's numbers."""

from __future__ import annotations

import re
from fractions import Fraction

from frugal.tasks import FAMILIES, Problem

FAMILY = FAMILIES["percentages"]
SEEDS = range(50)
_FRACTION_EXPR = re.compile(r"\d+/\d+(?: [-+] \d+/\d+)+")
_NUMBER = re.compile(r"(\d+(?:\.\d+)?)(%?)")


def _kind(problem: Problem) -> str:
    q = problem.question
    if "/" in q:
        return "fractions"
    if re.search(r"(increased|decreased) by \d+%.*(increased|decreased) by \d+%", q):
        return "successive"
    if "before the" in q or "original" in q:
        return "reverse"
    if re.search(r"from \d+ (?:dollars )?to \d+", q):
        return "change"
    return "percent_of"


def _expected(problem: Problem) -> Fraction:
    """The answer's value (a percentage as its number of percent), from the question alone."""
    q, kind = problem.question, _kind(problem)
    if kind == "fractions":
        match = _FRACTION_EXPR.search(q)
        if match:
            total = Fraction(0)
            for sign, frac in re.findall(r"(^|[-+] )(\d+/\d+)", match.group(0)):
                total += -Fraction(frac) if sign.startswith("-") else Fraction(frac)
            return total
        assert "total" in q or "altogether" in q, q  # worded problems only ever add
        return sum((Fraction(f) for f in re.findall(r"\d+/\d+", q)), Fraction(0))
    if kind == "successive":
        value = Fraction(_NUMBER.search(q).group(1))
        for verb, percent in re.findall(r"(increased|decreased) by (\d+)%", q):
            value *= 1 + Fraction(int(percent), 100) * (1 if verb == "increased" else -1)
        return value
    if kind == "change":
        a, b = (Fraction(n) for n in re.search(r"from (\d+) (?:dollars )?to (\d+)", q).groups())
        assert ("increase" in q) == (b > a) and ("decrease" in q) == (b < a), q
        return abs(b - a) / a * 100
    numbers = _NUMBER.findall(q)
    assert len(numbers) == 2, q
    percent = next(Fraction(n) for n, pct in numbers if pct)
    other = next(Fraction(n) for n, pct in numbers if not pct)
    if kind == "reverse":
        up = "increase" in q or "raise" in q
        assert up != ("discount" in q or "decrease" in q), q
        return other / (1 + percent / 100 * (1 if up else -1))
    return other * percent / 100


def _answer_value(answer: str) -> Fraction:
    return Fraction(answer.removesuffix("%"))


def test_answer_matches_independent_computation() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            problem = FAMILY.generate(seed, level)
            assert _answer_value(problem.answer) == _expected(problem), problem


def test_answer_format_fits_the_question() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            problem = FAMILY.generate(seed, level)
            kind, answer = _kind(problem), problem.answer
            if kind == "fractions":
                # Lowest terms: Fraction reduces, so the text must already be the reduced form.
                value = Fraction(answer)
                expected = str(value.numerator) if value.denominator == 1 else str(value)
                assert answer == expected and value > 0, answer
            elif kind == "change":
                assert re.fullmatch(r"\d+%", answer), answer
            else:
                assert re.fullmatch(r"\d+(?:\.\d*[1-9])?", answer), answer


def test_difficulty_changes_the_kinds_of_problem() -> None:
    kinds = {
        level: {_kind(FAMILY.generate(seed, level)) for seed in range(100)}
        for level in FAMILY.difficulties
    }
    assert kinds[1] == {"percent_of", "fractions"}
    assert kinds[2] == {"percent_of", "change", "fractions"}
    assert kinds[3] == {"successive", "reverse", "fractions"}

    def fraction_terms(level: int) -> set[int]:
        questions = [FAMILY.generate(seed, level).question for seed in range(100)]
        return {len(re.findall(r"\d+/\d+", q)) for q in questions if "/" in q}

    assert fraction_terms(1) == fraction_terms(2) == {2}
    assert fraction_terms(3) == {3}
    # Level 1 fractions share or nearly share a denominator; level 2 ones never do.
    for seed in range(100):
        problem = FAMILY.generate(seed, 2)
        if _kind(problem) == "fractions":
            dens = [int(d) for d in re.findall(r"\d+/(\d+)", problem.question)]
            assert dens[0] != dens[1]
    # Level 1 percentages of a number come out whole; level 2 ones often do not.
    easy = [FAMILY.generate(seed, 1) for seed in range(100)]
    assert all("." not in p.answer for p in easy if _kind(p) == "percent_of")
    medium = [FAMILY.generate(seed, 2) for seed in range(100)]
    assert any("." in p.answer for p in medium if _kind(p) == "percent_of")
