"""Names never escape the run directory: the name rule, `path_inside`, `remove_inside`, and every
command that takes a name, run through the real CLI with sentinels inside and beside the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError
from rich.console import Console
from typer.testing import CliRunner

from frugal.cli import app
from frugal.names import (
    OutsideRunError,
    SafeName,
    UnsafeNameError,
    check_name,
    check_run_dir,
    is_safe_name,
    path_inside,
    remove_inside,
)

runner = CliRunner()
SAFE = ["default", "expert-algebra", "run_2", "v1.5", "A", "7b"]
UNSAFE = ["..", ".", "", "a/b", "/abs/path", "-x", ".hidden", "a b", "a\n", "a\\b", "é"]


@pytest.mark.parametrize("name", SAFE)
def test_safe_names_pass(name: str) -> None:
    assert is_safe_name(name) and check_name(name) == name


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused_with_the_rule_and_a_fix(name: str) -> None:
    assert not is_safe_name(name)
    with pytest.raises(UnsafeNameError, match=r"not allowed: a name may use letters.*Fix:"):
        check_name(name, "train.name")


def test_safe_name_type_in_a_pydantic_model_names_the_field() -> None:
    class Config(BaseModel):
        name: SafeName = "default"

    assert Config(name="ok-1").name == "ok-1"
    with pytest.raises(ValidationError) as caught:
        Config(name="../x")
    error = caught.value.errors()[0]
    assert error["loc"] == ("name",) and "not allowed" in error["msg"]


@pytest.mark.parametrize("run_dir", [".", "..", "runs/..", "/", ""])
def test_run_directory_must_be_a_directory_of_its_own(run_dir: str) -> None:
    with pytest.raises(UnsafeNameError, match="run directory"):
        check_run_dir(run_dir)
    assert check_run_dir("runs/my-run") == Path("runs/my-run")


def test_path_inside_refuses_what_resolves_outside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert path_inside(run, "checkpoints", "default") == run / "checkpoints" / "default"
    for parts in [("..",), ("checkpoints", "..", ".."), (str(tmp_path / "elsewhere"),),
                  ("adapters", "..")]:
        with pytest.raises(OutsideRunError, match="outside the run directory"):
            path_inside(run, *parts)
    (run / "link").symlink_to(tmp_path)  # a link that leads out is followed, and refused
    with pytest.raises(OutsideRunError):
        path_inside(run, "link", "x")


def test_remove_inside_deletes_only_inside_and_never_follows_a_link(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "default").mkdir(parents=True)
    (run / "checkpoints" / "default" / "w.bin").write_text("w")
    (run / "sentinel.txt").write_text("inside")
    beside = tmp_path / "beside"
    beside.mkdir()
    (beside / "keep.txt").write_text("keep")
    for path in [run, run / "checkpoints" / "..", tmp_path / "beside", run / ".." / "beside"]:
        with pytest.raises(OutsideRunError, match="refusing to delete"):
            remove_inside(run, path)
    assert remove_inside(run, run / "checkpoints" / "default")
    assert not (run / "checkpoints" / "default").exists()
    assert not remove_inside(run, run / "checkpoints" / "missing")  # nothing there: no error
    (run / "eval").symlink_to(beside, target_is_directory=True)
    assert remove_inside(run, run / "eval")
    assert not (run / "eval").exists() and (beside / "keep.txt").read_text() == "keep"
    assert (run / "sentinel.txt").is_file()


def test_pipeline_cleanup_refuses_a_name_that_bypassed_validation(tmp_path: Path) -> None:
    """The issue's scenario: train.name '..' used to make the next run delete the whole run
    directory. Even a name smuggled past validation cannot do that now."""
    from frugal import pipeline
    from frugal.recipes import load_recipe
    from frugal.train import TrainConfig

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "teacher-cache.sqlite").write_text("paid")
    recipe = load_recipe("quickstart")
    recipe = recipe.model_copy(update={"train": TrainConfig.model_construct(
        **{**recipe.train.model_dump(), "name": ".."})})
    # Training checks its name itself before any clean-up.
    with pytest.raises((UnsafeNameError, OutsideRunError)):
        pipeline._train(recipe, run, Console(quiet=True), False)
    assert (run / "teacher-cache.sqlite").read_text() == "paid"


# -- every command that takes a name, through the CLI -------------------------------------------


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run directory with a sentinel inside and one beside it. The working directory is the
    run directory, so '.' and '..' name real places that must survive."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "sentinel.txt").write_text("inside")
    (tmp_path / "sentinel.txt").write_text("beside")
    monkeypatch.chdir(run)
    return run


def _outside(run: Path) -> set[str]:
    """Everything beside the run directory (within its parent), as relative paths."""
    root = run.parent
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != run]
        found.update(str(Path(folder, n).relative_to(root)) for n in dirs + files)
    return found


def _bad_names(run: Path) -> list[str]:
    # An absolute path inside the test's folder, so that creating it would be seen.
    return ["..", str(run.parent / "abs" / "path"), "a/b", ""]


def _assert_refused(run: Path, before: set[str], args: list[str], *, expect: str,
                    code: int | None = None) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0, (args, result.output)
    if code is not None:
        assert result.exit_code == code, (args, result.output)
    assert expect in result.output, (args, result.output)
    assert "Traceback" not in result.output
    assert (run / "sentinel.txt").read_text() == "inside"
    assert (run.parent / "sentinel.txt").read_text() == "beside"
    assert _outside(run) == before, args


def test_train_name(place: Path) -> None:
    before = _outside(place)
    for name in _bad_names(place):
        _assert_refused(place, before, ["train", "--run", str(place), "--name", name],
                        expect="not allowed", code=1)


@pytest.mark.parametrize("command", [["train"], ["eval"], ["experts"], ["pool"], ["curate"],
                                     ["run", "quickstart"]])
def test_run_directory_of_every_command(place: Path, command: list[str]) -> None:
    before = _outside(place)
    for run_dir in ["..", ".", str(place / ".."), str(place / "adapters" / "..")]:
        _assert_refused(place, before, [*command, "--run", run_dir], expect="run directory",
                        code=2)


def test_eval_label_and_adapter(place: Path) -> None:
    before = _outside(place)
    for name in _bad_names(place):
        _assert_refused(place, before, ["eval", "--run", str(place), "--label", name],
                        expect="label", code=1)
        _assert_refused(place, before, ["eval", "--run", str(place), "--adapter", name],
                        expect="adapter", code=1)


def test_eval_label_taken_from_an_unsafe_adapter_directory_name(place: Path) -> None:
    adapter = place.parent / "my adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "x"}))
    before = _outside(place)
    _assert_refused(place, before, ["eval", "--run", str(place), "--adapter", str(adapter)],
                    expect="--label", code=1)


def test_run_set_train_name_and_recipe_name(place: Path) -> None:
    before = _outside(place)
    for name in _bad_names(place):
        _assert_refused(place, before, ["run", "quickstart", "--run", str(place), "--set",
                                        f"train.name={name}"], expect="train.name", code=1)
        _assert_refused(place, before, ["run", "quickstart", "--set", f"name={name}"],
                        expect="name", code=1)
    assert not (place / "runs").exists()  # the default runs/<name> was never made


def _selected(run: Path, domains: list[str]) -> None:
    rows = [{"id": f"{d}-{i}", "question": f"q {d} {i}", "answer": "1", "thinking": "t",
             "trace_answer": "1", "domain": d} for d in domains for i in range(4)]
    (run / "selected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_experts_domains_are_mapped_to_safe_names_or_refused(place: Path) -> None:
    from frugal.experts.naming import expert_names

    # Hostile domains map to plain names that cannot leave adapters/...
    assert expert_names(["../x", "/abs/path", "a/b", "Number Theory"]) == {
        "../x": "expert-x", "/abs/path": "expert-abs-path", "a/b": "expert-a-b",
        "Number Theory": "expert-number-theory",
    }
    before = _outside(place)
    # ...and two domains that would share one adapter, or a domain with nothing to name an
    # adapter after, stop the command before anything is trained.
    _selected(place, ["../x", "x"])
    _assert_refused(place, before, ["experts", "--run", str(place)],
                    expect="would share one adapter", code=1)
    _selected(place, ["..", "y"])
    _assert_refused(place, before, ["experts", "--run", str(place)],
                    expect="no letters or digits", code=1)
    assert not (place / "adapters").exists() and not (place / "checkpoints").exists()


def test_export_adapter(place: Path) -> None:
    before = _outside(place)
    out = place.parent / "merged"
    for name in _bad_names(place):
        _assert_refused(place, before, ["export", str(place), "--adapter", name,
                                        "--merged", str(out)], expect="adapter", code=1)
    _assert_refused(place, before, ["export", "..", "--merged", str(out)],
                    expect="run directory", code=2)
    assert not out.exists()


def test_serve_adapter_names_and_run_directory(place: Path) -> None:
    before = _outside(place)
    for name in _bad_names(place):
        expect = "NAME=VALUE" if name == "" else "not allowed"
        _assert_refused(place, before, ["serve", str(place), "--adapter", f"{name}={place}"],
                        expect=expect, code=1)
    _assert_refused(place, before, ["serve", ".."], expect="run directory", code=1)
