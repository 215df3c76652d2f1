"""s1's sweep metrics, intervals and voting, against values worked out by hand."""

from __future__ import annotations

import pytest

from frugal.evaluation import metrics
from frugal.grading import is_correct


def test_wilson_interval_matches_the_textbook_value() -> None:
    # 8 of 10: centre (0.8 + 1.92/10) / 1.384 = 0.7167, half-width 0.2265 (z = 1.96).
    low, high = metrics.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)
    assert metrics.wilson_interval(0, 20)[0] == 0.0
    assert metrics.wilson_interval(20, 20)[1] == 1.0
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)


def test_control_is_the_share_within_bounds() -> None:
    used = [64, 64, 130, 0]
    assert metrics.control(used, [0, 0, 0, 0], [64, 64, 128, 64]) == 0.75
    assert metrics.control(used, [0, 0, 0, 16], [64, 64, 256, 64]) == 0.75
    assert metrics.control([], [], []) == 0.0


def test_scaling_is_the_average_pairwise_slope() -> None:
    # Pairs: (200-100 -> 30-20) 0.1; (400-100 -> 35-20) 0.05; (400-200 -> 35-30) 0.025.
    points = [(400, 35.0), (100, 20.0), (200, 30.0)]
    assert metrics.scaling(points) == pytest.approx((0.1 + 0.05 + 0.025) / 3)
    # A falling curve has a negative slope; pairs at one token count have none.
    assert metrics.scaling([(100, 30.0), (200, 10.0)]) == pytest.approx(-0.2)
    assert metrics.scaling([(100, 30.0), (100, 10.0)]) is None
    assert metrics.scaling([(100, 30.0)]) is None


def test_performance_is_the_best_accuracy() -> None:
    assert metrics.performance([0.2, 0.55, 0.4]) == 0.55
    assert metrics.performance([]) is None


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10.
    assert metrics.pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert metrics.pass_at_k(4, 0, 4) == 0.0
    assert metrics.pass_at_k(4, 1, 4) == 1.0
    assert metrics.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least 3"):
        metrics.pass_at_k(2, 1, 3)


def test_majority_vote_groups_equivalent_answers() -> None:
    same = lambda a, b: is_correct(b, a)  # noqa: E731
    # "72", "72.00" and "$72" agree, outvoting the two 71s.
    assert metrics.majority_vote(["71", "72", "72.00", "71", "$72"], same) == 1
    assert metrics.majority_vote(["5", "6"], same) == 0  # tie: the first group wins
    assert metrics.majority_vote([None, "6", None], same) == 1
    assert metrics.majority_vote([None, None], same) is None
