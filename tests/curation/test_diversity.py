"""s1's diversity sampler against hand-computed picks, and the ablation strategies."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from frugal.curation.diversity import Candidate, select

TWO_DOMAINS = [
    Candidate("a1", "A", 30), Candidate("a2", "A", 20), Candidate("a3", "A", 10),
    Candidate("b1", "B", 50),
]


def test_random_draws_used_below_are_what_the_hand_computation_assumed() -> None:
    draws = random.Random(0)
    assert [round(draws.random(), 4) for _ in range(6)] == [
        0.8444, 0.758, 0.4206, 0.2589, 0.5113, 0.4049
    ]


def test_s1_rule_hand_computed_seed_0() -> None:
    # Draw 0.8444 picks domain B (index int(0.8444 * 2) = 1); its only item is b1; B is then
    # exhausted and drops out. 0.4206 picks A; 0.2589 < 4/7 (weights 1, 1/2, 1/4) picks rank 0,
    # a1. 0.5113 picks A; 0.4049 < 2/3 (weights 1, 1/2) picks rank 0 of what is left, a2.
    assert select(TWO_DOMAINS, 3, "s1", seed=0) == ["b1", "a1", "a2"]


def test_s1_rule_hand_computed_lower_rank() -> None:
    # One domain, lengths 40, 30, 20, 10: weights 1, 1/2, 1/4, 1/8 over 15/8, so cumulative
    # 0.533, 0.8, 0.933, 1. Draw 0.758 falls in (0.533, 0.8]: rank 1, the 30-token trace.
    # Then 0.2589 < 4/7 over (40, 20, 10): the 40; then 0.4049 < 2/3 over (20, 10): the 20.
    one = [Candidate(f"x{n}", "X", n) for n in (10, 20, 30, 40)]
    assert select(one, 3, "s1", seed=0) == ["x30", "x40", "x20"]


def test_exhausted_domains_drop_out_and_target_is_capped() -> None:
    assert sorted(select(TWO_DOMAINS, 10, "s1", seed=5)) == ["a1", "a2", "a3", "b1"]


def test_domains_are_uniform_and_longer_traces_are_favoured() -> None:
    candidates = [Candidate(f"a{n}", "A", n) for n in range(1, 4)]
    candidates += [Candidate(f"b{n}", "B", n) for n in range(1, 40)]  # B has far more items
    firsts = Counter(select(candidates, 1, "s1", seed=s)[0] for s in range(4000))
    share_a = sum(n for item, n in firsts.items() if item.startswith("a")) / 4000
    assert share_a == pytest.approx(0.5, abs=0.03)  # the domain, not the item, is uniform
    # Within A (lengths 3, 2, 1) the longest is taken with probability 4/7.
    assert firsts["a3"] / sum(firsts[f"a{n}"] for n in range(1, 4)) == pytest.approx(
        4 / 7, abs=0.04
    )


def test_same_seed_same_selection_and_strategies_differ() -> None:
    candidates = [Candidate(f"q{n}", "ABC"[n % 3], (n * 37) % 101) for n in range(300)]
    assert select(candidates, 50, "s1", seed=7) == select(candidates, 50, "s1", seed=7)
    picks = {s: select(candidates, 50, s, seed=7) for s in ("s1", "random", "longest", "diverse")}
    assert all(len(p) == 50 and len(set(p)) == 50 for p in picks.values())
    lengths = {c.id: c.length for c in candidates}
    assert sorted(lengths[i] for i in picks["longest"]) == sorted(lengths.values())[-50:]
    mean = {s: sum(lengths[i] for i in p) / 50 for s, p in picks.items()}
    assert mean["s1"] > mean["diverse"]  # length weighting is what separates s1 from diverse
    counts = Counter(c.domain for c in candidates if c.id in set(picks["diverse"]))
    assert set(counts) == {"A", "B", "C"} and min(counts.values()) >= 8  # ~50/3 each, at random
