"""Pure-text curation filters: exact and near duplicates, formatting, and decontamination at
curation's scale (the rule itself is tested in tests/test_ngrams.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from frugal.curation.text_filters import (
    DEFAULT_FORMAT_PATTERNS,
    Decontaminator,
    FormattingFilter,
    exact_duplicates,
    near_duplicates,
    normalize,
)

# --- normalisation -------------------------------------------------------------------------------


def test_normalize_casefolds_and_collapses_all_white_space():
    assert normalize("  What\tIS\u00a0 2+2?\n\n") == "what is 2+2?"
    assert normalize("STRASSE Straße") == "strasse strasse"


# --- exact duplicates ----------------------------------------------------------------------------


def test_exact_duplicates_ignore_case_and_white_space_but_not_content():
    items = [
        ("a", "What is 2+2?"),
        ("b", "what  is 2+2? "),
        ("c", "What is 2+3?"),
        ("d", "What is\n2+2?"),
        ("e", "WHAT IS 2+3?"),
    ]
    dropped = exact_duplicates(items)
    assert dropped == {
        "b": "exact duplicate of a (same text after normalising case and white space)",
        "d": "exact duplicate of a (same text after normalising case and white space)",
        "e": "exact duplicate of c (same text after normalising case and white space)",
    }
    with pytest.raises(ValueError, match="duplicate item id"):
        exact_duplicates([("a", "x"), ("a", "y")])


# --- formatting ----------------------------------------------------------------------------------


def test_default_formatting_patterns_catch_missing_pictures_only():
    fmt = FormattingFilter()
    assert fmt.patterns == DEFAULT_FORMAT_PATTERNS
    items = [
        ("figure", "As shown in the figure below, the triangle has sides 3, 4 and 5. Find x."),
        ("asy", "[asy] draw((0,0)--(1,1)); [/asy] What is the slope of the line?"),
        ("img", 'Look: <IMG src="a.png"> how many cats?'),
        ("markdown", "Count the dots: ![dots](dots.png)"),
        ("plain", "A shop sells 3 apples for $2. How much do 12 apples cost?"),
        ("boxed", "Give the answer as \\boxed{12 with an unbalanced brace."),
        ("table-text", "Use the table:\n| a | b |\n| 1 | 2 |\nWhat is a + b?"),
    ]
    dropped = fmt.filter(items)
    assert set(dropped) == {"figure", "asy", "img", "markdown"}
    assert "shown in the figure below" in dropped["figure"]
    assert repr(DEFAULT_FORMAT_PATTERNS[0]) in dropped["figure"]
    assert repr(r"\[asy\]") in dropped["asy"]
    assert fmt.check("Solve for x: 2x + 3 = 11.") is None


def test_custom_formatting_patterns_and_invalid_regex():
    fmt = FormattingFilter([r"\bTODO\b"])
    assert fmt.check("todo: fill in the question") == (
        "broken formatting: matches pattern '\\\\bTODO\\\\b' (found 'todo')"
    )
    assert fmt.check("As shown in the figure below") is None
    with pytest.raises(ValueError, match=r"invalid formatting pattern '\(unclosed'.*missing \)"):
        FormattingFilter([r"ok", r"(unclosed"])


# --- near duplicates -----------------------------------------------------------------------------


def _unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_near_duplicates_greedy_order_across_block_boundaries():
    e0, e1, e2 = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    between = _unit(1, 1, 0)  # cos 0.707 to both e0 and e1
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    emb = np.stack(
        [
            e0,  # a kept
            _unit(1, 0.05, 0),  # b ~ a (0.999), same block (block_size=2) -> dropped
            e1,  # c kept (next block)
            _unit(0.02, 1, 0),  # d ~ c (1.000), same block as c -> dropped
            _unit(1, 0, 0.1),  # e ~ a (0.995), a is two blocks back -> dropped
            e2,  # f kept
            between,  # g: 0.707 to a and c, below 0.9 -> kept
        ]
    )
    for block_size in (1, 2, 3, 1024):
        dropped = near_duplicates(ids, emb, threshold=0.9, block_size=block_size)
        assert set(dropped) == {"b", "d", "e"}, block_size
        assert dropped["b"] == "near duplicate of a (cosine similarity 0.999 >= 0.9)"
        assert dropped["d"].startswith("near duplicate of c (cosine similarity 1.000")
        assert dropped["e"] == "near duplicate of a (cosine similarity 0.995 >= 0.9)"
    assert near_duplicates(ids, emb, threshold=1.01) == {}
    # Identical rows are duplicates of the first...
    same = np.stack([e0, e0, e0])
    assert set(near_duplicates(["x", "y", "z"], same, 0.999, block_size=2)) == {"y", "z"}
    # ...and torch input works as well as numpy.
    assert set(near_duplicates(["x", "y", "z"], torch.from_numpy(same), 0.999)) == {"y", "z"}


def test_near_duplicates_only_kept_items_drop_others():
    # b is close to a and dropped; c is close to b but not to a: c stays (b was not kept).
    # With a small block this exercises the sequential pass inside a block.
    emb = np.stack([_unit(1, 0), _unit(1, 0.6), _unit(1, 1.3)])
    sims = emb @ emb.T
    assert sims[0, 1] >= 0.85 and sims[1, 2] >= 0.85 and sims[0, 2] < 0.85
    for block_size in (1, 2, 3):
        dropped = near_duplicates(["a", "b", "c"], emb, 0.85, block_size=block_size)
        assert list(dropped) == ["b"], block_size


def test_near_duplicates_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    emb = centres[rng.integers(0, 20, size=300)] + 0.15 * rng.normal(size=(300, 16))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"q{i}" for i in range(300)]
    kept: list[int] = []
    expected = set()
    for i in range(300):
        if kept and float(np.max(emb[kept] @ emb[i])) >= 0.95:
            expected.add(ids[i])
        else:
            kept.append(i)
    assert 0 < len(expected) < 300
    for block_size in (7, 64, 1024):
        assert set(near_duplicates(ids, emb, 0.95, block_size=block_size)) == expected


def test_near_duplicates_rejects_bad_input():
    with pytest.raises(ValueError, match="L2-normalised"):
        near_duplicates(["a", "b"], np.array([[3.0, 4.0], [1.0, 0.0]]), 0.9)
    with pytest.raises(ValueError, match="2 ids but 3 embedding rows"):
        near_duplicates(["a", "b"], np.eye(3), 0.9)
    with pytest.raises(ValueError, match="duplicate item id"):
        near_duplicates(["a", "a"], np.eye(2), 0.9)


# --- scale ---------------------------------------------------------------------------------------


def test_text_filters_handle_a_50k_pool():
    # Not timed: it only has to finish quickly (about a second each on a 2-core CPU).
    rng = random.Random(1)
    words = [f"word{i}" for i in range(5000)]
    pool = [
        (f"q{i}", " ".join(rng.choice(words) for _ in range(rng.randint(10, 40))))
        for i in range(50_000)
    ]
    pool[49_999] = ("q49999", pool[123][1].upper())
    eval_texts = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(2000)]
    pool[40_000] = ("q40000", "prefix " + eval_texts[7] + " suffix")
    assert exact_duplicates(pool) == {
        "q49999": "exact duplicate of q123 (same text after normalising case and white space)"
    }
    dropped = Decontaminator({"eval": eval_texts}).filter(pool)
    assert "q40000" in dropped
    assert len(dropped) < 10  # random 8-grams over 5,000 words essentially never collide
