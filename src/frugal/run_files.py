"""File names inside a run directory, and how stages write and read them (docs/design.md,
"Run directory").

Writes are atomic: the new content goes to a unique temporary name in the same directory, is
fsynced, and is renamed over the old file (then the directory is fsynced, so the rename itself
survives a power cut). A crash, a full disk or a bug midway leaves the old file or the new, never
half of one, and two writers never share a temporary name. Reads of state files turn a corrupt
file into a `RunFileError` that names the file, the line and column, and how to fix it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

RecordT = TypeVar("RecordT", bound=BaseModel)

# Every name inside a run directory (docs/design.md, "Run directory"); no other module spells one.
RECIPE = "recipe.yaml"  # the resolved recipe of `frugal run`
STAGES_FILE = "stages.json"  # `frugal run`'s record of each stage: done or partial, settings key
POOL = "pool.jsonl"
TRACES = "traces.jsonl"
TEACHER_CACHE = "teacher-cache.sqlite"
LEDGER = "ledger.json"
LEDGER_LOCK = ".ledger.lock"  # held while an entry is appended
LOCK_FILE = ".frugal.lock"  # the one writer of the run directory holds it
SELECTED = "selected.jsonl"
SELECTION = "selection.json"
ADAPTERS = "adapters"  # adapters/<name>/: PEFT's files and TRAIN_RECORD
MODELS = "models"  # models/<name>/: whole models of a full fine-tuning
CHECKPOINTS = "checkpoints"  # checkpoints/<name>/: training checkpoints, for resuming
TRAIN_RECORD = "frugal-train.json"  # inside an adapter or model: how it was trained
TRAIN_SUMMARY = "train.json"  # the run's last `frugal train`
TRAIN_LOG = "train-log.jsonl"
ROUTER_DIR = "router"
ROUTER_FILE = "router.json"
EVAL_DIR = "eval"  # eval/<label>/ holds RESULTS, SUMMARY and EVAL_SETTINGS
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
EVAL_SETTINGS = "settings.json"
COMPARISON = "experts/comparison.json"
SCALING_PLOT = "plots/test-time-scaling.png"
LOSS_PLOT = "plots/training-loss.png"
CURATION_PLOT = "plots/curation.png"
EXPERTS_PLOT = "plots/experts.png"
BREAK_EVEN_PLOT = "plots/break-even.png"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"



def _current_umask() -> int:
    # os.umask can only be read by setting it; done once at import, not per write, because
    # the brief window with umask 0 would affect files other threads create meanwhile.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp and mkdtemp create owner-only files; the final file gets the mode an ordinary
# open() would have given it (or keeps the mode of the file it replaces).
_UMASK = _current_umask()


class RunFileError(ValueError):
    """A run file that cannot be read: names the file, the line and column, and the fix."""

    def __init__(self, path: Path, problem: str, fix: str, *, line: int | None = None,
                 column: int | None = None) -> None:
        self.path, self.problem, self.fix = Path(path), problem, fix
        self.line, self.column = line, column
        where = "".join([f", line {line}" if line else "", f", column {column}" if column else ""])
        super().__init__(f"{path}{where}: {problem}. Fix: {fix}")


def read_json(path: Path, *, default: Any, fix: str) -> Any:
    """The JSON document at `path`, or `default` when there is no file. A file that is not
    UTF-8 or not JSON (truncated, NUL-filled by a crash, edited by hand) raises RunFileError."""
    path = Path(path)
    if not path.is_file():
        return default
    text = _decode(path, path.read_bytes(), fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RunFileError(path, f"not valid JSON ({error.msg})", fix, line=error.lineno,
                           column=error.colno) from None


def read_yaml(path: Path, *, fix: str) -> Any:
    """The YAML document at `path` (None when empty); bad UTF-8 or YAML raises RunFileError
    naming the line and column the parser stopped at."""
    path = Path(path)
    text = _decode(path, path.read_bytes(), fix)
    try:
        return yaml.safe_load(text)
    except yaml.reader.ReaderError as error:  # a character YAML forbids, e.g. a NUL byte
        line = text.count("\n", 0, error.position) + 1
        column = error.position - text.rfind("\n", 0, error.position)
        char = error.character  # a code point, or the byte when decoding failed
        shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
        problem = f"character {shown} is not allowed in YAML"
        raise RunFileError(path, problem, fix, line=line, column=column) from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or "not valid YAML"
        if error.context and error.context_mark:
            problem += f" ({error.context} at line {error.context_mark.line + 1})"
        raise RunFileError(
            path, f"not valid YAML: {problem}", fix,
            line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None,
        ) from None


def _decode(path: Path, data: bytes, fix: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise RunFileError(path, f"not UTF-8 text (byte {data[error.start]:#04x})", fix,
                           line=line, column=column) from None


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique, empty temporary file next to `path` for the caller to write; when the block
    finishes it is fsynced and renamed over `path`, and when the block raises it is removed,
    so `path` keeps its old content (or stays absent)."""
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        os.chmod(staging, _final_mode(path, 0o666))
        _fsync(staging)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A unique, empty temporary directory next to `path` for the caller to fill; when the
    block finishes everything in it is fsynced and it takes the place of `path` whole (an old
    directory there is removed once the new one is in place); when the block raises it is
    removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    # No portable call swaps two directories atomically: the old one is moved aside under a
    # name unique to this write, the new one put in place, then the old one deleted.
    old = staging.with_name(staging.name + ".old")
    try:
        yield staging
        os.chmod(staging, _final_mode(path, 0o777))
        for root, _, files in os.walk(staging):
            for file in files:
                _fsync(Path(root) / file)
            _fsync(Path(root))
        if path.exists() or path.is_symlink():
            os.replace(path, old)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if (old.exists() or old.is_symlink()) and not path.exists():
            os.replace(old, path)  # the new one never arrived: put the old one back
        raise
    _fsync(path.parent)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _final_mode(path: Path, default: int) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return default & ~_UMASK


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's data to the disk."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return  # some platforms (Windows) cannot open a directory; nothing more to do
        raise
    try:
        os.fsync(handle)
    except OSError:
        # Some filesystems refuse fsync on a directory (EINVAL); the rename is then as
        # durable as that filesystem makes it. A file that cannot be fsynced is an error.
        if not path.is_dir():
            raise
    finally:
        os.close(handle)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically: a reader sees the old file or the new one."""
    with atomic_path(path) as staging:
        staging.write_text(text, encoding="utf-8")


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write JSON lines atomically; a record that fails to serialise leaves the old file."""
    with atomic_path(path) as staging, staging.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_json(path: Path, data: Any, *, indent: int | None = 2) -> None:
    """Write a JSON document atomically (`indent=None` for one compact line, e.g. big arrays).
    It is serialised before the disk is touched, so a value that cannot be leaves no trace."""
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


class StageRecord(BaseModel):
    """One stage's line in `stages.json`: the key of the settings it ran with, and how it
    ended (running: it has not ended, or its process died)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    status: Literal["running", "done", "partial"]
    missing: str | None = None  # what a partial stage lacks
    seconds: float | None = None
    finished: str | None = None  # local time, ISO 8601


# -- the records stored in a run directory ----------------------------------------------------
# Data files (traces, the training set, evaluation rows) keep fields a user added by hand
# (extra="allow"): reading and writing them back never drops anything.


class TraceTokens(BaseModel):
    """What one teacher answer cost in tokens."""

    input: int = 0
    output: int = 0
    cached_input: int = 0


class Trace(BaseModel):
    """One question's graded teacher answer (a line of TRACES)."""

    model_config = ConfigDict(extra="allow")

    id: str
    domain: str | None = None
    thinking: str = ""
    answer: str = ""
    extracted: str | None = None
    correct: bool = False
    teacher: str | None = None
    model: str | None = None
    tokens: TraceTokens = TraceTokens()
    samples: int | None = None  # with several samples (the self teacher): how many
    pass_rate: float | None = None  # and the share of them that were correct
    # Where a model teacher's reply had its thinking (frugal.teachers.thinking): field, tags,
    # content, none or hidden; None for teachers that write the two apart.
    thinking_from: str | None = None


class SelectedItem(BaseModel):
    """One training example chosen by curation (a line of SELECTED)."""

    model_config = ConfigDict(extra="allow")

    id: str
    question: str
    answer: str = ""
    domain: str | None = None
    thinking: str
    trace_answer: str = ""
    trace_tokens: int | None = None
    teacher: str | None = None
    source: str | None = None


class EvalRow(BaseModel):
    """One generation of an evaluation (a line of eval/<label>/RESULTS)."""

    model_config = ConfigDict(extra="allow")

    id: str
    budget: str  # the sweep point's key
    sample: int
    max_thinking_tokens: int = 0
    min_thinking_tokens: int = 0
    num_waits: int = 0
    domain: str | None = None
    prompt: str = ""
    thinking: str = ""
    answer: str = ""
    reference: str = ""
    extracted: str | None = None
    correct: bool = False
    thinking_tokens: int = 0
    answer_tokens: int = 0
    waits: int = 0
    forced_max: bool = False
    finish_reason: str | None = None
    expert: str | None = None  # the adapter the router picked, when routing


class Score(BaseModel):
    """Accuracy of a group of generations, with its Wilson 95% interval."""

    n: int
    correct: int
    accuracy: float
    ci95: list[float]


class EvalPoint(BaseModel):
    """One point of an evaluation sweep: a thinking budget and a number of Waits."""

    model_config = ConfigDict(extra="allow")  # maj@k and pass@k with samples

    budget: str
    max_thinking_tokens: int
    num_waits: int
    questions: int
    generations: int
    correct: int
    accuracy: float
    ci95: list[float]
    mean_thinking_tokens: float
    mean_answer_tokens: float
    by_domain: dict[str, Score] = {}


class EvalSummary(BaseModel):
    """One evaluated model on one benchmark (eval/<label>/SUMMARY)."""

    model_config = ConfigDict(extra="allow")

    label: str
    model: str
    adapters: dict[str, str] = {}
    benchmark: str
    questions: int
    samples: int = 1
    temperature: float = 0.0
    points: list[EvalPoint] = []
    control: float | None = None
    scaling_per_1k_tokens: float | None = None
    performance: float | None = None
    contamination: dict[str, Any] = {}

    def best(self) -> EvalPoint | None:
        """The most accurate point of the sweep."""
        return max(self.points, key=lambda p: p.accuracy) if self.points else None


class LedgerEntry(BaseModel):
    """One cost in LEDGER: which stage, what kind, dollars and machine time; each stage adds
    the figures behind its cost (calls, tokens, prices) as further fields."""

    model_config = ConfigDict(extra="allow")

    stage: str
    kind: str = "compute"
    time: str | None = None  # local time, ISO 8601, stamped when appended
    dollars: float = 0.0
    compute_seconds: float = 0.0
    machine_price_per_hour: float | None = None
    tokens: int | None = None  # generated tokens, where the stage generated
    teacher_dollars: float = 0.0  # what a teacher billed (distill)
    dollars_per_million_tokens: float | None = None  # serving's measured price


class Ledger(BaseModel):
    """Every cost of a run (LEDGER) and their sum."""

    model_config = ConfigDict(extra="forbid")

    entries: list[LedgerEntry] = []
    total_dollars: float = 0.0


def read_summary(path: Path) -> EvalSummary:
    """An evaluation's summary; one that is not (damaged, edited) is a RunFileError."""
    fix = f"delete {Path(path).parent} and evaluate again"
    data = read_json(path, default=None, fix=fix)
    try:
        return EvalSummary.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RunFileError(path, f"not an evaluation summary ({where}: {first['msg']})",
                           fix) from None


def read_records(path: Path, model: type[RecordT], *, fix: str) -> list[RecordT]:
    """Every line of a JSONL run file as `model`; a line that is not one is a RunFileError
    naming the file, the line and the field, never skipped."""
    path = Path(path)
    text = _decode(path, path.read_bytes(), fix)
    records = []
    # Only "\n" ends a line: JSON escapes it inside strings, but not U+2028 and the other
    # breaks str.splitlines() knows, which teacher text may hold.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            records.append(model.model_validate_json(line))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            problem = f"not a {model.__name__} ({where + ': ' if where else ''}{first['msg']})"
            raise RunFileError(path, problem, fix, line=number) from None
    return records


def record_json(record: BaseModel) -> dict[str, Any]:
    """A record as its file stores it: the fields it was made or read with (an optional
    field never given, such as a trace's pass rate without samples, is not written)."""
    return record.model_dump(mode="json", exclude_unset=True)


def write_records(path: Path, records: Iterable[BaseModel]) -> None:
    """Write records as JSON lines, atomically."""
    write_jsonl(path, (record_json(r) for r in records))


def read_selected(run_dir: Path) -> list[SelectedItem]:
    """The training set curation chose."""
    path = Path(run_dir) / SELECTED
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Fix: run `frugal curate --run {run_dir}` first."
        )
    fix = f"correct that line, or run `frugal curate --run {run_dir}` again"
    return read_records(path, SelectedItem, fix=fix)


STAGES_FIX = (f"correct {STAGES_FILE} by hand, or delete it: `frugal run` then runs every stage "
              "again (paid teacher calls come from the teacher cache, so none is paid twice)")


def read_stages(run_dir: Path) -> dict[str, StageRecord]:
    """Which stages finished, with which settings; a corrupt file is an error, not a fresh
    start, so a damaged run is never silently recomputed."""
    path = Path(run_dir) / STAGES_FILE
    data = read_json(path, default={}, fix=STAGES_FIX)
    if not isinstance(data, dict):
        raise RunFileError(path, "not a stage record (an object of one object per stage)",
                           STAGES_FIX)
    try:
        return {name: StageRecord.model_validate(record) for name, record in data.items()}
    except ValidationError as error:
        raise RunFileError(path, f"not a stage record (an object of one object per stage: "
                           f"{error.errors()[0]['msg']})", STAGES_FIX) from None


def write_stages(run_dir: Path, stages: dict[str, StageRecord]) -> None:
    write_json(Path(run_dir) / STAGES_FILE,
               {name: record.model_dump(exclude_none=True) for name, record in stages.items()})
