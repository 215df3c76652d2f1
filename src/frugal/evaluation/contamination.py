"""The contamination guard: evaluation questions that share a word 8-gram with training data.

Curation removes such questions from the training side when told about the evaluation set;
this guard looks from the other side, at evaluation time, because a model may have been trained
on data that was never checked against this benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from frugal.ngrams import Decontaminator
from frugal.questions import Question


@dataclass(frozen=True)
class Overlap:
    """One evaluation question and the first training 8-gram it repeats."""

    question_id: str
    question: str
    shared: str


def find_overlaps(
    questions: Iterable[Question], training_texts: Iterable[str], n: int = 8,
) -> list[Overlap]:
    """Evaluation questions sharing a word n-gram with any training text, in question order,
    by curation's own rule (`frugal.ngrams.Decontaminator`: template wording ignored)."""
    found = list(questions)
    index = Decontaminator({"training data": list(training_texts)}, n=n)
    shared = index.first_shared([q.question for q in found])
    return [Overlap(q.id, q.question, shared[i][0]) for i, q in enumerate(found) if i in shared]
