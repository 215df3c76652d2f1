"""The command line derives its options from the stages' models: every field has a way to be
set, every option agrees with its field (type, help, default), and the result reaches the
model. A field added to a model without a way to set it, or an option that drifts from its
field, fails here."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from frugal.cli import app
from frugal.cli_options import REGISTRY, settings_of

COMMANDS = sorted(REGISTRY)


def click_command(name: str) -> Any:
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def test_every_stage_command_derives_its_options() -> None:
    assert {"pool", "distill", "curate", "train", "eval", "serve", "experts",
            "generate"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_field_has_an_option_that_agrees_with_it(command: str) -> None:
    options = REGISTRY[command]
    params = {opt: param for param in click_command(command).params
              for opt in getattr(param, "opts", [])}
    assert "--set" in params  # whatever has no option of its own is still reachable
    spelled = {s.path: s for s in options.settings()}
    for setting in settings_of(options.model):
        if setting.path not in spelled:
            assert any(setting.path == s or setting.path.startswith(f"{s}.")
                       for s in options.skip), setting.path
            continue
        param = params[spelled[setting.path].option]
        assert param.default is None  # the model's default applies, never a second one
        assert setting.info.description, f"{setting.path}: a field needs a description"
        assert param.help.startswith(setting.info.description), setting.path
        default = setting.default
        if default is not None and not isinstance(default, (list, dict)) and not hasattr(
                default, "model_fields"):
            assert param.show_default == str(default), setting.path


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_fast_and_true(command: str) -> None:
    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    for setting in REGISTRY[command].settings()[:5]:
        assert setting.option in shown.output


def test_frugal_help_does_not_import_torch() -> None:
    probe = ("import sys; from typer.testing import CliRunner; from frugal.cli import app; "
             "r = CliRunner().invoke(app, ['serve', '--help']); "
             "print(r.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0", "False", "False"]


def captured(command: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The config a command builds from `args`, caught before the stage runs."""
    from frugal import cli, cli_options

    seen: dict[str, Any] = {}
    real = cli_options.build

    def catch(model: Any, settings: dict[str, Any], name: str) -> Any:
        seen["config"] = real(model, settings, name)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "build", catch)
    result = CliRunner().invoke(app, [command, *args])
    assert "config" in seen, result.output
    return seen["config"]


def test_options_and_set_reach_the_model(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Any) -> None:
    config = captured("train", ["--run", str(tmp_path), "--lora-r", "8", "--no-resume",
                                "--target-modules", "q_proj,v_proj", "--set",
                                "warmup_ratio=0.2", "--gradient-checkpointing"], monkeypatch)
    assert config.lora.r == 8 and config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.warmup_ratio == 0.2 and config.gradient_checkpointing is True
    assert config.epochs == 3.0  # untouched: the model's default
    serve = captured("serve", ["some-model", "--max-waiting", "3", "--adapter", "a=/x",
                               "--allowed-host", "a.example,b.example"], monkeypatch)
    assert serve.max_waiting == 3 and serve.adapters == {"a": "/x"}
    assert serve.allowed_hosts == ["a.example", "b.example"]


def test_a_count_or_a_count_per_family(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    one = captured("pool", ["--run", str(tmp_path), "--per-family", "7"], monkeypatch)
    assert one.per_family == 7
    each = captured("pool", ["--run", str(tmp_path), "--per-family", "{dates: 2, sequences: 5}"],
                    monkeypatch)
    assert each.per_family == {"dates": 2, "sequences": 5}


def test_a_bad_value_names_the_option(tmp_path: Any) -> None:
    shown = CliRunner().invoke(app, ["train", "--run", str(tmp_path), "--lora-r", "0"])
    assert shown.exit_code != 0 and "--lora-r" in shown.output
    shown = CliRunner().invoke(app, ["train", "--run", str(tmp_path), "--set", "nope=1"])
    assert shown.exit_code != 0 and "nope" in shown.output
