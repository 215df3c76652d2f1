"""`frugal pool`: build or load the question pool, `pool.jsonl`, of a run directory.

Sources: the built-in task families (offline default; each question keeps the generator's
parameters so the program teacher can rebuild its worked solution), GSM8K (the local copy in
$FRUGAL_DATA_DIR, or ../shared/data beside the checkout, else `openai/gsm8k` from the hub; its
human solution is kept as a possible trace), or any JSONL/Parquet/CSV file or hub dataset
through `frugal.questions.read_questions`.
Ids are stable hashes of the question text.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from frugal.events import Events, QuietEvents
from frugal.questions import GSM8K_FIELDS, Question, read_questions
from frugal.run_files import POOL, write_jsonl
from frugal.run_lock import locks_run_dir
from frugal.settings.pool import PoolConfig

DATA_DIR_ENV = "FRUGAL_DATA_DIR"  # a directory holding gsm8k/train.jsonl
_CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when run from its src/


def local_data_dir() -> Path | None:
    """Where local copies of datasets are: $FRUGAL_DATA_DIR, else `../shared/data` beside this
    repository when frugal runs from its checkout; None for an installed package without it."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    if (_CHECKOUT / "src" / "frugal").is_dir():
        return _CHECKOUT.parent / "shared" / "data"
    return None


def local_gsm8k() -> Path | None:
    """The local GSM8K train file, when there is one (else GSM8K comes from the hub)."""
    directory = local_data_dir()
    path = directory / "gsm8k" / "train.jsonl" if directory else None
    return path if path is not None and path.is_file() else None

# Share of the local GSM8K file kept out of every pool for evaluation (`frugal eval -b gsm8k`):
# 1 question in 16, picked by its id hash, so the split survives re-reading and re-ordering.
GSM8K_DEV_BUCKETS = 16


def in_gsm8k_dev_split(question: Question) -> bool:
    """Whether a question of the local GSM8K file belongs to the held-out dev split."""
    return int(question.id, 16) % GSM8K_DEV_BUCKETS == 0


@dataclass
class PoolResult:
    path: Path
    questions: list[Question]

    @property
    def domains(self) -> Counter[str]:
        return Counter(q.domain or "(none)" for q in self.questions)


@locks_run_dir
def run(config: PoolConfig, run_dir: Path, events: Events | None = None) -> PoolResult:
    """Build the pool (`pool.jsonl`) the later stages draw from."""
    questions = load_pool_questions(config)
    if config.limit is not None:
        questions = questions[: config.limit]
    path = Path(run_dir) / POOL
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a reader never sees a half-written pool. Same lines as write_questions.
    write_jsonl(path, (q.model_dump(mode="json") for q in questions))
    (events or QuietEvents()).note(f"pool: {len(questions)} questions in {path}")
    return PoolResult(path=path, questions=questions)


def load_pool_questions(config: PoolConfig) -> list[Question]:
    if config.source == "tasks":
        from frugal.tasks import generate_problems, problem_to_question

        problems = generate_problems(
            config.families, config.per_family, config.difficulties, seed=config.seed
        )
        return [problem_to_question(p) for p in problems]
    if config.source == "gsm8k":
        local = local_gsm8k()
        if local is not None and config.split == "train":  # the local copy is train only
            questions = read_questions(local, GSM8K_FIELDS, source_name="gsm8k")
            return [q for q in questions if not in_gsm8k_dev_split(q)]
        return read_questions(
            "openai/gsm8k", GSM8K_FIELDS, config_name="main", split=config.split,
            source_name="gsm8k",
        )
    fields = config.fields
    if config.answer_format:
        fields = fields.model_copy(update={"answer_format": config.answer_format})
    return read_questions(
        config.source, fields, split=config.split, config_name=config.config_name
    )


def read_pool(run_dir: Path) -> list[Question]:
    """The questions of a run's pool; a clear error when `frugal pool` has not run."""
    from frugal.questions import QUESTION_FILE_FIELDS

    path = Path(run_dir) / POOL
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Fix: run `frugal pool --run {run_dir}` first."
        )
    return read_questions(path, QUESTION_FILE_FIELDS)
