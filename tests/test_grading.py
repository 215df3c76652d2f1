"""Tests for frugal.grading: answer extraction, reference normalisation and equivalence."""

import dataclasses
import threading

import pytest

from frugal.grading import Grade, extract_answer, grade, is_correct, reference_answer

GSM8K_REFERENCE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
    "#### 72"
)
GSM8K_REFERENCE_THOUSANDS = "He earns 1000+234 = <<1000+234=1234>>1234 dollars.\n#### 1,234"


# --------------------------------------------------------------------------------------------
# extract_answer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # (1) boxed: last one wins, nested braces, \fbox, brace-less form
        (r"So the answer is \boxed{72}.", "72"),
        (r"First \boxed{3}, on reflection \boxed{4}.", "4"),
        (r"Thus $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
        (r"\boxed{\frac{a}{\sqrt{b^{2}}}} is it", r"\frac{a}{\sqrt{b^{2}}}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\fbox{12}", "12"),
        (r"The result is \boxed 7.", "7"),
        # an unclosed (truncated) box is ignored in favour of the last complete one
        (r"\boxed{5} but wait, \boxed{6", "5"),
        # (2) Answer: / Final Answer: lines
        ("Reasoning...\nFinal Answer: 42", "42"),
        ("final answer: 42.", "42"),
        ("**Final Answer:** $1,234$.", "1,234"),
        ("**Answer: B**", "B"),
        ("Answer:\n\n  17", "17"),
        ("Answer: 6 then 7 more", "6 then 7 more"),
        # (3) last number: negatives, decimals, thousands separators, fractions
        ("I have 3 apples and -4.5 pears", "-4.5"),
        ("The total is 1,234,567 dollars", "1234567"),
        ("She ate 3/4 of the pie", "3/4"),
        (r"It is -\frac{3}{4}", "-3/4"),
        ("5-3=2 and 10 - 3 = 7, so 10 - 3", "3"),
        ("It costs .5 dollars", ".5"),
        ("The temperature fell to -12 degrees.", "-12"),
        # nothing to extract
        ("I am not sure how to solve this.", None),
        ("", None),
        ("The answer is (D).", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # boxed beats Final Answer beats last number
        (r"\boxed{5} Final Answer: 6, then 7", "5"),
        ("Final Answer: 6\nChecking: 2 + 5 = 7", "6"),
        ("We get 2 + 5 = 7", "7"),
        # the last Answer: line wins over an earlier one
        ("Answer: 3\nActually no.\nFinal Answer: 4", "4"),
    ],
)
def test_extract_answer_priority(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


# --------------------------------------------------------------------------------------------
# reference_answer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (GSM8K_REFERENCE, "72"),
        (GSM8K_REFERENCE_THOUSANDS, "1234"),
        ("Some work\n#### -5", "-5"),
        ("  \\frac{1}{2}  ", r"\frac{1}{2}"),
        ("B\n", "B"),
    ],
)
def test_reference_answer(reference: str, expected: str) -> None:
    assert reference_answer(reference) == expected


# --------------------------------------------------------------------------------------------
# is_correct
# --------------------------------------------------------------------------------------------

CORRECT = [
    # GSM8K references and numeric surface forms
    ("72", GSM8K_REFERENCE),
    ("72.0", GSM8K_REFERENCE),
    ("$72", GSM8K_REFERENCE),
    ("72 dollars", GSM8K_REFERENCE),
    (r"\boxed{72}", GSM8K_REFERENCE),
    ("72.00", "72"),
    (r"\$72", "72"),
    ("**72**", "72"),
    ("The final answer is 72.", "72"),
    ("1,234", "1234"),
    ("1234", GSM8K_REFERENCE_THOUSANDS),
    ("1,234", GSM8K_REFERENCE_THOUSANDS),
    (r"\$1,234.50", "1234.5"),
    # fractions, decimals and LaTeX
    ("0.5", "1/2"),
    ("1/2", r"\frac{1}{2}"),
    (r"\frac{1}{2}", "0.5"),
    (r"$\dfrac{3}{4}$", "0.75"),
    (r"\boxed{\frac{1}{2}}", "0.5"),
    # percentages
    ("50%", "50"),
    ("50", "50%"),
    ("50 percent", "50"),
    # negatives
    ("-3", "-3"),
    ("-3.0", "-3"),
    (r"-\frac{3}{4}", "-0.75"),
    # symbolic answers
    ("2x+3", "3+2x"),
    ("x = 5", "5"),
    (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}"),
    # multiple choice
    ("B", "B"),
    ("(B)", "B"),
    ("b)", "B"),
    ("The answer is B", "B"),
    ("C", r"\text{(C)}"),
    # plain-text answers
    ("Evelyn", "evelyn"),
]

WRONG = [
    ("73", GSM8K_REFERENCE),
    ("72", "73"),
    ("0.25", "0.5"),
    ("1/3", "0.5"),
    ("3", "-3"),
    ("-72", "72"),
    ("7.2", "72"),
    ("2x", "2"),  # "x" is a variable, not a unit word
    ("50", "0.5"),  # only an explicit % makes 50 mean one half
    ("C", "B"),
    ("(A)", "B"),
    ("The answer is D", "B"),
    ("Nevely", "Evelyn"),  # as sympy symbols these would be an equal product of letters
    ("", "72"),
    ("no idea", "72"),
    (r"10^{10^{10}}", "5"),  # an exponent tower: must answer False, not hang
]


@pytest.mark.parametrize(("prediction", "reference"), CORRECT)
def test_is_correct_true(prediction: str, reference: str) -> None:
    assert is_correct(prediction, reference) is True


@pytest.mark.parametrize(("prediction", "reference"), WRONG)
def test_is_correct_false(prediction: str, reference: str) -> None:
    assert is_correct(prediction, reference) is False


def test_none_prediction_is_wrong() -> None:
    assert is_correct(None, "72") is False


def test_is_correct_off_the_main_thread() -> None:
    """math-verify's SIGALRM timeouts raise in worker threads; grading must not."""
    cases = [
        ("1/2", r"\frac{1}{2}", True),
        ("72 dollars", GSM8K_REFERENCE, True),
        ("73", "72", False),
    ]
    results: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.extend(is_correct(pred, ref) for pred, ref, _ in cases)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert errors == []
    assert results == [expected for _, _, expected in cases]


# --------------------------------------------------------------------------------------------
# grade
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "reference", "expected"),
    [
        (
            "Natalia sold 24 clips in May, so 48 + 24 = 72 in total.\n#### 72",
            GSM8K_REFERENCE,
            Grade(extracted="72", reference="72", correct=True),
        ),
        (
            r"48 + 24 = 72, so the answer is $\boxed{72}$.",
            GSM8K_REFERENCE,
            Grade(extracted="72", reference="72", correct=True),
        ),
        (
            "48 + 25 = 73\nFinal Answer: 73",
            GSM8K_REFERENCE,
            Grade(extracted="73", reference="72", correct=False),
        ),
        (
            # boxed wins even though a later number and an Answer: line disagree
            r"\boxed{1,234} Answer: 99 and later 5",
            GSM8K_REFERENCE_THOUSANDS,
            Grade(extracted="1,234", reference="1234", correct=True),
        ),
        (
            r"Half of it: \boxed{\frac{1}{2}}",
            "0.5",
            Grade(extracted=r"\frac{1}{2}", reference="0.5", correct=True),
        ),
        (
            "I cannot determine this.",
            "72",
            Grade(extracted=None, reference="72", correct=False),
        ),
        (
            # multiple choice: the option letter is found in prose, not the number 3
            "A farmer has 3 cows, so option A is out. The answer is (B).",
            "B",
            Grade(extracted="B", reference="B", correct=True),
        ),
        (
            "Step 1: 3 + 4 = 7. The correct option is C",
            "B",
            Grade(extracted="C", reference="B", correct=False),
        ),
        (
            r"Therefore $\boxed{D}$",
            "(D)",
            Grade(extracted="D", reference="(D)", correct=True),
        ),
    ],
)
def test_grade(completion: str, reference: str, expected: Grade) -> None:
    assert grade(completion, reference) == expected


def test_grade_is_frozen() -> None:
    result = grade(r"\boxed{72}", "72")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.correct = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("13 + 81", "94", False),  # restating the sum is not answering it
        ("6 x 7", "42", False),
        ("2^10", "1024", False),
        ("10 - 3", "7", False),
        ("94", "94", True),
        ("-5", "-5", True),
        ("3/4", "0.75", True),
        ("x^2+1", "1+x^2", True),  # symbolic references still compare symbolically
    ],
)
def test_unevaluated_arithmetic_is_not_a_numeric_answer(
    prediction: str, reference: str, expected: bool
) -> None:
    assert is_correct(prediction, reference) is expected
