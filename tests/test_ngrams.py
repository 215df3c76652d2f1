"""Word n-grams and the one decontamination rule curation and evaluation share."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from frugal.ngrams import Decontaminator, word_ngrams

EVAL_SETS = {
    "gsm8k-dev": [
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May.",
        "Weng earns 12 dollars an hour for babysitting every single weekend.",
    ],
    "dates-test": ["What day of the week was the first of March in the year 1999?"],
}



def test_word_ngrams_are_lowercase_word_windows():
    assert word_ngrams("A b, C!", n=2) == {("a", "b"), ("b", "c")}
    assert word_ngrams("one two three", n=8) == set()
    assert len(word_ngrams(" ".join(f"w{i}" for i in range(10)))) == 3


# --- decontamination -----------------------------------------------------------------------------


def test_decontamination_catches_exactly_the_planted_8grams():
    pool = [
        # Planted: 8 consecutive words of a gsm8k-dev sentence, inside other words.
        ("planted", "Quick one: she sold half as many clips in May, how many overall?"),
        # Only 7 consecutive eval words ("she sold half as many clips in"), then a different word.
        ("seven", "Tell me why she sold half as many clips in June instead."),
        # The same 8 words, reordered: no 8-word window in common.
        ("shuffled", "In May clips as many half sold she? Explain."),
        # The same 8 words with other punctuation, case and spacing. Tokens are lowercase \w+
        # words, so this IS a copy for decontamination purposes and must be caught.
        ("restyled", "Weng EARNS 12 dollars, an hour... for BABYSITTING!"),
        ("clean", "A train leaves at 3 pm and travels 60 miles per hour for two hours."),
        ("short", "What day of the week"),
    ]
    decon = Decontaminator(EVAL_SETS)
    dropped = decon.filter(pool)
    assert set(dropped) == {"planted", "restyled"}
    assert dropped["planted"] == (
        "shares the 8-gram 'she sold half as many clips in may' with evaluation set 'gsm8k-dev'"
    )
    assert "evaluation set 'gsm8k-dev'" in dropped["restyled"]
    assert "'weng earns 12 dollars an hour for babysitting'" in dropped["restyled"]
    assert decon.check("clean text with nothing shared at all, not a single eight words") is None
    assert decon.check(EVAL_SETS["dates-test"][0]) == (
        "shares the 8-gram 'what day of the week was the first' with evaluation set 'dates-test'"
    )


def test_decontamination_n_and_bad_input():
    decon = Decontaminator({"tiny": ["alpha beta gamma"]}, n=3)
    assert decon.num_ngrams == 1
    assert decon.check("x ALPHA beta, gamma y") == (
        "shares the 3-gram 'alpha beta gamma' with evaluation set 'tiny'"
    )
    assert decon.check("alpha beta delta gamma") is None
    assert Decontaminator({}).filter([("a", "anything at all here, eight words or more")]) == {}
    with pytest.raises(TypeError, match="collection of texts"):
        Decontaminator({"oops": "a single string"})
    with pytest.raises(ValueError, match="duplicate item id 'a'"):
        decon.filter([("a", "x"), ("a", "y")])


def test_decontamination_matches_a_plain_set_reference_on_random_text():
    # Cross-check the hashed, vectorised index against the obvious set-of-tuples definition.
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30)]  # small vocabulary, so chance overlaps do happen

    def sentence(k: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(k))

    eval_texts = [sentence(rng.randint(3, 20)) for _ in range(40)]
    pool = [(f"q{i}", sentence(rng.randint(0, 25))) for i in range(400)]
    n = 3
    held = Counter(gram for t in eval_texts for gram in word_ngrams(t, n))
    reference_grams = {gram for gram, texts in held.items() if texts <= 2}  # not template wording
    expected = {i for i, text in pool if word_ngrams(text, n) & reference_grams}
    dropped = Decontaminator({"rand": eval_texts}, n=n).filter(pool)
    assert 0 < len(expected) < len(pool)
    assert set(dropped) == expected
    for item_id, reason in dropped.items():
        gram = tuple(reason.split("'")[1].split())
        assert gram in reference_grams
        assert gram in word_ngrams(dict(pool)[item_id], n)


def test_template_wording_is_ignored_and_a_copy_is_still_caught() -> None:
    template = "how many days later is it when we count from the start"
    indexed = [f"{template} case {i}" for i in range(300)]
    indexed.append("the quick brown fox jumps over the lazy dog near the river bank")
    decon = Decontaminator({"train": indexed})
    assert decon.check(f"Q: {template} with fresh numbers") is None  # in all 300: a template
    assert "quick brown fox" in decon.check("so the quick brown fox jumps over the lazy dog")
