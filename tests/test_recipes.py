"""Recipes: validation with named errors, overrides, inheritance, and the built-in recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from frugal.cli import app
from frugal.recipes import RecipeError, builtin_recipes, dump_recipe, load_recipe


def test_builtin_recipes_validate() -> None:
    names = set(builtin_recipes())
    assert {"quickstart", "gsm8k", "s1", "experts"} <= names
    for name in names:
        assert load_recipe(name).name == name


def test_s1_recipe_is_the_papers_setup() -> None:
    s1 = load_recipe("s1")
    assert s1.model == "Qwen/Qwen2.5-32B-Instruct" and s1.train.model == s1.model
    assert s1.train.method == "full" and s1.train.epochs == 5
    assert s1.train.learning_rate == 1e-5 and s1.train.max_seq_length == 32768
    assert s1.curate.target == 1000 and s1.distill.teacher == "openai"


def test_quickstart_is_offline_and_small() -> None:
    quick = load_recipe("quickstart")
    assert quick.model == "smollm2-135m-instruct"
    assert quick.pool.source == "tasks" and quick.distill.teacher == "program"
    assert quick.train.method == "full" and len(quick.eval.max_thinking_tokens) >= 2
    # s1's Wait curve at the best budget, and the base model compared where it is cheapest.
    assert quick.eval.num_waits[0] == 0 and len(quick.eval.num_waits) >= 2
    assert quick.eval.waits_at == "best-budget"
    assert quick.eval.base and quick.eval.base_at == "largest-budget"
    assert quick.reference_api.prices.output_per_million > 0


def test_overrides_and_inheritance(tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("name: mine\nmodel: some/model\nmachine_price_per_hour: 2.0\n"
                      "train: {epochs: 1}\ncurate: {tokenizer: other/tok}\n")
    loaded = load_recipe(str(recipe), ["train.epochs=4", "eval.max_thinking_tokens=[8, 16]",
                                       "train.lora.r=4"])
    assert loaded.train.epochs == 4 and loaded.train.lora.r == 4
    assert loaded.eval.max_thinking_tokens == [8, 16]
    assert loaded.train.model == "some/model" and loaded.train.machine_price_per_hour == 2.0
    assert loaded.curate.tokenizer == "other/tok"  # a stage keeps what it set itself
    again = tmp_path / "again.yaml"
    again.write_text(dump_recipe(loaded))
    assert load_recipe(str(again)) == loaded


def test_unknown_keys_and_bad_values_name_the_field(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: bad\ntrain: {epochz: 2, learning_rate: fast}\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: .*train.epochz: Extra inputs") as error:
        load_recipe(str(recipe))
    assert "train.learning_rate: Input should be a valid number" in str(error.value)
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe("quickstart", ["train.epochs"])
    with pytest.raises(RecipeError, match="train.nope"):
        load_recipe("quickstart", ["train.nope=1"])
    with pytest.raises(RecipeError, match="neither a file nor a built-in"):
        load_recipe("no-such-recipe")


def test_experts_recipe_inherits_the_model_and_price() -> None:
    recipe = load_recipe("experts")
    assert recipe.experts is not None
    assert recipe.experts.train.model == recipe.model
    assert recipe.experts.machine_price_per_hour == recipe.machine_price_per_hour


def test_a_recipe_that_is_not_yaml_names_the_line_and_the_fix(tmp_path: Path) -> None:
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: broken\ntrain:\n  epochs: 2\n\tlearning_rate: 1e-4\n")  # a tab
    with pytest.raises(RecipeError) as raised:
        load_recipe(str(recipe))
    assert str(raised.value).startswith(f"{recipe}, line 4, column 1: not valid YAML")
    assert "Fix: correct the YAML at that place" in str(raised.value)
    recipe.write_bytes(b"name: caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(RecipeError, match=r"broken.yaml, line 1, column 10: not UTF-8 text"):
        load_recipe(str(recipe))
    shown = CliRunner().invoke(app, ["run", str(recipe)])
    assert shown.exit_code == 1 and isinstance(shown.exception, SystemExit)  # no traceback
    assert f"error: {recipe}, line 1, column 10: not UTF-8 text" in shown.output


def test_the_recipe_engine_reaches_every_generating_stage() -> None:
    endpoint = "engine={base_url: 'http://127.0.0.1:8000/v1', model: smollm2-135m-instruct}"
    recipe = load_recipe("quickstart", [endpoint])
    assert recipe.eval.engine is not None and recipe.distill.local.engine is not None
    assert recipe.eval.engine.base_url == "http://127.0.0.1:8000/v1"
    own = load_recipe("quickstart", [endpoint, "eval.engine=null"])
    assert own.eval.engine is None  # a stage keeps what it set itself
    assert load_recipe("quickstart").eval.engine is None  # the local engine by default
    with pytest.raises(RecipeError, match="engine"):
        load_recipe("quickstart", ["engine={base_url: 'http://h/v1', model: m, port: 1}"])
