"""Recipes: one YAML file that configures every stage of `frugal run`, validated by pydantic.

Precedence is defaults < recipe file < `--set key=value` overrides; unknown keys are errors that
name the key. The top-level `model` and `machine_price_per_hour` flow into every stage that did
not set its own. Built-in recipes ship inside the package (`frugal/builtin_recipes/`, package
data, so an installed wheel has them too) and are named without their extension
(`frugal run quickstart`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from frugal.curate import CurateConfig
from frugal.distill import DistillConfig
from frugal.endpoint_config import EngineSetting
from frugal.experts.stage import ExpertsConfig
from frugal.names import SafeName
from frugal.pool import PoolConfig
from frugal.run_files import RunFileError, read_yaml
from frugal.settings import DEFAULT_MODEL, with_section_defaults
from frugal.settings.evaluate import RunEvalConfig
from frugal.settings.reference import ReferenceApi
from frugal.train import TrainConfig

RECIPES_DIR = Path(__file__).resolve().parent / "builtin_recipes"  # shipped as package data
DEFAULT_RECIPE = "quickstart"


class RecipeError(ValueError):
    pass


class Recipe(BaseModel):
    """Every stage's settings; sections are the stages' own config models."""

    model_config = ConfigDict(extra="forbid")

    name: SafeName = Field(..., description="The run's name: runs/<name>/ by default.")
    description: str = ""
    model: str = Field(DEFAULT_MODEL, description="The base model of every stage.")
    machine_price_per_hour: float = Field(0.0, ge=0.0, description="Dollars per hour here.")
    reference_api: ReferenceApi = Field(
        default_factory=ReferenceApi,
        description="The hosted model the report and `frugal cost` weigh the specialist against.",
    )
    engine: EngineSetting = Field(
        None, description="An OpenAI-compatible completions server serving `model` (vLLM, "
        "llama.cpp's server), or vllm / llama.cpp started where needed, for every stage that "
        "generates with it: evaluation, the hf/self teachers and the experts comparison. None: "
        "frugal's local engine.",
    )
    pool: PoolConfig = Field(default_factory=PoolConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: RunEvalConfig = Field(default_factory=RunEvalConfig)
    experts: ExpertsConfig | None = Field(
        None, description="Train domain experts and compare them instead of train + eval."
    )

    @model_validator(mode="after")
    def _propagate(self) -> Recipe:
        # A stage keeps what it set itself; otherwise it inherits the recipe-wide value.
        if "model" not in self.train.model_fields_set:
            self.train.model = self.model
        if "tokenizer" not in self.curate.model_fields_set:
            self.curate.tokenizer = self.model
        if self.engine is not None:
            if "engine" not in self.eval.model_fields_set:
                self.eval.engine = self.engine
            if "engine" not in self.distill.local.model_fields_set:
                self.distill.local.engine = self.engine
            if self.experts is not None and "engine" not in self.experts.model_fields_set:
                self.experts.engine = self.engine
        stages: list[BaseModel] = [self.distill, self.train, self.eval]
        if self.experts is not None:
            if "model" not in self.experts.train.model_fields_set:
                self.experts.train.model = self.model
            stages += [self.experts, self.experts.train]
        for stage in stages:
            if "machine_price_per_hour" not in stage.model_fields_set:
                stage.machine_price_per_hour = self.machine_price_per_hour  # type: ignore
        return self


def builtin_recipes() -> dict[str, Path]:
    if not RECIPES_DIR.is_dir():
        return {}
    return {path.stem: path for path in sorted(RECIPES_DIR.glob("*.yaml"))}


def resolve_path(recipe: str | None) -> Path:
    """A built-in recipe name or a YAML file path."""
    name = recipe or DEFAULT_RECIPE
    builtin = builtin_recipes()
    if name in builtin:
        return builtin[name]
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise RecipeError(
        f"recipe {name!r} is neither a file nor a built-in recipe "
        f"({', '.join(builtin) or 'none found'})"
    )


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3); the value is read as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise RecipeError(f"--set {item!r}: the value is not valid YAML ({error})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {item!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    return data


def load_recipe(recipe: str | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe; errors name the file and the key."""
    path = resolve_path(recipe)
    try:
        data = read_yaml(path, fix="correct the YAML at that place (indent with spaces, quote "
                         "values holding ': ' or '#'), or start again from a built-in recipe "
                         f"in {RECIPES_DIR}") or {}
    except RunFileError as error:
        raise RecipeError(str(error)) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections (name, pool, train, ...)")
    data = apply_overrides(data, overrides or [])
    try:
        return Recipe.model_validate(with_section_defaults(Recipe, data))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
            for e in error.errors()
        )
        raise RecipeError(f"{path}: {problems}") from None


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (what `recipe.yaml` in the run directory holds)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
