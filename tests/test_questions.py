"""Tests for frugal.questions: every format, field mapping, GSM8K parsing and each error."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from frugal.questions import (
    GSM8K_FIELDS,
    QUESTION_FILE_FIELDS,
    FieldMap,
    HubOfflineError,
    Question,
    QuestionDataError,
    QuestionSourceError,
    question_id,
    read_questions,
    split_gsm8k_answer,
    write_questions,
)

GSM8K_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# --------------------------------------------------------------------------- formats


def test_jsonl_reads_rows_hashes_ids_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "arith.jsonl"
    path.write_text(
        '{"question": "What is 2+2?", "answer": "4"}\n'
        "\n"
        "   \n"
        '{"question": "  What is 70+2?  ", "answer": 72, "extra": "ignored"}\n'
        '{"question": "Half of 145?", "answer": 72.5}\n'
        '{"question": "Café price?", "answer": "3 €"}\n',
        encoding="utf-8",
    )

    questions = read_questions(path)

    assert [q.answer for q in questions] == ["4", "72", "72.5", "3 €"]
    assert questions[1].question == "What is 70+2?"  # surrounding whitespace stripped
    assert [q.id for q in questions] == [question_id(q.question) for q in questions]
    assert all(re.fullmatch(r"[0-9a-f]{16}", q.id) for q in questions)
    assert {q.source for q in questions} == {"arith"}  # file stem
    assert all(q.domain is None and q.solution is None for q in questions)


def test_float_answer_keeps_its_written_form(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": "q", "answer": 72.0}])
    assert read_questions(path)[0].answer == "72.0"


def test_question_id_is_stable_under_whitespace_changes() -> None:
    a = question_id("How many  clips\ndid she sell?")
    b = question_id("  How many clips did she sell?  ")
    assert a == b
    assert a != question_id("How many clips did he sell?")
    assert re.fullmatch(r"[0-9a-f]{16}", a)


def test_json_suffix_is_read_as_json_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", [{"question": "q1", "answer": "a1"}])
    assert [q.answer for q in read_questions(path)] == ["a1"]


def test_parquet_with_custom_column_names(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "math.parquet",
        [
            {"uid": 10, "problem": "1+1?", "target": 2, "topic": "arith", "worked": "1+1=2"},
            {"uid": 11, "problem": "2*3?", "target": 6, "topic": None, "worked": None},
        ],
    )
    fields = FieldMap(
        question="problem", answer="target", id="uid", domain="topic", solution="worked"
    )

    questions = read_questions(path, fields)

    assert questions == [
        Question(id="10", question="1+1?", answer="2", domain="arith", source="math",
                 solution="1+1=2"),
        Question(id="11", question="2*3?", answer="6", domain=None, source="math",
                 solution=None),
    ]


def test_csv_with_mapping_multiline_values_and_source_name(tmp_path: Path) -> None:
    path = tmp_path / "set.csv"
    path.write_text(
        "prompt,gold,area\n"
        'What is 3+4?,7,arith\n'
        '"A poem:\nroses, violets\nHow many lines?",3,\n'
        "\n"
        "Last one?,yes,logic\n",
        encoding="utf-8",
    )
    fields = FieldMap(question="prompt", answer="gold", domain="area")

    questions = read_questions(path, fields, source_name="my-set")

    assert [q.answer for q in questions] == ["7", "3", "yes"]
    assert questions[1].question == "A poem:\nroses, violets\nHow many lines?"
    assert [q.domain for q in questions] == ["arith", None, "logic"]  # empty cell -> None
    assert {q.source for q in questions} == {"my-set"}


def test_limit_keeps_the_first_questions(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    path = write_jsonl(tmp_path / "ten.jsonl", rows)
    assert [q.answer for q in read_questions(path, limit=3)] == ["0", "1", "2"]
    assert read_questions(path, limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        read_questions(path, limit=-1)


# --------------------------------------------------------------------------- GSM8K


def test_split_gsm8k_answer_strips_commas_and_annotations() -> None:
    answer, solution = split_gsm8k_answer(
        "Each costs $<<2*600=1200>>1,200.\nSo 1,200 + 34 = <<1200+34=1234>>1,234.\n#### 1,234"
    )
    assert answer == "1234"
    assert solution == "Each costs $1,200.\nSo 1,200 + 34 = 1,234."


def test_split_gsm8k_answer_requires_marker() -> None:
    with pytest.raises(ValueError, match="####"):
        split_gsm8k_answer("The answer is 5.")
    with pytest.raises(ValueError, match="no answer"):
        split_gsm8k_answer("Work.\n####   ")


@pytest.mark.skipif(
    not GSM8K_TRAIN.is_file(),
    reason=f"real GSM8K data not present at {GSM8K_TRAIN} (expected ../shared beside the repo)",
)
def test_gsm8k_real_train_file() -> None:
    first = read_questions(GSM8K_TRAIN, GSM8K_FIELDS)
    second = read_questions(GSM8K_TRAIN, GSM8K_FIELDS)

    assert len(first) == 7473
    assert first[0].answer == "72"
    assert first[0].question.startswith("Natalia sold clips to 48 of her friends")
    assert first[0].solution == (
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May."
    )
    assert all(q.solution for q in first)
    assert not any("<<" in q.solution or ">>" in q.solution or "####" in q.solution
                   for q in first if q.solution)
    assert not any("," in q.answer for q in first)
    assert {q.source for q in first} == {"train"}
    ids = [q.id for q in first]
    assert ids == [q.id for q in second]
    assert len(set(ids)) == len(ids)


def test_gsm8k_fields_refuse_a_separate_solution_column() -> None:
    with pytest.raises(ValidationError, match="solution"):
        FieldMap(answer_format="gsm8k", solution="worked")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("lines", "fields", "line_no", "expected"),
    [
        pytest.param(
            ['{"question": "q", "answer": "a"}', '{"question": "q2", "answer": '],
            FieldMap(), 2, r"invalid JSON \(Expecting value at column \d+\)",
            id="invalid-json",
        ),
        pytest.param(
            ['{"question": "q", "answer": "a"}', '["q2", "a2"]'],
            FieldMap(), 2, r"expected a JSON object, got an array",
            id="not-an-object",
        ),
        pytest.param(
            ['{"question": "q", "solution": "s"}'],
            FieldMap(), 1,
            r"field 'answer' is missing \(columns present: question, solution\); "
            r"map it with --answer-field",
            id="missing-answer",
        ),
        pytest.param(
            ['{"prompt": "q", "answer": "a"}'],
            FieldMap(), 1, r"field 'question' is missing .*--question-field",
            id="missing-question",
        ),
        pytest.param(
            ['{"q": "x", "a": "y"}', '{"q": "x2"}'],
            FieldMap(question="q", answer="a"), 2,
            r"field 'a' \(mapped as the answer\) is missing",
            id="missing-mapped-answer",
        ),
        pytest.param(
            ['{"question": "q", "answer": "a"}', '{"question": "   ", "answer": "a"}'],
            FieldMap(), 2, r"field 'question' is empty",
            id="empty-question",
        ),
        pytest.param(
            ['{"question": "q", "answer": ""}'],
            FieldMap(), 1, r"field 'answer' is empty",
            id="empty-answer",
        ),
        pytest.param(
            ['{"question": 12, "answer": "a"}'],
            FieldMap(), 1, r"field 'question' must be a string, got a number \(12\)",
            id="numeric-question",
        ),
        pytest.param(
            ['{"question": "q", "answer": ["a", "b"]}'],
            FieldMap(), 1, r"field 'answer' must be a string or number, got an array",
            id="list-answer",
        ),
        pytest.param(
            ['{"question": "q", "answer": true}'],
            FieldMap(), 1, r"field 'answer' must be a string or number, got a boolean",
            id="bool-answer",
        ),
        pytest.param(
            ['{"question": "q", "answer": null}'],
            FieldMap(), 1, r"field 'answer' is null",
            id="null-answer",
        ),
        pytest.param(
            ['{"question": "q", "answer": "a", "topic": 3}'],
            FieldMap(domain="topic"), 1,
            r"field 'topic' \(mapped as the domain\) must be a string or null, got a number",
            id="numeric-domain",
        ),
        pytest.param(
            ['{"question": "q", "answer": "a", "uid": 1.5}'],
            FieldMap(id="uid"), 1, r"field 'uid' \(mapped as the id\) is the number 1.5",
            id="float-id",
        ),
        pytest.param(
            ['{"question": "q", "answer": "Work 2+2=4.\\n#### 4"}',
             '{"question": "q2", "answer": "The answer is 5."}'],
            GSM8K_FIELDS, 2, r"field 'answer' has no '#### <answer>' line.*answer_format='gsm8k'",
            id="gsm8k-without-marker",
        ),
        pytest.param(
            ['{"question": "q", "answer": 4}'],
            GSM8K_FIELDS, 1, r"field 'answer' must be a string, got a number",
            id="gsm8k-numeric-answer",
        ),
    ],
)
def test_jsonl_row_errors_name_file_line_and_field(
    tmp_path: Path, lines: list[str], fields: FieldMap, line_no: int, expected: str
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(QuestionDataError) as caught:
        read_questions(path, fields)

    message = str(caught.value)
    assert message.startswith(f"{path} line {line_no}: "), message
    assert re.search(expected, message), message


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "gappy.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n\n\n{"question": "q2"}\n', "utf-8")
    with pytest.raises(QuestionDataError, match=r"gappy\.jsonl line 4: field 'answer'"):
        read_questions(path)


def test_json_document_gets_a_json_lines_hint(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps([{"question": "q", "answer": "a"}], indent=2), "utf-8")
    with pytest.raises(QuestionDataError, match=r"doc\.json line 1: invalid JSON.*JSON Lines"):
        read_questions(path)


def test_duplicate_hashed_ids_name_both_lines(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "dups.jsonl",
        [
            {"question": "What is 2+2?", "answer": "4"},
            {"question": "Other?", "answer": "x"},
            {"question": "What  is 2+2? ", "answer": "4"},
        ],
    )
    with pytest.raises(QuestionDataError) as caught:
        read_questions(path)
    message = str(caught.value)
    assert message.startswith(f"{path} line 3: duplicate id ")
    assert "already used on line 1" in message
    assert "same question text twice" in message


def test_duplicate_explicit_ids_name_both_lines(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "ids.jsonl",
        [
            {"id": "a", "question": "q1", "answer": "1"},
            {"id": "b", "question": "q2", "answer": "2"},
            {"id": "a", "question": "q3", "answer": "3"},
        ],
    )
    with pytest.raises(QuestionDataError, match=r"ids\.jsonl line 3: duplicate id 'a', already "
                       r"used on line 1"):
        read_questions(path, FieldMap(id="id"))


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "caf\xe9", "answer": "a"}\n')
    with pytest.raises(QuestionDataError, match=r"latin1\.jsonl line 2: not valid UTF-8"):
        read_questions(path)


def test_csv_errors_count_the_header_as_line_one(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("question,answer\nq1,a1\n ,a2\n", encoding="utf-8")
    with pytest.raises(QuestionDataError) as caught:
        read_questions(path)
    assert str(caught.value).startswith(f"{path} line 3: field 'question' is empty")


def test_csv_missing_column_lists_the_header(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("prompt,answer\nq1,a1\n", encoding="utf-8")
    with pytest.raises(
        QuestionDataError,
        match=r"cols\.csv line 2: field 'question' is missing \(columns present: prompt, answer\)",
    ):
        read_questions(path)


def test_csv_row_with_extra_values_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "commas.csv"
    path.write_text("question,answer\nq1,a1\nHow much is 1,000 + 1?,1001\n", encoding="utf-8")
    with pytest.raises(
        QuestionDataError, match=r"commas\.csv line 3: has 3 values but the header has 2 columns"
    ):
        read_questions(path)


def test_empty_csv_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(QuestionDataError, match=r"empty\.csv: the file is empty"):
        read_questions(path)


def test_parquet_errors_name_the_row_index(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "nulls.parquet",
        [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": None}],
    )
    with pytest.raises(QuestionDataError) as caught:
        read_questions(path)
    assert str(caught.value).startswith(f"{path} row index 1: field 'answer' is null")

    with pytest.raises(QuestionDataError, match=r"row index 0: field 'solution' is missing"):
        read_questions(path, FieldMap(solution="solution"))


def test_corrupt_parquet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(QuestionDataError, match=r"broken\.parquet: not a readable Parquet file"):
        read_questions(path)


@pytest.mark.parametrize("name", ["missing.jsonl", "nested/dir/data", "./data"])
def test_missing_local_path_raises_file_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(Path(name)))}: no such file"):
        read_questions(name)


def test_unsupported_suffix_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("question,answer\n", encoding="utf-8")
    with pytest.raises(QuestionSourceError, match=r"notes\.txt: unsupported file type '\.txt'"):
        read_questions(path)


# --------------------------------------------------------------------------- hub


def test_hub_name_goes_to_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls: list[tuple[Any, ...]] = []

    def fake_load_dataset(name: str, config: str | None, *, split: str) -> list[dict[str, Any]]:
        calls.append((name, config, split))
        return [
            {"question": "q1", "answer": "Step <<1+1=2>>2.\n#### 2"},
            {"question": "q2", "answer": "Step.\n#### 3"},
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)

    questions = read_questions("openai/gsm8k", GSM8K_FIELDS, config_name="main", split="test")

    assert calls == [("openai/gsm8k", "main", "test")]
    assert [(q.answer, q.solution, q.source) for q in questions] == [
        ("2", "Step 2.", "openai/gsm8k"),
        ("3", "Step.", "openai/gsm8k"),
    ]


def test_hub_row_errors_name_dataset_and_row_index(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda name, config, *, split: [{"question": "q", "answer": "a"}, {"question": "q2"}],
    )
    with pytest.raises(
        QuestionDataError,
        match=r"hub dataset 'org/ds' split 'train' row index 1: field 'answer' is missing",
    ):
        read_questions("org/ds")


def test_hub_name_offline_raises_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read these variables once, at import, which may already have happened
    # in this process; set the resulting constants too so offline mode really is on.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    # An empty cache, so nothing a developer downloaded earlier can satisfy the request.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    # Belt and braces: any attempt to open a connection is recorded and refused.
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)

    started = time.monotonic()
    with pytest.raises(HubOfflineError) as caught:
        read_questions("nonexistent-org/nonexistent-ds")
    elapsed = time.monotonic() - started

    message = str(caught.value)
    assert "'nonexistent-org/nonexistent-ds'" in message
    assert "could not load" in message and "Hugging Face hub" in message
    assert "appears to be offline" in message
    assert "machine with internet access" in message and "local file" in message
    assert isinstance(caught.value, ConnectionError)
    assert attempts == []
    assert elapsed < 30


# --------------------------------------------------------------------------- writing


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    questions = [
        Question(id="custom-1", question="Combien coûte un café ?", answer="4", domain="arith",
                 source="fr-set", solution="2+2=4"),
        Question(id=question_id("Plain?"), question="Plain?", answer="yes", source="other"),
        Question(id="gen-1", question="2+2?", answer="4", source="tasks",
                 meta={"family": "arithmetic", "seed": 7}),
    ]
    path = tmp_path / "out" / "questions.jsonl"

    write_questions(path, questions)

    text = path.read_text(encoding="utf-8")
    assert "Combien coûte un café ?" in text  # non-ASCII written as-is, not \u-escaped
    lines = text.splitlines()
    assert len(lines) == 3
    assert json.loads(lines[1]) == {
        "id": questions[1].id, "question": "Plain?", "answer": "yes", "domain": None,
        "source": "other", "solution": None, "meta": None,
    }
    assert read_questions(path, QUESTION_FILE_FIELDS) == questions
    # With the default mapping the hashed id still matches; only the extras are dropped.
    assert read_questions(path)[1].id == questions[1].id


def test_question_model_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Question(id="1", question="q", answer="a", source="s", difficulty="hard")  # type: ignore[call-arg]
