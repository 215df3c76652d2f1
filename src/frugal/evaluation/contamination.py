"""The contamination guard: evaluation questions that share a word 8-gram with training data.

Curation removes such questions from the training side when told about the evaluation set;
this guard looks from the other side, at evaluation time, because a model may have been trained
on data that was never checked against this benchmark.
"""

from __future__ import annotations

from collections import Counter
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
    questions: Iterable[Question], training_texts: Iterable[str], n: int = 8,
    boilerplate_share: float = 0.01,
) -> list[Overlap]:
    """Evaluation questions sharing a word n-gram with any training text, in question order.

    An n-gram found in more than `boilerplate_share` of the training texts (and in more than
    two) is template wording ("days later on what date does it end"), not a leaked question,
    and is ignored: a copied question shows up in one or two training texts, a template in all.
    """
    texts = list(training_texts)
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        counts.update(word_ngrams(text, n))
    limit = max(2, boilerplate_share * len(texts))
    seen = {gram for gram, count in counts.items() if count <= limit}
    overlaps = []
    for question in questions:
        shared = sorted(word_ngrams(question.question, n) & seen)
        if shared:
            overlaps.append(Overlap(question.id, question.question, " ".join(shared[0])))
    return overlaps
