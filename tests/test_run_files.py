"""Run files on real disk: atomic writes that leave the old file or the new, and reads that turn
a corrupt state file (ledger.json, stages.json) into one clear error naming file, line and fix."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from frugal.cli import app
from frugal.ledger import LedgerEntry, append_entry, read_ledger
from frugal.run_files import (
    LEDGER,
    RunFileError,
    atomic_dir,
    read_json,
    read_yaml,
    write_json,
    write_jsonl,
    write_text_atomic,
)

runner = CliRunner()


def test_read_json_returns_the_default_only_when_the_file_is_missing(tmp_path: Path) -> None:
    assert read_json(tmp_path / "absent.json", default={"x": 1}, fix="-") == {"x": 1}
    (tmp_path / "there.json").write_text('{"a": [1, 2]}\n')
    assert read_json(tmp_path / "there.json", default=None, fix="-") == {"a": [1, 2]}


@pytest.mark.parametrize(("content", "line", "column", "problem"), [
    (b'{\n  "a": 1,\n  "b": \n}\n', 4, 1, "not valid JSON"),  # edited by hand
    (b'{"entries": [{"dollars": 0.5}, {"dollars"', 1, 42, "not valid JSON"),  # cut short
    (b"\0" * 64, 1, 1, "not valid JSON"),  # a crash left the reserved space zero-filled
    (b'{"a": 1,\n "b": "caf\xc3"}', 2, 11, "not UTF-8"),
])
def test_read_json_names_file_line_column_and_fix(tmp_path: Path, content: bytes, line: int,
                                                  column: int, problem: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(RunFileError) as raised:
        read_json(path, default={}, fix="delete it to start over")
    error = raised.value
    assert (error.path, error.line, error.column) == (path, line, column)
    assert str(error).startswith(f"{path}, line {line}, column {column}: {problem}")
    assert str(error).endswith("Fix: delete it to start over")
    assert isinstance(error, ValueError)  # the CLI's `except ValueError` turns it into `error:`


def test_read_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\nsource: [a, b\nlimit: 3\n")
    with pytest.raises(RunFileError, match=r"spec.yaml, line 3, column 6: not valid YAML: "
                       r"expected ',' or '\]'.*line 2.*Fix: fix it"):
        read_yaml(path, fix="fix it")
    path.write_bytes(b"name: x\nsource: ta\0sks\n")
    with pytest.raises(RunFileError, match=r"line 2, column 11: character U\+0000 is not"):
        read_yaml(path, fix="fix it")


def only_file(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_json_replaces_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"step": 1})
    write_json(path, {"step": 2, "text": "naïve"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"step": 2, "text": "naïve"}
    assert only_file(tmp_path) == ["state.json"]
    # A new file gets the mode open() would give it (mkstemp alone would make it owner-only).
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o600)  # a file the user locked down stays locked down
    write_json(path, {"step": 3})
    assert path.stat().st_mode & 0o777 == 0o600
    write_json(path, [[0.25] * 3], indent=None)
    assert path.read_text() == "[[0.25, 0.25, 0.25]]\n"


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json(path, {"kept": True})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json(path, {"kept": False, "oops": object()})  # not serialisable
    assert path.read_bytes() == before and only_file(tmp_path) == ["state.json"]

    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, [{"n": 0}, {"n": 1}])
    old_rows = rows.read_bytes()

    def failing() -> Iterator[dict[str, Any]]:
        yield {"n": 10}
        yield {"n": 11}
        raise OSError(28, "No space left on device")  # what a full disk raises mid-write

    with pytest.raises(OSError, match="No space"):
        write_jsonl(rows, failing())
    assert rows.read_bytes() == old_rows
    assert only_file(tmp_path) == ["rows.jsonl", "state.json"]
    write_text_atomic(tmp_path / "report.md", "# report\n")
    assert (tmp_path / "report.md").read_text() == "# report\n"
    assert only_file(tmp_path) == ["report.md", "rows.jsonl", "state.json"]


def test_atomic_dir_swaps_a_directory_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with atomic_dir(target) as staging:
        (staging / "weights.bin").write_bytes(b"old")
        assert not target.exists()  # nothing at the final path until it is complete
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "weights.bin").write_bytes(b"half")
        raise RuntimeError("the save crashed")
    assert only_file(target) == ["weights.bin"] and (target / "weights.bin").read_bytes() == b"old"
    assert only_file(tmp_path) == ["model"]
    with atomic_dir(target) as staging:
        (staging / "config.json").write_text("{}")
    assert only_file(target) == ["config.json"]  # replaced whole: no stale file from before
    assert only_file(tmp_path) == ["model"]


@pytest.mark.parametrize(("content", "where"), [
    ('{"entries": [{"dollars": 1.5}, {"dol', "line 1, column 33"),
    ('{"entries": [\n  {"dollars": 1.5},\n  {"dollars": 2.0,}\n]}', "line 3, column 19"),
    ('{"entries": {"dollars": 1.5}}', ""),  # JSON, but not a ledger
])
def test_a_corrupt_ledger_is_an_error_not_a_fresh_ledger(tmp_path: Path, content: str,
                                                         where: str) -> None:
    path = tmp_path / LEDGER
    path.write_text(content)
    with pytest.raises(RunFileError, match=rf"ledger.json{', ' if where else ''}{where}: .*Fix: "):
        read_ledger(tmp_path)
    # Appending must not "repair" it by starting over: the recorded costs would be lost.
    with pytest.raises(RunFileError):
        append_entry(tmp_path, LedgerEntry(stage="eval", dollars=0.1))
    assert path.read_text() == content


def test_distill_with_a_corrupt_ledger_exits_with_one_error_line(tmp_path: Path) -> None:
    made = runner.invoke(app, ["pool", "--run", str(tmp_path), "--per-family", "1",
                               "--families", "arithmetic"])
    assert made.exit_code == 0, made.output
    (tmp_path / LEDGER).write_text('{"entries": [{"stage": "pool"')
    result = runner.invoke(app, ["distill", "--run", str(tmp_path), "--teacher", "program"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # no traceback
    assert "Traceback" not in result.output
    assert f"error: {tmp_path / LEDGER}, line 1, column 30: not valid JSON" in result.output
    assert "Fix: correct ledger.json" in result.output


def test_stage_records_are_typed_and_round_trip(tmp_path: Path) -> None:
    from frugal.run_files import STAGES_FILE, StageRecord, read_stages, write_stages

    records = {"pool": StageRecord(key="k1", status="done", seconds=1.5, finished="2026-11-30"),
               "distill": StageRecord(key="k2", status="partial", missing="3 questions")}
    write_stages(tmp_path, records)
    assert read_stages(tmp_path) == records
    (tmp_path / STAGES_FILE).write_text('{"pool": {"key": "k1", "status": "finished"}}')
    with pytest.raises(RunFileError, match="not a stage record"):
        read_stages(tmp_path)


def test_no_other_module_spells_a_run_file_name() -> None:
    """Every file name inside a run directory is a run_files constant: a module that wrote
    "traces.jsonl" itself would drift from the others the day the name changes."""
    import frugal
    from frugal import run_files

    names = {value for key, value in vars(run_files).items()
             if key.isupper() and isinstance(value, str) and ("." in value or "/" in value)}
    assert {"traces.jsonl", "ledger.json", "selected.jsonl", "summary.json"} <= names
    package = Path(frugal.__file__).parent
    spelled = [
        f"{path.relative_to(package)}: {name}"
        for path in sorted(package.rglob("*.py")) if path.name != "run_files.py"
        for name in names if f'"{name}"' in path.read_text() or f"'{name}'" in path.read_text()
    ]
    assert not spelled, spelled


def test_records_keep_every_line_break_json_does_not_escape(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 stay raw in JSON lines (ensure_ascii=False): a record holding
    one is still one line."""
    from frugal.run_files import Trace, read_records, write_records

    traces = [Trace(id="a", thinking="one\u2028two\u2029three\x85four", answer="x"),
              Trace(id="b", thinking="plain", answer="y")]
    write_records(tmp_path / "traces.jsonl", traces)
    assert read_records(tmp_path / "traces.jsonl", Trace, fix="-") == traces
