"""Answer extraction and grading for math / multiple-choice reasoning tasks.

Later stages (distillation filtering, evaluation) need one question answered many times: *did
this completion get the right final answer?*  This module answers it in three steps:

1. `extract_answer` pulls the final answer out of free-form model text
   (last `\\boxed{}`, else an `Answer:` line, else the last number).
2. `reference_answer` normalises a dataset reference (e.g. GSM8K's `#### 72` trailer).
3. `is_correct` compares the two with `math-verify` (symbolic / numeric equivalence),
   after stripping the surface noise math-verify does not know about (currency symbols, unit
   words, thousands separators).  Single-letter references are graded as multiple choice.

`grade` chains them and returns a `Grade`.

Everything here is safe to call from worker threads: math-verify's own timeouts use
`signal.alarm`, which only works in the main thread, so they are switched off elsewhere and
a cheap pre-screen rejects the known expression "bombs" (towers of exponents, huge factorials)
that would otherwise make sympy spin forever.
"""

import logging
import re
import threading
from dataclasses import dataclass

from math_verify import ExprExtractionConfig, LatexExtractionConfig, StringExtractionConfig
from math_verify import parse as mv_parse
from math_verify import verify as mv_verify
from math_verify.errors import TimeoutException

__all__ = ["Grade", "extract_answer", "grade", "is_correct", "reference_answer"]

logger = logging.getLogger(__name__)

# Seconds math-verify may spend parsing / comparing one answer when a signal timeout is usable.
_MV_TIMEOUT_S = 5
# Extracted answers are short; anything longer is almost certainly a mis-extraction, and
# feeding it to sympy only risks a slow parse, so it is compared as a string instead.
_MAX_MATH_LEN = 500
# Option letters we look for in prose when the reference is a multiple-choice letter.
# A-J covers MMLU-Pro; the reference letter is always added in case it lies beyond.
_CHOICE_LETTERS = "ABCDEFGHIJ"

_MV_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())

# --------------------------------------------------------------------------------------------
# Regular expressions
# --------------------------------------------------------------------------------------------

# `\boxed{` / `\fbox{` (content read with a brace counter), or the brace-less `\boxed 5`.
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*(?:(?P<brace>\{)|\s(?P<bare>[^\s${}]+))")

# "Answer:" / "Final Answer:", also in markdown bold ("**Final Answer**:" or "**Answer:**").
_ANSWER_MARKER_RE = re.compile(r"\b(?:final\s+)?answer\s*(?:\*\*|__)?\s*:", re.IGNORECASE)

# A number as it appears in prose.  The minus sign must not directly follow a word or closing
# bracket ("x-3", "5-3"), nor a digit or bracket plus one space ("10 - 3"): that is subtraction.
_NUMBER_RE = re.compile(
    r"""
    (?P<neg>(?<![\w)\]}])(?<![\d)\]}]\s)-\s?)?
    (?:
        \\[dt]?frac\{(?P<frac_num>\d+)\}\{(?P<frac_den>\d+)\}
      | (?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)
        (?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?
    )
    """,
    re.VERBOSE,
)

# 1,234,567 -> 1234567.  The look-arounds keep lists such as "1,2,3" or "12,3456" intact.
_THOUSANDS_RE = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?!,?\d)")
# LaTeX writes thousands separators as "1{,}234" (MATH does this).
_LATEX_THOUSANDS_RE = re.compile(r"(?<=\d)\{,\}(?=\d{3})")

# "The final answer is", "Answer:", "the correct option is" ... in front of an answer.
_ANSWER_PREFIX_RE = re.compile(
    r"^(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|option|choice)\s*(?:is|:)?\s*:?\s*",
    re.IGNORECASE,
)
_MARKDOWN_EDGE_RE = re.compile(r"^(?:\*\*|__|\*)+|(?:\*\*|__|\*)+$")
# `$`, `\$`, and the other currency symbols; plus LaTeX inline/display math delimiters.
_CURRENCY_AND_DELIMS_RE = re.compile(r"\\\$|[$€£¥₹]|\\[()\[\]]")
_PERCENT_WORD_RE = re.compile(r"\s*\bper\s?cent\b", re.IGNORECASE)
# A number followed only by words: "72 dollars", "3.5 hours per week", "12 km/h".
_NUMBER_WITH_UNITS_RE = re.compile(
    r"(?P<num>[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?)\s*(?P<pct>\\?%)?"
    # A space and two letters at least, so algebra such as "2x" or "5 y" is left alone.
    r"\s+[A-Za-z]{2,}[A-Za-z\s.'/-]*"
)
# Plain prose ("Evelyn", "blue whale"): math-verify would parse "Evelyn" as the commutative
# product E*v*e*l*y*n, making anagrams "equal", so such answers are compared as strings.
_PROSE_RE = re.compile(r"[A-Za-z]{2,}(?:[\s'-]+[A-Za-z]+)*")

# Arithmetic still to be done between two numbers ("13 + 81", "6 x 7", "2^10", "9 - 4");
# a fraction "3/4" or a negative "-5" is an answer, not a calculation.
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:/\d+)?%?")
_UNEVALUATED_RE = re.compile(r"\d\s*(?:[+*×x^]|\s-\s|\\times|\\cdot)\s*\(?-?\d")

_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|boxed|fbox)\s*\{([^{}]*)\}")
# Predictions may use either case ("b)"); references must be upper case, because a lone
# lower-case letter in a math dataset is a variable or constant ("x", "i", "e").
_CHOICE_ONLY_RE = re.compile(r"\(?\s*([A-Za-z])\s*\)?[.:)]*")
_REFERENCE_CHOICE_RE = re.compile(r"\(?\s*([A-Z])\s*\)?[.:)]*")
_CHOICE_PAREN_RE = re.compile(r"\(([A-Z])\)")
# "the answer is (B)", "Answer: **C**", "correct option is D" inside longer prose.  Only capital
# letters count here, otherwise "the answer is a bit ..." would read as option A.
_CHOICE_ANCHORED_RE = re.compile(
    r"(?i:answer|option|choice)\s*(?:is|:)?\s*:?\s*(?:\*\*|__)?\s*(?i:option\s+)?"
    r"\(?([A-Z])\)?(?![\w])"
)

# Expressions that make sympy run (effectively) forever: exponent towers such as
# 10^{10^{10}} and factorials of large numbers.  Off the main thread nothing else can stop them.
_EXPLOSIVE_RE = re.compile(
    r"\^\s*\{[^{}]*(?:\^|\*\*)"  # 2^{2^{100}}
    r"|(?:\^|\*\*)\s*\(?\s*[\d.]+\s*\)?\s*(?:\^|\*\*)"  # 2^3^4, 2**3**4
    r"|\d{4,}\s*!"  # 1000000!
    r"|!\s*\)?\s*!"  # (10!)!
)


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def _braced_content(text: str, start: int) -> str | None:
    """Return the text from `start` up to the matching `}`; None if it never closes."""
    depth = 1
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # skip escaped characters: `\{` and `\}` are literal braces in LaTeX
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last complete, non-empty `\\boxed{...}` / `\\fbox{...}`."""
    last: str | None = None
    for match in _BOXED_RE.finditer(text):
        if match.group("brace"):
            content = _braced_content(text, match.end())
        else:
            content = match.group("bare")
        # Unclosed boxes come from truncated generations and empty ones carry no answer.
        if content is not None and _tidy_answer_text(content):
            last = _tidy_answer_text(content)
    return last


def _tidy_answer_text(text: str) -> str:
    """Strip markdown emphasis, a sentence-final period and enclosing math delimiters."""
    text = text.strip()
    previous = None
    while text != previous:  # the layers can nest: "**$72$.**"
        previous = text
        text = _MARKDOWN_EDGE_RE.sub("", text).strip()
        # A final period ends the sentence; the look-behind keeps "..." and decimals like "3.".
        text = re.sub(r"(?<!\.)\.$", "", text).strip()
        if len(text) > 1 and text.startswith("$") and text.endswith("$"):
            text = text.strip("$").strip()
        for opener, closer in (("\\(", "\\)"), ("\\[", "\\]")):
            if text.startswith(opener) and text.endswith(closer):
                text = text[len(opener) : -len(closer)].strip()
    return text


def _after_answer_marker(text: str) -> str | None:
    """Rest of the line after the last `Answer:` / `Final Answer:` marker."""
    markers = list(_ANSWER_MARKER_RE.finditer(text))
    if not markers:
        return None
    rest = text[markers[-1].end() :]
    # Models often put the answer on a line of its own after "Final Answer:", so look a few
    # lines ahead, but no further: a distant line is reasoning, not the answer.
    for line in rest.splitlines()[:3]:
        tidied = _tidy_answer_text(line)
        if tidied:
            return tidied
    return None


def _last_number(text: str) -> str | None:
    """The last number in `text`, normalised (no thousands separators, `a/b` fractions)."""
    matches = list(_NUMBER_RE.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    sign = "-" if match.group("neg") else ""
    if match.group("frac_num") is not None:
        return f"{sign}{match.group('frac_num')}/{match.group('frac_den')}"
    number = match.group("num").replace(",", "")
    if match.group("den") is not None:
        return f"{sign}{number}/{match.group('den')}"
    return f"{sign}{number}"


def extract_answer(text: str) -> str | None:
    """Extract the final answer from a model completion.

    Priority: the content of the last `\\boxed{}` / `\\fbox{}` (nested braces handled),
    else the rest of the line after the last `Final Answer:` / `Answer:`, else the last
    number in the text.  Returns None when none of these is present.
    """
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    marked = _after_answer_marker(text)
    if marked is not None:
        return marked
    return _last_number(text)


def reference_answer(text: str) -> str:
    """Normalise a dataset reference answer.

    GSM8K references end in `#### <answer>` after the worked solution; only that answer is
    kept, without thousands separators (`#### 1,234` gives `"1234"`).  Anything else is
    returned stripped.
    """
    if "####" in text:
        answer = text.rsplit("####", 1)[1].strip()
        return _THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), answer)
    return text.strip()


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


def _clean(answer: str) -> str:
    """Remove surface noise math-verify does not understand, keeping the mathematical content.

    Handles "The answer is" prefixes, markdown, currency symbols, math delimiters, unit words
    after a number, and thousands separators.  Symbolic normalisation is math-verify's job.
    """
    text = _tidy_answer_text(answer)
    text = _ANSWER_PREFIX_RE.sub("", text)
    text = _CURRENCY_AND_DELIMS_RE.sub("", text)
    text = _PERCENT_WORD_RE.sub("%", text)
    text = _LATEX_THOUSANDS_RE.sub("", text)
    text = _THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _tidy_answer_text(text)
    units = _NUMBER_WITH_UNITS_RE.fullmatch(text)
    if units:
        text = units.group("num") + ("%" if units.group("pct") else "")
    return text.strip()


def _string_key(answer: str) -> str:
    """Key for the plain string comparison: case and whitespace do not matter."""
    return re.sub(r"\s+", "", answer).casefold()


def _signal_timeout() -> int | None:
    """math-verify timeout to use: its SIGALRM timeouts raise ValueError off the main thread."""
    if threading.current_thread() is threading.main_thread():
        return _MV_TIMEOUT_S
    return None


def _math_equal(reference: str, prediction: str) -> bool:
    """Symbolic / numeric equivalence via math-verify; False when it cannot decide."""
    if any(len(s) > _MAX_MATH_LEN or _EXPLOSIVE_RE.search(s) for s in (reference, prediction)):
        return False
    timeout = _signal_timeout()
    try:
        # Wrapping in $...$ makes math-verify read the whole string as one LaTeX expression;
        # unwrapped, "2x+3" would be read as just the number 2.
        gold = mv_parse(f"${reference}$", extraction_config=_MV_CONFIG, parsing_timeout=timeout)
        pred = mv_parse(f"${prediction}$", extraction_config=_MV_CONFIG, parsing_timeout=timeout)
        if not gold or not pred:
            return False
        # verify() is not symmetric: the gold answer goes first.
        return bool(mv_verify(gold, pred, timeout_seconds=timeout))
    except (Exception, TimeoutException):  # TimeoutException derives from BaseException
        logger.debug("math-verify failed on %r vs %r", reference, prediction, exc_info=True)
        return False


def _reference_choice(reference: str) -> str | None:
    """The option letter if `reference` is a multiple-choice answer such as "B" or "(b)"."""
    match = _REFERENCE_CHOICE_RE.fullmatch(_TEXT_WRAPPER_RE.sub(r"\1", reference).strip())
    return match.group(1).upper() if match else None


def _choice_letter(text: str, reference_letter: str) -> str | None:
    """The option letter a prediction picks: "B", "(B)", "b)", "The answer is B", ..."""
    short = _TEXT_WRAPPER_RE.sub(r"\1", text)
    short = _tidy_answer_text(_ANSWER_PREFIX_RE.sub("", _tidy_answer_text(short)))
    match = _CHOICE_ONLY_RE.fullmatch(short)
    if match:
        return match.group(1).upper()
    # Longer prose, strongest signal first: an explicit "answer is X", then the last "(X)",
    # then math-verify's string extraction (handles "Therefore, B." and "**B**").
    anchored = _CHOICE_ANCHORED_RE.findall(text)
    if anchored:
        return anchored[-1]
    parenthesised = _CHOICE_PAREN_RE.findall(text)
    if parenthesised:
        return parenthesised[-1]
    letters = tuple(sorted(set(_CHOICE_LETTERS) | {reference_letter}))
    try:
        found = mv_parse(
            text,
            extraction_config=[StringExtractionConfig(strings=letters)],
            parsing_timeout=_signal_timeout(),
        )
    except (Exception, TimeoutException):
        found = []
    return str(found[0]).upper() if found else None


def is_correct(prediction: str | None, reference: str) -> bool:
    """Whether `prediction` (an extracted answer) matches `reference`.

    Numbers and expressions are compared with math-verify, so `72` = `72.00` = `$72` =
    `72 dollars` and `0.5` = `1/2` = `\\frac{1}{2}`.  A single-letter reference is a
    multiple-choice option and matches "B", "(B)", "b)" or "The answer is B".  Identical
    normalised strings always match, which is also the fallback when math-verify fails.
    """
    if prediction is None:
        return False
    reference = reference_answer(reference)
    # Tolerate an unextracted completion: reduce it to its answer first.
    if _BOXED_RE.search(prediction) or _ANSWER_MARKER_RE.search(prediction):
        prediction = extract_answer(prediction) or prediction

    letter = _reference_choice(reference)
    if letter is not None:
        return _choice_letter(prediction, letter) == letter

    pred, ref = _clean(prediction), _clean(reference)
    if not pred or not ref:
        return False
    if _string_key(pred) == _string_key(ref):
        return True
    if _PROSE_RE.fullmatch(pred) or _PROSE_RE.fullmatch(ref):
        return False
    if _PLAIN_NUMBER_RE.fullmatch(ref) and _UNEVALUATED_RE.search(pred):
        # "13 + 81" for 94 restates the question; math-verify would evaluate it and say equal.
        return False
    return _math_equal(ref, pred)


# --------------------------------------------------------------------------------------------
# Entry point for the pipeline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grade:
    """Outcome of grading one completion against one reference."""

    extracted: str | None
    reference: str
    correct: bool


def grade(completion: str, reference: str) -> Grade:
    """Extract the answer from `completion` and check it against `reference`."""
    ref = reference_answer(reference)
    extracted = extract_answer(completion)
    letter = _reference_choice(ref)
    if letter is not None:
        # Multiple-choice completions rarely box their letter, and the last-number fallback
        # would pick up a number from the reasoning, so look for the option letter instead.
        choice = _choice_letter(extracted, letter) if extracted is not None else None
        if choice is None:
            choice = _choice_letter(completion, letter)
        if choice is not None:
            extracted = choice
    return Grade(extracted=extracted, reference=ref, correct=is_correct(extracted, ref))
