"""Evaluation benchmarks: declarative specs that say where questions come from, how the prompt
is built, how the answer is extracted and how it is scored.

Built in: `tasks` (held-out questions of the task families: another generator seed, and any
question that is also in the run's pool left out) and `gsm8k` (a fixed dev split of the local
GSM8K file that `frugal pool --source gsm8k` never uses; `openai/gsm8k`'s test split online).
Anything else is a YAML spec file or a question file / hub dataset read with default columns.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from frugal.pool import in_gsm8k_dev_split, local_gsm8k
from frugal.questions import GSM8K_FIELDS, FieldMap, Question, read_questions
from frugal.run_files import RunFileError, read_yaml


class BenchmarkSpec(BaseModel):
    """Where the questions come from, the prompt, the answer extraction and the metric."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Label in outputs.")
    source: str = Field(
        "tasks", description="'tasks', 'gsm8k', or a question file / hub dataset name."
    )
    families: list[str] | None = Field(None, description="Task families (tasks); all when unset.")
    per_family: int = Field(50, ge=1, description="Questions per family (tasks).")
    difficulties: list[int] | None = Field(None, description="Task levels (tasks); all.")
    seed: int = Field(1, description="Generator seed (tasks); pools use 0 by default.")
    fields: FieldMap = Field(default_factory=FieldMap, description="Columns of a file.")
    split: str = Field("test", description="Split of a hub dataset.")
    config_name: str | None = None
    limit: int | None = Field(None, ge=1, description="Keep the first N questions.")
    prompt_template: str = Field("{question}", description="User turn; must use {question}.")
    answer_pattern: str | None = Field(
        None,
        description="Regular expression whose group 1 is the answer; default: the last "
        "\\boxed{}, else the 'Final Answer:' line, else the last number.",
    )
    metric: Literal["math", "exact"] = Field(
        "math", description="math: math-verify equivalence; exact: same string, case-folded."
    )

    @field_validator("prompt_template")
    @classmethod
    def _uses_question(cls, template: str) -> str:
        if "{question}" not in template:
            raise ValueError("prompt_template must contain {question}")
        return template

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                if re.compile(pattern).groups < 1:
                    raise ValueError("answer_pattern needs a group: (...) marks the answer")
            except re.error as error:
                raise ValueError(f"answer_pattern is not a regular expression: {error}") from None
        return pattern

    def prompt(self, question: Question) -> str:
        return self.prompt_template.replace("{question}", question.question)

    def extract(self, answer_text: str) -> str | None:
        if self.answer_pattern is None:
            from frugal.grading import extract_answer  # math-verify: only when scoring

            return extract_answer(answer_text)
        matches = list(re.finditer(self.answer_pattern, answer_text))
        return matches[-1].group(1).strip() if matches else None

    def score(self, answer_text: str, reference: str) -> tuple[str | None, bool]:
        """The extracted answer and whether it is right."""
        if self.answer_pattern is None and self.metric == "math":
            from frugal.grading import grade

            graded = grade(answer_text, reference)  # also handles multiple-choice letters
            return graded.extracted, graded.correct
        extracted = self.extract(answer_text)
        return extracted, same_answer(extracted, reference, self.metric)


def same_answer(answer: str | None, reference: str, metric: str = "math") -> bool:
    if answer is None:
        return False
    if metric == "exact":
        return answer.strip().casefold() == reference.strip().casefold()
    from frugal.grading import is_correct

    return is_correct(answer, reference)


BUILTIN: dict[str, BenchmarkSpec] = {
    "tasks": BenchmarkSpec(name="tasks", source="tasks"),
    "gsm8k": BenchmarkSpec(name="gsm8k", source="gsm8k", limit=200),
}


def resolve(benchmark: str | BenchmarkSpec) -> BenchmarkSpec:
    """A built-in name, a YAML spec file, or a question file / hub dataset with default columns."""
    if isinstance(benchmark, BenchmarkSpec):
        return benchmark
    if benchmark in BUILTIN:
        return BUILTIN[benchmark]
    path = Path(benchmark)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"benchmark spec {path} does not exist")
        fix = ("correct the YAML at that place (a mapping of name, source, prompt_template, ...; "
               "indent with spaces, quote values holding ': ' or '#')")
        data = read_yaml(path, fix=fix) or {}
        if not isinstance(data, dict):
            raise RunFileError(path, "a benchmark spec is a mapping of settings (name, "
                               "source, ...)", fix)
        try:
            return BenchmarkSpec.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
            )
            raise ValueError(f"{path}: {problems}") from None
    return BenchmarkSpec(name=path.stem if path.exists() else benchmark, source=benchmark)


def load_questions(spec: BenchmarkSpec, exclude_ids: set[str] | None = None) -> list[Question]:
    """The benchmark's questions, without any whose id is in `exclude_ids` (the run's pool)."""
    exclude_ids = exclude_ids or set()
    if spec.source == "tasks":
        from frugal.tasks import generate_problems, problem_to_question

        # Ask for extra problems so that dropping pool overlaps still leaves per_family each.
        problems = generate_problems(
            spec.families, spec.per_family * 2, spec.difficulties, seed=spec.seed
        )
        kept: dict[str, list[Question]] = {}
        for problem in problems:
            question = problem_to_question(problem)
            family = kept.setdefault(problem.family, [])
            if question.id not in exclude_ids and len(family) < spec.per_family:
                family.append(question)
        questions = [q for family in kept.values() for q in family]
    elif spec.source == "gsm8k":
        local = local_gsm8k()
        if local is not None:
            questions = [
                q
                for q in read_questions(local, GSM8K_FIELDS, source_name="gsm8k")
                if in_gsm8k_dev_split(q)
            ]
        else:
            questions = read_questions(
                "openai/gsm8k", GSM8K_FIELDS, config_name="main", split="test",
                source_name="gsm8k",
            )
        questions = [q for q in questions if q.id not in exclude_ids]
    else:
        questions = read_questions(
            spec.source, spec.fields, split=spec.split, config_name=spec.config_name
        )
        questions = [q for q in questions if q.id not in exclude_ids]
    return questions[: spec.limit] if spec.limit else questions
