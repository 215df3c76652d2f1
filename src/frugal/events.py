"""One channel for what a stage has to say while it works: notes and progress.

Stages never print. They take an `Events` and report through it; the command line renders the
events with rich (bars with rates and ETA, notes in colour), a test records them
(`RecordedEvents`), and a library caller may pass nothing (`QuietEvents`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)


class Bar(Protocol):
    """One progress bar: `advance` by finished items, `update` its figures (tokens, dollars)."""

    def advance(self, n: int = 1, **figures: Any) -> None: ...

    def update(self, **figures: Any) -> None: ...


class Events(Protocol):
    def note(self, message: str, *, warning: bool = False) -> None:
        """A line worth telling the user (`warning`: something they should act on)."""
        ...

    def progress(self, label: str, total: int | None, completed: int = 0, **figures: Any
                 ) -> Any:  # a context manager yielding a Bar
        """A bar for `total` items (None: unknown), `completed` of them done before (resumed:
        not counted in the rate), open while the work runs."""
        ...


class RichEvents:
    """Events as the command line shows them: rich bars with rates and ETA, coloured notes."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    def note(self, message: str, *, warning: bool = False) -> None:
        self.console.print(f"[yellow]{message}[/yellow]" if warning else message,
                           soft_wrap=True)

    @contextmanager
    def progress(self, label: str, total: int | None, completed: int = 0,
                 **figures: Any) -> Iterator[Bar]:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                   MofNCompleteColumn(), TaskProgressColumn(show_speed=True),
                   TextColumn("[cyan]{task.fields[figures]}"), TimeRemainingColumn()]
        with Progress(*columns, console=self.console) as bars:
            task = bars.add_task(label, total=total, completed=completed,
                                 figures=_show(figures))
            yield _RichBar(bars, task, dict(figures))


@dataclass
class _RichBar:
    bars: Progress
    task: Any
    figures: dict[str, Any]

    def advance(self, n: int = 1, **figures: Any) -> None:
        self.figures.update(figures)
        self.bars.update(self.task, advance=n, figures=_show(self.figures))

    def update(self, **figures: Any) -> None:
        self.advance(0, **figures)


def _show(figures: dict[str, Any]) -> str:
    parts = []
    for name, value in figures.items():
        if isinstance(value, float):
            parts.append(f"{name} ${value:.4f}" if name == "dollars" else f"{name} {value:.3g}")
        elif isinstance(value, int):
            parts.append(f"{name} {value:,}")
        else:
            parts.append(f"{name} {value}")
    return " · ".join(parts)


@dataclass
class RecordedBar:
    label: str
    total: int | None
    done: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    closed: bool = False

    def advance(self, n: int = 1, **figures: Any) -> None:
        self.done += n
        self.figures.update(figures)

    def update(self, **figures: Any) -> None:
        self.figures.update(figures)


@dataclass
class RecordedEvents:
    """Events kept for a test to read."""

    notes: list[tuple[str, bool]] = field(default_factory=list)
    bars: list[RecordedBar] = field(default_factory=list)

    def note(self, message: str, *, warning: bool = False) -> None:
        self.notes.append((message, warning))

    @contextmanager
    def progress(self, label: str, total: int | None, completed: int = 0,
                 **figures: Any) -> Iterator[RecordedBar]:
        bar = RecordedBar(label, total, done=completed, figures=dict(figures))
        self.bars.append(bar)
        try:
            yield bar
        finally:
            bar.closed = True


class QuietEvents(RecordedEvents):
    """For callers that want nothing shown (a library use); the record is kept all the same."""
