"""Dates: every answer re-derived with datetime from the dates and numbers in the question."""

from __future__ import annotations

import re
from datetime import date, timedelta

from frugal.tasks import FAMILIES, Problem

FAMILY = FAMILIES["dates"]
SEEDS = range(50)
MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_DATE = re.compile(rf"\b({'|'.join(MONTHS)}) (\d{{1,2}}), (\d{{4}})\b")
_WEEKDAY = re.compile(rf"\b({'|'.join(WEEKDAYS)})\b")


def _to_date(match: re.Match[str]) -> date:
    month, day, year = match.groups()
    return date(int(year), MONTHS.index(month) + 1, int(day))


def _parse_date(text: str) -> date:
    match = _DATE.fullmatch(text)
    assert match, text
    return _to_date(match)


def _expected(problem: Problem) -> tuple[str, int]:
    """(expected answer, day span) computed with datetime from the question alone."""
    question = problem.question
    dates = [_to_date(m) for m in _DATE.finditer(question)]
    weekdays = _WEEKDAY.findall(question)
    numbers = {int(n) for n in re.findall(r"\b\d+\b", _DATE.sub("", question))}
    if len(dates) == 2:
        start, end = dates
        span = (end - start).days
        if weekdays:  # "<start> is a <weekday>. What day of the week is <end>?"
            assert weekdays == [WEEKDAYS[start.weekday()]], "the stated weekday must be true"
            return WEEKDAYS[end.weekday()], span
        return str(span), span
    (n,) = numbers
    if len(dates) == 1:
        sign = -1 if "before" in question else 1
        assert ("before" in question) != ("after" in question or "later" in question)
        day = dates[0] + sign * timedelta(days=n)
        return f"{MONTHS[day.month - 1]} {day.day}, {day.year}", n
    (weekday,) = weekdays
    return WEEKDAYS[(WEEKDAYS.index(weekday) + n) % 7], n


def test_answer_matches_datetime() -> None:
    # Many seeds, because month ends, leap days and February 29 start dates are rare cases.
    for level in FAMILY.difficulties:
        for seed in range(400):
            problem = FAMILY.generate(seed, level)
            assert problem.answer == _expected(problem)[0], problem


def test_date_answers_are_real_dates_in_question_format() -> None:
    for level in FAMILY.difficulties:
        for seed in SEEDS:
            answer = FAMILY.generate(seed, level).answer
            if "," in answer:
                _parse_date(answer)
            else:
                assert answer in WEEKDAYS or answer.isdigit(), answer


def test_difficulty_widens_the_span_and_adds_kinds() -> None:
    problems = {
        level: [FAMILY.generate(seed, level) for seed in range(100)]
        for level in FAMILY.difficulties
    }
    spans = {level: [_expected(p)[1] for p in ps] for level, ps in problems.items()}
    assert max(spans[1]) <= 28
    assert min(spans[2]) >= 20 and max(spans[2]) <= 150
    assert min(spans[3]) >= 200
    # Level 1 never counts between two dates; level 3 asks for a weekday from an anchor date.
    assert not any(len(_DATE.findall(p.question)) == 2 for p in problems[1])
    assert any(
        _WEEKDAY.search(p.question) and len(_DATE.findall(p.question)) == 2 for p in problems[3]
    )
    # Longer spans cross years, and the solution then counts in whole years.
    assert any("one year" in p.solution for p in problems[3])
    assert not any("one year" in p.solution for p in problems[1] + problems[2])


def test_leap_days_are_counted() -> None:
    # datetime already agrees with every answer; here the worked solutions must also say where
    # a leap day makes a year 366 days or a February 29 days long.
    solutions = [FAMILY.generate(seed, level).solution for level in (2, 3) for seed in range(300)]
    assert any("366 days (it includes a February 29)" in s for s in solutions)
    leap_february = re.compile(r"All 29 days of February|All of February \d{4} adds 29 days")
    assert any(leap_february.search(s) for s in solutions)
