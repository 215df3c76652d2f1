"""The events channel: what the CLI renders with rich, and what a test records."""

from __future__ import annotations

from rich.console import Console

from frugal.events import RecordedEvents, RichEvents


def test_rich_events_show_the_bar_its_figures_and_the_notes() -> None:
    console = Console(record=True, width=120, force_terminal=False)
    events = RichEvents(console)
    with events.progress("distill · openai", 4, tokens=0, dollars=0.0) as bar:
        bar.advance(3, tokens=1200, dollars=0.0123)
        bar.update(failed=1)
    events.note("stopped issuing calls", warning=True)
    shown = console.export_text()
    assert "distill · openai" in shown and "3/4" in shown
    assert "tokens 1,200" in shown and "dollars $0.0123" in shown and "failed 1" in shown
    assert "stopped issuing calls" in shown


def test_recorded_events_keep_what_a_stage_said() -> None:
    events = RecordedEvents()
    with events.progress("eval base", 10, accuracy="-") as bar:
        bar.advance(4, accuracy="50.0%")
        assert not bar.closed
    events.note("resuming")
    (bar,) = events.bars
    assert (bar.done, bar.total, bar.figures, bar.closed) == (4, 10, {"accuracy": "50.0%"}, True)
    assert events.notes == [("resuming", False)]
