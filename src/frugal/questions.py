"""Read questions from JSONL, Parquet, CSV or a Hugging Face hub dataset into one schema.

Every later stage (pool building, distillation, evaluation) works on `Question`
objects, so this module is the single place that knows about source formats and column
names. It is deliberately strict: every non-blank row either becomes a `Question` or
raises a `QuestionDataError` that names the file, the line (or row index) and the
field, and says how to fix it. Silently dropping rows would make evaluation numbers lie.

Typical use::

    questions = read_questions("train.jsonl", GSM8K_FIELDS)
    questions = read_questions("data.csv", FieldMap(question="prompt", answer="target"))
    questions = read_questions("openai/gsm8k", GSM8K_FIELDS, config_name="main")
    write_questions("questions.jsonl", questions)
    again = read_questions("questions.jsonl", QUESTION_FILE_FIELDS)  # exact round trip
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_FIELDS",
    "GSM8K_FIELDS",
    "QUESTION_FILE_FIELDS",
    "FieldMap",
    "HubOfflineError",
    "Question",
    "QuestionDataError",
    "QuestionSourceError",
    "question_id",
    "read_questions",
    "split_gsm8k_answer",
    "write_questions",
]


class Question(BaseModel):
    """One question with its reference final answer, in the schema all stages share."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)  # the reference *final* answer, compared by the grader
    domain: str | None = None
    source: str = Field(min_length=1)
    # A worked solution when the source has one; kept because it is a usable reasoning trace.
    solution: str | None = None
    # How a generator made the question (task family, difficulty, seed), so a program teacher
    # can rebuild its worked solution; None for questions from data.
    meta: dict[str, Any] | None = None


class FieldMap(BaseModel):
    """Which source column holds each `Question` field.

    `id=None` means the source has no ids: each question gets `question_id` of its
    text. `domain`/`solution`/`source` of `None` mean the source has no such column.
    `answer_format="gsm8k"` means the answer column holds a GSM8K worked solution that
    ends in a `#### N` line; N becomes the answer and the rest becomes `solution`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field("question", min_length=1, description="Column holding the question.")
    answer: str = Field("answer", min_length=1, description="Column holding the answer.")
    id: str | None = Field(None, min_length=1, description="Column holding ids (else hashed).")
    domain: str | None = Field(None, min_length=1, description="Column holding the domain.")
    solution: str | None = Field(None, min_length=1,
                                 description="Column holding a worked solution.")
    # Per-row source name; lets files written by write_questions round-trip exactly.
    source: str | None = Field(default=None, min_length=1, description="Column holding each "
                               "row's source name.")
    meta: str | None = Field(default=None, min_length=1, description="Column holding each row's "
                             "generator parameters (JSON).")
    answer_format: Literal["plain", "gsm8k"] = Field(
        "plain", description="gsm8k: the answer column ends in '#### N'.")

    @model_validator(mode="after")
    def _check_solution_not_doubled(self) -> FieldMap:
        # In gsm8k format the solution is carved out of the answer column; a second
        # solution column would make it ambiguous which one wins.
        if self.answer_format == "gsm8k" and self.solution is not None:
            raise ValueError(
                "answer_format='gsm8k' takes the solution from the answer column; "
                "leave the solution field unmapped"
            )
        return self


DEFAULT_FIELDS = FieldMap()
GSM8K_FIELDS = FieldMap(answer_format="gsm8k")
# The columns write_questions writes, so read_questions(path, QUESTION_FILE_FIELDS) gives
# back exactly what was written (explicit ids, domain, source and solution included).
QUESTION_FILE_FIELDS = FieldMap(
    id="id", domain="domain", solution="solution", source="source", meta="meta"
)


class QuestionDataError(ValueError):
    """A row (or the whole file) cannot be turned into questions; the message says where."""


class QuestionSourceError(OSError):
    """The source itself could not be opened or loaded (bad file type, hub failure)."""


class HubOfflineError(QuestionSourceError, ConnectionError):
    """A hub dataset was requested but the hub cannot be reached and it is not cached."""


# Command-line flag for each mappable field, so error messages can say what to pass.
_FLAGS = {
    "question": "--question-field",
    "answer": "--answer-field",
    "id": "--id-field",
    "domain": "--domain-field",
    "solution": "--solution-field",
    "source": "--source-field",
    "meta": "--meta-field",
}
_JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_READABLE_SUFFIXES = _JSONL_SUFFIXES | {".parquet", ".csv"}
# Suffixes that mark a string as a file path even though it does not exist (it is then a
# typo, not a hub name); includes common data formats we cannot read, to say so clearly.
_PATH_LIKE_SUFFIXES = _READABLE_SUFFIXES | {".tsv", ".txt", ".gz", ".zst", ".arrow", ".xlsx"}
# GSM8K calculator annotations: "48/2 = <<48/2=24>>24" -> "48/2 = 24".
_GSM8K_ANNOTATION = re.compile(r"<<[^<>]*>>")
_GSM8K_ANSWER_LINE = re.compile(r"^\s*####(.*)$")


def question_id(question: str) -> str:
    """Stable id for a question without one: sha256 of its whitespace-normalised text.

    Normalising whitespace means re-wrapped or re-indented copies of the same question get
    the same id, so pools and evaluation results can be joined across files.
    """
    normalised = " ".join(question.split())
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:16]


def split_gsm8k_answer(text: str) -> tuple[str, str | None]:
    """Split a GSM8K answer into (final answer, worked solution or None).

    The final answer is taken from the last `#### N` line with thousands separators
    removed ("#### 1,234" -> "1234"). The solution is everything else, with calculator
    annotations like `<<48/2=24>>` removed. Raises `ValueError` when there is no
    `####` line or it is empty.
    """
    lines = text.splitlines()
    marker = None
    for index in range(len(lines) - 1, -1, -1):
        match = _GSM8K_ANSWER_LINE.match(lines[index])
        if match:
            marker = index, match.group(1)
            break
    if marker is None:
        raise ValueError("has no '#### <answer>' line")
    index, raw_answer = marker
    answer = raw_answer.strip().replace(",", "")
    if not answer:
        raise ValueError("has a '####' line with no answer after it")
    rest = "\n".join(lines[:index] + lines[index + 1 :])
    solution = _GSM8K_ANNOTATION.sub("", rest).strip()
    return answer, solution or None


# --------------------------------------------------------------------------- reading


def read_questions(
    source: str | Path,
    fields: FieldMap = DEFAULT_FIELDS,
    *,
    split: str = "train",
    config_name: str | None = None,
    source_name: str | None = None,
    limit: int | None = None,
) -> list[Question]:
    """Read questions from a local file or a Hugging Face hub dataset.

    `source` is a local `.jsonl`/`.json` (JSON Lines), `.parquet` or `.csv` file,
    or a hub dataset name such as `"openai/gsm8k"` (loaded with `split` and
    `config_name`). A `Path` is always treated as a local file. Each question's
    `source` is `source_name` if given, else the row's mapped source column, else the
    file stem or hub name. `limit` keeps only the first `limit` questions.

    Raises `QuestionDataError` for a bad row, `FileNotFoundError` for a missing
    local file, `HubOfflineError` when the hub cannot be reached, and
    `QuestionSourceError` for other failures to open the source.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if source_name is not None and not source_name.strip():
        raise ValueError("source_name must not be empty")

    if isinstance(source, Path) or _looks_like_path(source):
        path = Path(source).expanduser()
        rows = _read_local(path)
        default_source = source_name or path.stem
    else:
        rows = _read_hub(source, config_name=config_name, split=split)
        default_source = source_name or source
    return _convert_rows(
        rows,
        fields,
        default_source=default_source,
        override_source=source_name is not None,
        limit=limit,
    )


def write_questions(path: str | Path, questions: Iterable[Question]) -> None:
    """Write questions as JSONL, one `model_dump` per line (UTF-8, non-ASCII kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for question in questions:
            f.write(json.dumps(question.model_dump(mode="json"), ensure_ascii=False))
            f.write("\n")


def _looks_like_path(source: str) -> bool:
    """Whether a string that may not exist is meant as a local path rather than a hub name.

    Hub names are `name` or `org/name`; one `/` alone is therefore not enough to call
    something a path (that would send every `org/name` to the file reader).
    """
    if os.path.exists(source):
        return True
    if Path(source).suffix.lower() in _PATH_LIKE_SUFFIXES:
        return True
    if source.startswith(("/", ".", "~")) or (os.altsep is not None and os.altsep in source):
        return True
    separators = source.count("/") + (source.count(os.sep) if os.sep != "/" else 0)
    return separators > 1


# A row read from a source, with where it came from: ("line 7", {...}) or ("row index 3", ...).
_Row = tuple[str, Mapping[str, Any]]
_Rows = tuple[str, Iterator[_Row]]  # (prefix naming the file/dataset, rows)


def _read_local(path: Path) -> _Rows:
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file (looked for {path.resolve()}); check the path, or pass a "
            "Hugging Face hub dataset name like 'openai/gsm8k' to load from the hub"
        )
    if path.is_dir():
        raise QuestionSourceError(
            f"{path}: is a directory; pass a .jsonl, .json, .parquet or .csv file"
        )
    suffix = path.suffix.lower()
    prefix = str(path)
    if suffix in _JSONL_SUFFIXES:
        return prefix, _jsonl_rows(path)
    if suffix == ".parquet":
        return prefix, _parquet_rows(path)
    if suffix == ".csv":
        return prefix, _csv_rows(path)
    raise QuestionSourceError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}; "
        "use .jsonl/.json (JSON Lines), .parquet or .csv"
    )


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    # Read bytes line by line so that both decoding and JSON errors can name the line.
    json_hint = (
        "; .json files are read as JSON Lines (one object per line), not one JSON document"
        if path.suffix.lower() == ".json"
        else ""
    )
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path} line {lineno}"
            try:
                # utf-8-sig on the first line tolerates a byte-order mark from Windows editors.
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise QuestionDataError(
                    f"{where}: not valid UTF-8 ({e.reason} at byte {e.start}); "
                    "re-save the file as UTF-8"
                ) from None
            if not text.strip():
                continue  # blank lines separate nothing and carry no data
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise QuestionDataError(
                    f"{where}: invalid JSON ({e.msg} at column {e.colno}); each line must be "
                    f"one complete JSON object{json_hint}"
                ) from None
            if not isinstance(row, dict):
                raise QuestionDataError(
                    f"{where}: expected a JSON object, got {_json_type(row)}; each line must "
                    "be an object like {\"question\": ..., \"answer\": ...}"
                )
            yield f"line {lineno}", row


def _parquet_rows(path: Path) -> Iterator[_Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise QuestionDataError(f"{path}: not a readable Parquet file ({e})") from None
    index = 0
    # Batches keep memory bounded and let `limit` stop early on big files.
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            yield f"row index {index}", row
            index += 1


def _csv_rows(path: Path) -> Iterator[_Row]:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            try:
                header = next(reader)
            except StopIteration:
                raise QuestionDataError(
                    f"{path}: the file is empty; a CSV needs a header row naming its columns"
                ) from None
            duplicates = sorted({name for name in header if header.count(name) > 1})
            if duplicates:
                raise QuestionDataError(
                    f"{path} line 1: the header names column(s) {', '.join(duplicates)} more "
                    "than once; give every column a unique name"
                )
            previous_end = reader.line_num
            for values in reader:
                # A quoted value may span lines; report the line the record starts on.
                start, previous_end = previous_end + 1, reader.line_num
                if not values:
                    continue  # blank line
                if len(values) != len(header):
                    raise QuestionDataError(
                        f"{path} line {start}: has {len(values)} values but the header has "
                        f"{len(header)} columns ({', '.join(header)}); quote values that "
                        "contain commas or fix the row"
                    )
                yield f"line {start}", dict(zip(header, values, strict=True))
        except UnicodeDecodeError as e:
            raise QuestionDataError(
                f"{path} line {reader.line_num + 1}: not valid UTF-8 ({e.reason}); "
                "re-save the file as UTF-8"
            ) from None
        except csv.Error as e:
            raise QuestionDataError(
                f"{path} line {reader.line_num}: malformed CSV ({e}); fix the quoting"
            ) from None


def _read_hub(name: str, *, config_name: str | None, split: str) -> _Rows:
    # Imported here: `datasets` is slow to import and only needed for hub names.
    import datasets

    what = f"hub dataset {name!r}" + (f" (config {config_name!r})" if config_name else "")
    try:
        dataset = datasets.load_dataset(name, config_name, split=split)
    except Exception as e:
        offline = _offline_reason(e)
        if offline is not None:
            raise HubOfflineError(
                f"could not load {what}, split {split!r}, from the Hugging Face hub: this "
                f"machine appears to be offline ({offline}) and the dataset is not in the "
                "local cache. To fix it, either download it on a machine with internet "
                f"access (e.g. datasets.load_dataset({name!r}, {config_name!r}, "
                f"split={split!r}).to_json('questions.jsonl')) and pass that local file "
                "instead of the hub name, or run this once with network access so it is "
                f"cached. Underlying error: {type(e).__name__}: {e}"
            ) from e
        raise QuestionSourceError(
            f"could not load {what}, split {split!r}, from the Hugging Face hub: "
            f"{type(e).__name__}: {e}. Check the dataset name, config and split; if you meant "
            f"a local file, no file {name!r} exists"
        ) from e
    prefix = f"{what} split {split!r}"
    return prefix, ((f"row index {i}", row) for i, row in enumerate(dataset))


def _offline_reason(error: BaseException) -> str | None:
    """Why a hub load failure looks like "no network", or None if it looks like another fault."""
    if _offline_mode_enabled():
        return (
            "offline mode is enabled: HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set; unset it "
            "if this machine does have network access"
        )
    # Different huggingface_hub / datasets versions wrap network failures differently
    # (builtin ConnectionError, requests or httpx errors), so walk the whole chain.
    network_error_names = {
        "ConnectError",
        "ConnectTimeout",
        "NameResolutionError",
        "MaxRetryError",
        "OfflineModeIsEnabled",
    }
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | socket.gaierror | TimeoutError) or any(
            cls.__name__ in network_error_names for cls in type(current).__mro__
        ):
            return "the Hugging Face hub could not be reached"
        current = current.__cause__ or current.__context__
    return None


def _offline_mode_enabled() -> bool:
    truthy = {"1", "ON", "YES", "TRUE"}
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(name, "").upper() in truthy for name in names):
        return True
    try:  # the libraries read the environment at import time; honour what they decided
        import datasets.config

        return bool(datasets.config.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - datasets is a dependency
        return False


# --------------------------------------------------------------------------- converting


def _convert_rows(
    rows: _Rows,
    fields: FieldMap,
    *,
    default_source: str,
    override_source: bool,
    limit: int | None,
) -> list[Question]:
    prefix, items = rows
    questions: list[Question] = []
    first_seen: dict[str, str] = {}  # id -> label of the row that used it first
    try:
        for label, row in items:
            if limit is not None and len(questions) >= limit:
                break
            where = f"{prefix} {label}"
            question = _row_to_question(
                row, fields, where, default_source=default_source, override_source=override_source
            )
            if question.id in first_seen:
                how = "ids" if fields.id is not None else "hashed ids (same question text twice)"
                raise QuestionDataError(
                    f"{where}: duplicate id {question.id!r}, already used on "
                    f"{first_seen[question.id]} of {prefix}; {how} must be unique within a "
                    "file - fix or remove one of the rows"
                )
            first_seen[question.id] = label
            questions.append(question)
    finally:
        # Stopping early at `limit` must still close the file the generator holds open.
        close = getattr(items, "close", None)
        if close is not None:
            close()
    return questions


def _row_to_question(
    row: Mapping[str, Any],
    fields: FieldMap,
    where: str,
    *,
    default_source: str,
    override_source: bool,
) -> Question:
    cell = _Cells(row, where)

    text = cell.required_text("question", fields.question)
    if fields.answer_format == "gsm8k":
        raw = cell.required_text("answer", fields.answer)
        try:
            answer, solution = split_gsm8k_answer(raw)
        except ValueError as e:
            raise QuestionDataError(
                f"{where}: field {cell.label('answer', fields.answer)} {e}, which "
                "answer_format='gsm8k' requires; fix the row, or read the file with "
                "answer_format='plain' if its answers are plain final answers"
            ) from None
    else:
        answer = cell.required_text("answer", fields.answer, allow_numbers=True)
        solution = cell.optional_text("solution", fields.solution)

    if fields.id is None:
        qid = question_id(text)
    else:
        qid = cell.required_text("id", fields.id, allow_numbers=True, integers_only=True)

    source = default_source
    if not override_source:
        source = cell.optional_text("source", fields.source) or default_source

    return Question(
        id=qid,
        question=text,
        answer=answer,
        domain=cell.optional_text("domain", fields.domain),
        source=source,
        solution=solution,
        meta=cell.optional_object("meta", fields.meta),
    )


class _Cells:
    """Typed access to one row's values, raising errors that say where and how to fix."""

    def __init__(self, row: Mapping[str, Any], where: str) -> None:
        self.row = row
        self.where = where

    @staticmethod
    def label(role: str, column: str) -> str:
        return repr(column) if role == column else f"{column!r} (mapped as the {role})"

    def _error(self, role: str, column: str, problem: str, fix: str) -> QuestionDataError:
        return QuestionDataError(f"{self.where}: field {self.label(role, column)} {problem}; {fix}")

    def _get(self, role: str, column: str) -> Any:
        if column not in self.row:
            present = ", ".join(str(key) for key in self.row) or "none"
            raise self._error(
                role,
                column,
                f"is missing (columns present: {present})",
                f"map it with {_FLAGS[role]} (FieldMap({role}=...)) or fix the row",
            )
        return self.row[column]

    def required_text(
        self, role: str, column: str, *, allow_numbers: bool = False, integers_only: bool = False
    ) -> str:
        value = self._get(role, column)
        if value is None:
            raise self._error(role, column, "is null", f"every row needs a {role}; fix the row")
        if allow_numbers and isinstance(value, int | float) and not isinstance(value, bool):
            # Numeric answers (72, 72.0) and integer ids are common in hub datasets; str()
            # keeps exactly what the source said rather than guessing a canonical form.
            if isinstance(value, float) and (integers_only or not math.isfinite(value)):
                raise self._error(
                    role, column, f"is the number {value!r}", f"write the {role} as text"
                )
            value = str(value)
        if not isinstance(value, str):
            allowed = "a string or number" if allow_numbers else "a string"
            raise self._error(
                role,
                column,
                f"must be {allowed}, got {_json_type(value)} ({_preview(value)})",
                f"write the {role} as text",
            )
        value = value.strip()
        if not value:
            raise self._error(role, column, "is empty", f"every row needs a {role}; fix the row")
        return value

    def optional_text(self, role: str, column: str | None) -> str | None:
        if column is None:
            return None
        value = self._get(role, column)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._error(
                role,
                column,
                f"must be a string or null, got {_json_type(value)} ({_preview(value)})",
                f"write the {role} as text",
            )
        # CSV has no null, so an empty cell is how a row says "no value" for optional fields.
        return value.strip() or None

    def optional_object(self, role: str, column: str | None) -> dict[str, Any] | None:
        if column is None:
            return None
        value = self._get(role, column)
        if value is None or value == "":
            return None
        if not isinstance(value, dict):
            raise self._error(
                role,
                column,
                f"must be an object or null, got {_json_type(value)} ({_preview(value)})",
                f"write the {role} as a JSON object",
            )
        return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


def _preview(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
