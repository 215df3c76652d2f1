"""Calendar arithmetic: weekdays and dates N days away, and the number of days between dates.

Level 1 asks for the weekday N days after a weekday, or a date a few days later; level 2 moves
up to about five months forward or back, or counts days between two dates; level 3 spans years
(leap days included) and asks for the weekday of a date given the weekday of another. Answers
come from `datetime`; the worked solution walks the calendar in whole years, then month by
month, the way a person would count.
"""

from __future__ import annotations

import calendar
import random
from datetime import date, timedelta

from frugal.tasks.base import Composed, TaskFamily
from frugal.tasks.counting import sum_work

__all__ = ["Dates"]

# Spelled out here rather than taken from `calendar`, whose names follow the locale.
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DAY = timedelta(days=1)

_KINDS = {
    1: ("weekday_after", "date_after"),
    2: ("date_after", "date_before", "days_between"),
    3: ("date_after", "date_before", "days_between", "weekday_of_date"),
}
# Inclusive range of the day count (N, or the gap between the two dates) per level.
_SPANS = {1: (3, 28), 2: (20, 150), 3: (200, 1200)}

_TEMPLATES = {
    "weekday_after": (
        "Today is {weekday}. What day of the week will it be {n} days from today?",
        "A library book is borrowed on a {weekday} and is due back {n} days later. "
        "On what day of the week is it due?",
        "If it is {weekday} now, what day of the week will it be in {n} days?",
    ),
    "date_after": (
        "What date is {n} days after {start}?",
        "A package was shipped on {start} and arrived {n} days later. On what date did it arrive?",
        "A subscription starts on {start} and ends {n} days later. On what date does it end?",
    ),
    "date_before": (
        "What date was {n} days before {start}?",
        "A concert takes place on {start}. Tickets went on sale {n} days before the concert. "
        "On what date did tickets go on sale?",
        "A report is due on {start}. The first draft is due {n} days before that. "
        "On what date is the first draft due?",
    ),
    "days_between": (
        "How many days are there from {start} to {end}?",
        "A project started on {start} and finished on {end}. "
        "How many days after the start did it finish?",
        "How many days pass between {start} and {end}?",
    ),
    "weekday_of_date": (
        "{start} is a {weekday}. What day of the week is {end}?",
        "Given that {start} falls on a {weekday}, on what day of the week does {end} fall?",
    ),
}


def _fmt(day: date) -> str:
    """`March 5, 2024`: unambiguous, and graded as text (ISO dates would read as arithmetic)."""
    return f"{_MONTHS[day.month - 1]} {day.day}, {day.year}"


def _month_name(day: date) -> str:
    return f"{_MONTHS[day.month - 1]} {day.year}"


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def _shift_year(day: date, years: int) -> date | None:
    """The same date `years` later, or None for February 29 (it has no same date)."""
    if (day.month, day.day) == (2, 29):
        return None
    return day.replace(year=day.year + years)


def _year_note(span: int) -> str:
    return " (it includes a February 29)" if span == 366 else ""


def _walk_forward(start: date, n: int) -> tuple[date, list[str]]:
    """Count `n` days forward from `start`: whole years first, then add the remaining days to
    the day of the month and take away the length of each month passed, counted on where the
    numbers are small."""
    steps: list[str] = []
    cur, left = start, n
    while (nxt := _shift_year(cur, 1)) is not None and (span := (nxt - cur).days) <= left:
        steps.append(
            f"From {_fmt(cur)} to {_fmt(nxt)} is one year, {span} days{_year_note(span)}; "
            f"{left} - {span} = {left - span} days remain."
        )
        cur, left = nxt, left - span
    if left == 0:
        return cur, steps
    day = cur.day + left
    steps.append(f"Add the days to the day of the month: {sum_work(cur.day, '+', left)}.")
    month = cur.replace(day=1)
    while day > (length := _month_end(month).day):
        following = _month_end(month) + _DAY
        steps.append(
            f"{_month_name(month)} has {length} days, and {day} is more, so take them away: "
            f"{sum_work(day, '-', length)}, day {day - length} of {_month_name(following)}."
        )
        day, month = day - length, following
    end = month.replace(day=day)
    steps.append(f"{_month_name(month)} has {_month_end(month).day} days, so day {day} is "
                 f"{_fmt(end)}.")
    return end, steps


def _walk_backward(start: date, n: int) -> tuple[date, list[str]]:
    """Count `n` days back from `start` in whole years, then month by month."""
    steps: list[str] = []
    cur, left = start, n
    while (prev := _shift_year(cur, -1)) is not None and (span := (cur - prev).days) <= left:
        steps.append(
            f"Going back one year from {_fmt(cur)} to {_fmt(prev)} is {span} days"
            f"{_year_note(span)}; {left} - {span} = {left - span} days remain."
        )
        cur, left = prev, left - span
    # Each jump lands on the last day of the month before, which is `cur.day` days back.
    while left >= cur.day:
        prev_end = cur.replace(day=1) - _DAY
        steps.append(
            f"Going back {cur.day} days from {_fmt(cur)} reaches {_fmt(prev_end)}; "
            f"{left} - {cur.day} = {left - cur.day} days remain."
        )
        cur, left = prev_end, left - cur.day
    if left:
        end = cur - left * _DAY
        steps.append(f"Going back {left} more days from {_fmt(cur)} gives {_fmt(end)}.")
        cur = end
    return cur, steps


def _count_between(start: date, end: date) -> list[str]:
    """Steps that count the days from `start` to a later `end` in whole years and months."""
    steps: list[str] = []
    pieces: list[int] = []
    cur = start
    while (nxt := _shift_year(cur, 1)) is not None and nxt <= end:
        span = (nxt - cur).days
        steps.append(f"From {_fmt(cur)} to {_fmt(nxt)} is one year: {span} days{_year_note(span)}.")
        pieces.append(span)
        cur = nxt
    if (cur.year, cur.month) == (end.year, end.month):
        if end > cur:
            span = end.day - cur.day
            steps.append(f"From {_fmt(cur)} to {_fmt(end)} is {end.day} - {cur.day} = {span} days.")
            pieces.append(span)
    else:
        month_end = _month_end(cur)
        if month_end > cur:
            rest = month_end.day - cur.day
            steps.append(
                f"{_month_name(cur)} has {month_end.day} days, so from {_fmt(cur)} to "
                f"{_fmt(month_end)} is {month_end.day} - {cur.day} = {rest} days."
            )
            pieces.append(rest)
        cur = month_end
        while (nxt_end := _month_end(cur + _DAY)) < end:
            steps.append(f"All of {_month_name(nxt_end)} adds {nxt_end.day} days.")
            pieces.append(nxt_end.day)
            cur = nxt_end
        steps.append(f"From {_fmt(cur)} to {_fmt(end)} is {end.day} days.")
        pieces.append(end.day)
    total = sum(pieces)
    assert total == (end - start).days
    if len(pieces) > 1:
        steps.append(f"Adding up: {' + '.join(map(str, pieces))} = {total} days.")
    return steps


def _weekday_steps(weekday: int, n: int) -> tuple[int, list[str]]:
    """Steps that move `n` days forward from `weekday` (0 = Monday). Up to four weeks are
    counted on day by day, numbered, so the count stops at `n` (counting is what a small model
    does reliably); longer spans take the remainder after whole weeks."""
    weeks, extra = divmod(n, 7)
    result = (weekday + extra) % 7
    start = _WEEKDAYS[weekday]
    if n <= 28:
        days = ", ".join(f"{i} {_WEEKDAYS[(weekday + i) % 7]}" for i in range(1, n + 1))
        return result, [f"Counting {n} days on from {start}: {days}."]
    steps = [f"The weekday repeats every 7 days, and {n} = 7 × {weeks} + {extra}."]
    if extra == 0:
        steps.append(f"Whole weeks leave the weekday unchanged, so it is {_WEEKDAYS[result]}.")
    else:
        passed = ", ".join(_WEEKDAYS[(weekday + i) % 7] for i in range(1, extra + 1))
        steps.append(f"Counting {extra} days on from {start}: {passed}.")
    return result, steps


def _random_date(rng: random.Random) -> date:
    return date(rng.randint(1995, 2030), 1, 1) + rng.randint(0, 364) * _DAY


class Dates(TaskFamily):
    """Days of the week, dates N days away, and days between dates."""

    name = "dates"
    description = "Date arithmetic: weekdays and dates N days away, days between two dates."
    difficulties = (1, 2, 3)

    def compose(self, rng: random.Random, difficulty: int) -> Composed:
        kind = rng.choice(_KINDS[difficulty])
        n = rng.randint(*_SPANS[difficulty])
        start = _random_date(rng)
        template = rng.choice(_TEMPLATES[kind])
        if kind == "weekday_after":
            weekday = rng.randrange(7)
            question = template.format(weekday=_WEEKDAYS[weekday], n=n)
            result, steps = _weekday_steps(weekday, n)
            answer = _WEEKDAYS[result]
            steps.insert(0, f"We need the weekday {n} days after a {_WEEKDAYS[weekday]}.")
            steps.append(f"So {n} days after a {_WEEKDAYS[weekday]} it is {answer}.")
        elif kind in ("date_after", "date_before"):
            question = template.format(start=_fmt(start), n=n)
            walk = _walk_forward if kind == "date_after" else _walk_backward
            end, walk_steps = walk(start, n)
            direction = "after" if kind == "date_after" else "before"
            answer = _fmt(end)
            steps = [
                f"We need the date {n} days {direction} {_fmt(start)}"
                f"{'; we count in whole years first' if n >= 365 else ''}.",
                *walk_steps,
                f"So the date is {answer}.",
            ]
        else:
            end = start + n * _DAY
            steps = [f"First count the days from {_fmt(start)} to {_fmt(end)}."]
            steps += _count_between(start, end)
            if kind == "days_between":
                question = template.format(start=_fmt(start), end=_fmt(end))
                answer = str(n)
                steps.append(f"So there are {n} days from {_fmt(start)} to {_fmt(end)}.")
            else:
                weekday = start.weekday()  # the stated weekday is the true one
                question = template.format(
                    start=_fmt(start), end=_fmt(end), weekday=_WEEKDAYS[weekday]
                )
                result, week_steps = _weekday_steps(weekday, n)
                answer = _WEEKDAYS[result]
                steps += [*week_steps, f"So {_fmt(end)} is a {answer}."]
        return question, answer, steps
