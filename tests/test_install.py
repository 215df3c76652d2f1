"""frugal as an installed package, away from this checkout: the wheel carries the built-in
recipes, the local GSM8K copy is found through $FRUGAL_DATA_DIR, and `frugal run quickstart`
runs from another directory (on the tiny model, shrunk by `--set`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed into its own directory (its dependencies
    are this environment's, as `pip install .` would find them)."""
    tmp = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("frugal-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(tmp / "site"), str(wheel)], check=True, capture_output=True)
    return tmp / "site"


def run_installed(site: Path, cwd: Path, *args: str, data: Path | None = None
                  ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FRUGAL_DATA_DIR"}
    env |= {"PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    if data is not None:
        env["FRUGAL_DATA_DIR"] = str(data)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_carries_the_recipes_and_finds_data_by_setting(installed: Path,
                                                                 tmp_path: Path) -> None:
    probe = ("import json, frugal, frugal.recipes as r, frugal.pool as p; "
             "print(json.dumps({'file': frugal.__file__, 'recipes': sorted(r.builtin_recipes()), "
             "'gsm8k': str(p.local_gsm8k())}))")
    alone = json.loads(run_installed(installed, tmp_path, "-c", probe).stdout)
    assert alone["file"].startswith(str(installed))  # not this checkout's src/
    assert {"quickstart", "gsm8k", "experts", "s1"} <= set(alone["recipes"])
    assert alone["gsm8k"] == "None"  # outside the checkout, no data unless told where
    if (SHARED_DATA / "gsm8k" / "train.jsonl").is_file():
        told = json.loads(run_installed(installed, tmp_path, "-c", probe,
                                        data=SHARED_DATA).stdout)
        assert told["gsm8k"] == str(SHARED_DATA / "gsm8k" / "train.jsonl")


def test_frugal_run_quickstart_from_another_directory(installed: Path, tmp_path: Path,
                                                      tiny_dir: Path) -> None:
    shrink = [f"model={tiny_dir}", "pool.per_family=2", "curate.target=8",
              "train.max_steps=2", "train.batch_size=2", "train.save_steps=1",
              "eval.benchmark.per_family=1", "eval.max_thinking_tokens=[4]",
              "eval.max_answer_tokens=4"]
    sets = [part for item in shrink for part in ("--set", item)]
    done = run_installed(installed, tmp_path, "-m", "frugal.cli", "run", "quickstart",
                         "--run", "here", *sets)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "here" / "report.md").is_file()
    assert (tmp_path / "here" / "eval" / "default" / "summary.json").is_file()
