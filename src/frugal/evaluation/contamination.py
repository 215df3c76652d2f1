"""The contamination guard: evaluation questions that share a word 8-gram with training data.

Curation removes such questions from the training side when told about the evaluation set;
this guard looks from the other side, at evaluation time, because a model may have been trained
on data that was never checked against this benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from frugal.curation.text_filters import word_ngrams
from frugal.questions import Question


@dataclass(frozen=True)
class Overlap:
    """One evaluation question and the first training 8-gram it repeats."""

    question_id: str
    question: str
    shared: str


def find_overlaps(
    questions: Iterable[Question], training_texts: Iterable[str], n: int = 8
) -> list[Overlap]:
    """Evaluation questions sharing a word n-gram with any training text, in question order."""
    seen: set[tuple[str, ...]] = set()
    for text in training_texts:
        seen |= word_ngrams(text, n)
    overlaps = []
    for question in questions:
        shared = sorted(word_ngrams(question.question, n) & seen)
        if shared:
            overlaps.append(Overlap(question.id, question.question, " ".join(shared[0])))
    return overlaps
