"""What a teacher's traces will be: said from the settings, from cached replies, at the first."""

from __future__ import annotations

from pathlib import Path

from frugal import distill
from frugal.distill import DistillConfig
from frugal.events import RecordedEvents
from frugal.teachers.announce import announce_thinking, teacher_gives
from frugal.teachers.base import Completion, TeacherResponse
from frugal.teachers.openai_teacher import OpenAITeacher, OpenAITeacherConfig
from tests.teachers.fake_openai_server import FakeOpenAIServer
from tests.test_distill import openai_config, task_pool


def test_what_a_teacher_gives_is_said_before_paying_and_from_its_first_reply(
    tmp_path: Path
) -> None:
    task_pool(tmp_path, per_family=1)
    assert "task families' programs" in teacher_gives(DistillConfig(), tmp_path)
    with FakeOpenAIServer(reasoning_mode="content") as server:
        config = DistillConfig(teacher="openai", openai=openai_config(server, concurrency=1),
                               limit=1)
        before = teacher_gives(config, tmp_path)
        assert before.startswith("known from its first reply")
        named = config.model_copy(update={"openai": openai_config(
            server, thinking_source="tags")})
        assert "<think> block" in teacher_gives(named, tmp_path)
        distill.run(config, tmp_path)
    after = teacher_gives(config, tmp_path)
    assert "reasons in its reply's text" in after and str(tmp_path) in after


def test_cached_replies_are_counted_by_where_their_thinking_was() -> None:
    teacher = OpenAITeacher(OpenAITeacherConfig(model="m"))
    replies = [TeacherResponse([Completion("", "x", found_in=where)], extra={})
               for where in ("content", "content", "none")]
    events = RecordedEvents()
    assert announce_thinking(teacher, replies, events) == {"content": 2, "none": 1}
    ((note, warning),) = events.notes
    assert note == ("teacher m: it reasons in its reply's text: the text before its final-answer "
                    "line is the thinking (in 2 of the 3 replies it gave before; none in 1)")
    assert not warning
    assert not announce_thinking(teacher, [TeacherResponse([Completion("t", "a")])], events)
