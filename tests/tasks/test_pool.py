"""generate_problems, problem_to_question and rebuild: the pool-facing API of the families."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from frugal.questions import QUESTION_FILE_FIELDS, Question, read_questions, write_questions
from frugal.tasks import FAMILIES, Problem, generate_problems, problem_to_question, rebuild


def test_exact_counts_per_family_spread_over_difficulties() -> None:
    problems = generate_problems(per_family=30, seed=0)
    assert Counter(p.family for p in problems) == {name: 30 for name in FAMILIES}
    for name, family in FAMILIES.items():
        levels = Counter(p.difficulty for p in problems if p.family == name)
        assert set(levels) == set(family.difficulties)
        assert max(levels.values()) - min(levels.values()) <= 1


def test_questions_are_distinct_even_when_the_space_is_small() -> None:
    # Level-1 weekday and short date questions repeat often; duplicates must be redrawn.
    problems = generate_problems(["dates"], per_family=400, difficulties=[1], seed=3)
    assert len(problems) == 400
    assert len({p.question for p in problems}) == 400
    assert {p.difficulty for p in problems} == {1}


def test_selected_families_and_difficulties_in_order() -> None:
    problems = generate_problems(["percentages", "arithmetic"], per_family=7, difficulties=[3, 1])
    assert [p.family for p in problems] == ["percentages"] * 7 + ["arithmetic"] * 7
    assert [p.difficulty for p in problems[:7]] == [3, 1, 3, 1, 3, 1, 3]


def test_a_count_per_family_gives_a_hard_family_more_of_the_same_problems() -> None:
    even = generate_problems(["dates", "percentages"], per_family=5, seed=2)
    mixed = generate_problems(per_family={"dates": 5, "percentages": 9}, seed=2)
    assert [p.family for p in mixed] == ["dates"] * 5 + ["percentages"] * 9
    # Each family draws from its own generator: the first 5 are the even pool's.
    assert mixed[:10] == even
    with pytest.raises(ValueError, match="families is"):
        generate_problems(["dates"], per_family={"dates": 2, "sequences": 2})
    with pytest.raises(ValueError, match="per_family.*sequences"):
        generate_problems(per_family={"dates": 2, "sequences": -1})


def test_a_single_family_name_and_repeated_names() -> None:
    assert generate_problems("dates", per_family=4) == generate_problems(["dates"], per_family=4)
    assert len(generate_problems(["dates", "dates"], per_family=4)) == 4


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    first = generate_problems(per_family=20, seed=11)
    assert generate_problems(per_family=20, seed=11) == first
    other = generate_problems(per_family=20, seed=12)
    overlap = {p.question for p in first} & {p.question for p in other}
    assert len(overlap) <= 10  # a few tiny level-1 questions may coincide by chance
    assert [p.seed for p in first] != [p.seed for p in other]


def test_problem_seeds_regenerate_the_problems() -> None:
    for problem in generate_problems(per_family=9, seed=5):
        assert FAMILIES[problem.family].generate(problem.seed, problem.difficulty) == problem


def test_unknown_family_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="geometry") as error:
        generate_problems(["arithmetic", "geometry"], per_family=2)
    for name in FAMILIES:
        assert name in str(error.value)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="difficulty 7"):
        generate_problems(["arithmetic"], per_family=2, difficulties=[1, 7])
    with pytest.raises(ValueError, match="per_family"):
        generate_problems(per_family=-1)
    assert generate_problems(per_family=0) == []


class _TinyFamily:
    """A family with only three possible questions."""

    name = "tiny"
    description = "three questions"
    difficulties = (1,)

    def generate(self, seed: int, difficulty: int) -> Problem:
        n = seed % 3
        return Problem("tiny", difficulty, seed, f"What is {n} + 1?", str(n + 1), "x\ny")


def test_a_request_larger_than_the_family_fails_instead_of_looping(monkeypatch) -> None:
    monkeypatch.setitem(FAMILIES, "tiny", _TinyFamily())
    assert len(generate_problems(["tiny"], per_family=3)) == 3
    with pytest.raises(ValueError, match="could not produce 4 distinct questions"):
        generate_problems(["tiny"], per_family=4)


def test_problem_to_question_and_rebuild_round_trip(tmp_path) -> None:
    problems = generate_problems(per_family=6, seed=2)
    questions = [problem_to_question(p) for p in problems]
    for problem, question in zip(problems, questions, strict=True):
        assert isinstance(question, Question)
        assert question.question == problem.question
        assert question.answer == problem.answer
        assert question.solution == problem.solution
        assert question.domain == problem.family
        assert question.source == "tasks"
        assert question.meta == {
            "family": problem.family,
            "difficulty": problem.difficulty,
            "seed": problem.seed,
        }
        assert rebuild(question.meta) == problem
    assert len({q.id for q in questions}) == len(questions)

    # The meta survives a JSONL round trip, so a pool file is enough to rebuild its problems.
    path = tmp_path / "pool.jsonl"
    write_questions(path, questions)
    again = read_questions(path, QUESTION_FILE_FIELDS)
    assert again == questions
    assert [rebuild(json.loads(json.dumps(q.meta))) for q in again] == problems


def test_rebuild_explains_bad_meta() -> None:
    with pytest.raises(ValueError, match="'seed'"):
        rebuild({"family": "dates", "difficulty": 1})
    with pytest.raises(ValueError, match="'family'"):
        rebuild({"difficulty": 1, "seed": 0})
    with pytest.raises(ValueError, match="unknown task family 'chess'"):
        rebuild({"family": "chess", "difficulty": 1, "seed": 0})
    with pytest.raises(ValueError, match="'difficulty' must be an integer"):
        rebuild({"family": "dates", "difficulty": "1", "seed": 0})
    with pytest.raises(ValueError, match="difficulty must be one of"):
        rebuild({"family": "dates", "difficulty": 9, "seed": 0})
    with pytest.raises(ValueError, match="no meta"):
        rebuild(None)
