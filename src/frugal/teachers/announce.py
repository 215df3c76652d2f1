"""What a teacher's traces will be, said before anything is paid and again at its first reply.

A user must know, before paying, whether a teacher's reasoning can become traces at all: a
reasoning field, a `<think>` block and a chain of thought before a final-answer line can; hidden
reasoning cannot. `teacher_gives` says what can be told from the settings and from replies a run
directory already holds (`frugal cost`); `announce_thinking` says what replies show once they
come (`frugal distill`), and its count of hidden replies is what stops a re-run from asking a
teacher that hides its reasoning again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from frugal.events import Events
from frugal.run_files import TEACHER_CACHE
from frugal.settings.distill import DistillConfig
from frugal.teacher_cache import TeacherCache
from frugal.teachers.base import Teacher, TeacherResponse
from frugal.teachers.configured import make_teacher
from frugal.teachers.thinking import DESCRIPTIONS, FOUND_HIDDEN, FOUND_NONE


def announce_thinking(
    teacher: Teacher, responses: list[TeacherResponse], events: Events
) -> Counter[str]:
    """Say where the teacher's thinking comes from, as its replies show (its first reply, or
    those cached before); return how many replies had it where (empty, and nothing said, for a
    teacher that writes thinking and answer apart)."""
    found = Counter(c.found_in for r in responses for c in teacher.completions(r) if c.found_in)
    if not found:
        return found
    usual, count = found.most_common(1)[0]
    seen = "from its first reply" if len(responses) == 1 else (
        f"in {count} of the {sum(found.values())} replies it gave before" + "".join(
            f"; {where} in {n}" for where, n in found.most_common()[1:]))
    events.note(f"teacher {teacher.model}: {DESCRIPTIONS.get(usual, usual)} ({seen})",
                warning=usual in (FOUND_NONE, FOUND_HIDDEN))
    return found


def teacher_gives(config: DistillConfig, run_dir: Path | None = None) -> str:
    """One sentence on what traces the configured teacher gives: from a reply it gave this run
    directory before where there is one, else what its kind and settings say."""
    if config.teacher == "program":
        return "worked solutions of the task families' programs (thinking, then Final Answer)"
    if config.teacher == "dataset":
        return "the pool's own worked solutions (thinking, then Final Answer)"
    if config.teacher == "hf" and config.local.style == "chat":
        return ("the local model's chat answers: " + DESCRIPTIONS["content"]
                + "; a reply without one has no thinking")
    if config.teacher in ("hf", "self"):
        return "the local model's thinking section, with budget forcing"
    source = config.openai.thinking_source if config.openai else "auto"
    cache_path = run_dir / TEACHER_CACHE if run_dir is not None else None
    if config.openai is not None and cache_path is not None and cache_path.is_file():
        teacher = make_teacher(config)
        with TeacherCache(cache_path) as cache:
            stored = cache.latest_response(teacher.kind, teacher.model)
        if stored is not None:
            found = next((c.found_in for c in teacher.completions(
                TeacherResponse.from_dict(stored))), FOUND_NONE)
            return f"{DESCRIPTIONS.get(found, found)} (from a reply it gave {run_dir})"
    if source != "auto":
        return f"read from one place ({source}): {DESCRIPTIONS[source]}"
    return ("known from its first reply, which `frugal distill` reports: a reasoning field, a "
            "<think> block, or the chain of thought before its final-answer line; a teacher "
            "that hides its reasoning stops the run at that reply")

