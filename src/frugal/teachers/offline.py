"""Teachers that need no model: `program` (task-family solvers) and `dataset` (pool solutions).

Both cost nothing, yet go through the same sink and cache as paid teachers, so traces.jsonl is
always derived the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from frugal.questions import Question
from frugal.teachers.base import (
    Completion,
    ResponseSink,
    Teacher,
    TeacherError,
    TeacherResponse,
    split_solution,
)


class ProgramTeacher(Teacher):
    """Worked solutions written by the task families' own programs, rebuilt from `meta`."""

    kind = "program"

    @property
    def model(self) -> str:
        return "frugal.tasks"

    def run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        from frugal.tasks import rebuild

        for question in questions:
            if not sink.admit(question, 0, 0):
                return
            if not question.meta:
                sink.fail(question, final=True, error=TeacherError(
                    f"question {question.id} (source {question.source!r}) has no generator "
                    "parameters (meta): the program teacher only answers task-family questions. "
                    "Fix: use the dataset teacher for questions with solutions, or a model teacher."
                ))
                continue
            try:
                problem = rebuild(question.meta)
            except ValueError as error:
                sink.fail(
                    question, TeacherError(f"question {question.id}: {error}"), final=True
                )
                continue
            if problem.question != question.question:
                sink.fail(question, final=True, error=TeacherError(
                    f"question {question.id}: its generator now writes a different question "
                    "(the task family changed since the pool was built). Fix: rebuild the pool."
                ))
                continue
            completion = split_solution(problem.solution)
            sink.put(question, TeacherResponse([completion], model=self.model))


class DatasetTeacher(Teacher):
    """The solutions the pool already carries (GSM8K's human-written ones, for example)."""

    kind = "dataset"

    @property
    def model(self) -> str:
        return "pool-solutions"

    def run(self, questions: Sequence[Question], sink: ResponseSink) -> None:
        for question in questions:
            if not sink.admit(question, 0, 0):
                return
            if not question.solution:
                sink.fail(question, final=True, error=TeacherError(
                    f"question {question.id} (source {question.source!r}) has no solution in the "
                    "pool. Fix: use a model teacher, or a pool built from data with solutions."
                ))
                continue
            completion = split_solution(question.solution)
            if not completion.answer:
                # GSM8K states its result as `#### N`, which the pool turned into the answer.
                completion = Completion(completion.thinking, f"Final Answer: {question.answer}")
            sink.put(question, TeacherResponse([completion], model=self.model))
