"""`frugal train`: loss masking on real SmolLM2 ids, packing, resume after SIGKILL, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from frugal import train
from frugal.events import RecordedEvents
from frugal.ledger import read_ledger
from frugal.reasoning_format import ReasoningFormat
from frugal.tasks import generate_problems
from frugal.teachers.base import split_solution
from frugal.train import TrainConfig

from .conftest import tiny_model

REPO = Path(__file__).resolve().parents[1]


def make_run(run_dir: Path, per_family: int = 3, extra: list[dict[str, Any]] | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for problem in generate_problems(per_family=per_family, seed=1):
        completion = split_solution(problem.solution)
        rows.append({"id": f"{problem.family}-{problem.seed}", "question": problem.question,
                     "answer": problem.answer, "thinking": completion.thinking,
                     "trace_answer": completion.answer})
    rows += extra or []
    (run_dir / "selected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def settings(model: Path, **overrides: Any) -> TrainConfig:
    # float32 base weights: these tests compare numbers to tight tolerances.
    base = {"model": str(model), "max_steps": 4, "batch_size": 4, "save_steps": 2,
            "max_seq_length": 512, "learning_rate": 1e-3, "warmup_ratio": 0.0,
            "base_dtype": "float32"}
    return TrainConfig(**{**base, **overrides})


def first_batch(prepared: train.Prepared) -> dict[str, torch.Tensor]:
    return next(iter(prepared.trainer.get_train_dataloader()))


def test_loss_masking_on_real_smollm2_token_ids(tmp_path: Path, tiny_dir: Path) -> None:
    run_dir = make_run(tmp_path)
    prepared = train.prepare(settings(tiny_dir, packing="none", micro_batch_size=4), run_dir)
    tokenizer = prepared.loaded.tokenizer
    fmt = ReasoningFormat.for_tokenizer(tokenizer)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    batch = first_batch(prepared)
    assert (batch["attention_mask"] == 0).any(), "a padded batch, so padding is checked too"
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"],
                                 strict=True):
        ids, labels = ids[mask == 1].tolist(), labels[mask == 1].tolist()
        text = tokenizer.decode(ids)
        prompt, _, completion = text.partition(fmt.think_start)
        thinking = completion.split("<|im_start|>answer")[0]
        prompt_length = len(fmt.encode(prompt + fmt.think_start))
        supervised = [i for i, label in enumerate(labels) if label != -100]
        # The first supervised token is the first token of the thinking section...
        assert supervised[0] == prompt_length
        assert ids[supervised[0]] == fmt.encode(thinking)[0]
        # ...the system and user turns (and the opening of thinking) are not supervised...
        assert all(label == -100 for label in labels[:prompt_length])
        assert "<|im_start|>user" in tokenizer.decode(ids[:prompt_length])
        # ...and the end-of-turn token is, or the model never learns to stop.
        assert ids[-1] == end_of_turn and labels[-1] == end_of_turn
        assert supervised == list(range(prompt_length, len(ids)))
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()  # padding


@pytest.mark.parametrize("packing", ["padding-free", "bfd"])
def test_packed_examples_do_not_see_each_other(
    tmp_path: Path, tiny_dir: Path, packing: str
) -> None:
    run_dir = make_run(tmp_path)
    prepared = train.prepare(
        settings(tiny_dir, packing=packing, batch_size=2, micro_batch_size=2), run_dir
    )
    batch = first_batch(prepared)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist()
    assert len(starts) >= 2, "several examples packed in one row"
    model = prepared.trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        ends = [*starts[1:], len(positions)]
        for start, end in zip(starts, ends, strict=True):
            alone = model(input_ids=batch["input_ids"][:, start:end]).logits[0]
            # Exactly what the example gives on its own: nothing leaked from its neighbours.
            assert torch.allclose(packed[start:end], alone, atol=1e-4)
        # And the check can fail: without position ids the same row mixes the examples.
        mixed = model(input_ids=batch["input_ids"]).logits[0]
        second = slice(starts[1], ends[1])
        assert not torch.allclose(mixed[second], packed[second], atol=1e-4)


def test_micro_batches_give_the_loss_of_the_whole_batch(tmp_path: Path, tiny_dir: Path) -> None:
    """On a CPU a batch of 4 runs as 4 passes of one example (no padding, no attention across
    examples); gradient accumulation normalises by the batch's tokens, so step 1 is the same."""
    losses = {}
    for micro in (1, 4):
        run_dir = make_run(tmp_path / f"micro-{micro}")
        config = settings(tiny_dir, max_steps=1, packing="none", micro_batch_size=micro)
        prepared = train.prepare(config, run_dir)
        args = prepared.trainer.args
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
            micro, 4 // micro
        )
        prepared.trainer.train()
        losses[micro] = prepared.trainer.state.log_history[0]["loss"]
    assert losses[1] == pytest.approx(losses[4], rel=1e-4)
    assert train.micro_batch(settings(tiny_dir), cuda=False) == 1
    assert train.micro_batch(settings(tiny_dir), cuda=True) == 4


def test_lora_training_changes_the_adapter_and_saves_a_peft_directory(
    tmp_path: Path, tiny_dir: Path
) -> None:
    from peft import PeftModel

    run_dir = make_run(tmp_path)
    result = train.run(settings(tiny_dir, machine_price_per_hour=36.0), run_dir)
    assert result.steps == 4 and result.tokens > 0 and result.final_loss is not None
    weights = load_file(result.output_path / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(w.abs().sum() > 0 for w in lora_b)  # B starts at zero: it learned
    config = json.loads((result.output_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16
    model = PeftModel.from_pretrained(tiny_model(), result.output_path)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    recorded = json.loads((run_dir / "train.json").read_text())
    assert recorded["base_model"] == str(tiny_dir) and recorded["config"]["method"] == "lora"
    log = [json.loads(line) for line in (run_dir / "train-log.jsonl").read_text().splitlines()]
    steps = [e for e in log if "loss" in e]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all(e["tokens_seen"] > 0 and "learning_rate" in e for e in steps)
    entry = read_ledger(run_dir).entries[-1]
    assert entry.stage == "train" and entry.dollars == pytest.approx(
        entry.compute_seconds / 100, rel=1e-3
    )


def test_lora_base_in_bfloat16_where_it_is_fast(tmp_path: Path, tiny_dir: Path) -> None:
    from frugal.training.setup import base_dtype, fast_bf16

    auto = settings(tiny_dir, base_dtype="auto")
    assert base_dtype(auto) == ("bfloat16" if fast_bf16() else "float32")
    assert base_dtype(settings(tiny_dir, base_dtype="auto", method="full")) == "float32"
    prepared = train.prepare(settings(tiny_dir, base_dtype="bfloat16"), make_run(tmp_path))
    dtypes = {n: p.dtype for n, p in prepared.trainer.model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n)  # trained
    assert any(d == torch.bfloat16 for n, d in dtypes.items() if "lora_" not in n)  # frozen
    prepared.trainer.train()
    assert prepared.trainer.state.log_history[0]["loss"] > 0


def test_full_fine_tuning_saves_a_model(tmp_path: Path, tiny_dir: Path) -> None:
    run_dir = make_run(tmp_path)
    result = train.run(settings(tiny_dir, method="full", max_steps=2), run_dir)
    assert (result.output_path / "config.json").is_file()
    assert result.output_path.parent.name == "models"


def test_too_long_examples_are_left_out_and_counted(tmp_path: Path, tiny_dir: Path) -> None:
    long_row = {"id": "long", "question": "Count to a thousand.", "answer": "1000",
                "thinking": " ".join(str(n) for n in range(1, 1000)),
                "trace_answer": "Final Answer: 1000"}
    run_dir = make_run(tmp_path, extra=[long_row])
    prepared = train.prepare(settings(tiny_dir), run_dir)
    assert len(prepared.too_long) == 1 and prepared.too_long[0] > 512
    texts = [prepared.loaded.tokenizer.decode(r["input_ids"])
             for r in prepared.trainer.train_dataset]
    assert not any("999" in t for t in texts)  # not cut down to fit: left out entirely


def test_qlora_without_cuda_is_a_clear_error(tmp_path: Path, tiny_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="QLoRA needs a CUDA GPU"):
        train.run(settings(tiny_dir, method="qlora"), make_run(tmp_path))


def train_command(run_dir: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "frugal.cli", "train", "--run", str(run_dir),
            "--model", str(model), "--max-steps", "8", "--batch-size", "2", "--save-steps", "2",
            "--max-seq-length", "512", "--learning-rate", "1e-3", "--seed", "3", *extra]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, tiny_dir: Path) -> None:
    straight = make_run(tmp_path / "straight")
    done = subprocess.run(train_command(straight, tiny_dir), cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    killed = make_run(tmp_path / "killed")
    child = subprocess.Popen(train_command(killed, tiny_dir), cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / "checkpoints" / "default" / "checkpoint-4"
    deadline = time.monotonic() + 300
    while not (checkpoint / "trainer_state.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (killed / "adapters" / "default").exists(), "the kill must land mid-run"
    resumed = subprocess.run(train_command(killed, tiny_dir, "--resume"), cwd=REPO,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = load_file(straight / "adapters" / "default" / "adapter_model.safetensors")
    got = load_file(killed / "adapters" / "default" / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-5), name
    # The resumed process started from checkpoint-4 (or later), not from scratch: step 1 was
    # trained and logged once, by the killed process.
    log = [json.loads(line) for line in (killed / "train-log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e].count(1) == 1
    # Steps the killed process logged after its last checkpoint were trained again: the log
    # still holds each step once.
    assert [e["step"] for e in log if "loss" in e] == list(range(1, 9))


def _logged_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "train-log.jsonl").read_text().splitlines()
    return [e["step"] for e in map(json.loads, lines) if "loss" in e]


def test_resume_with_other_data_or_settings_is_refused(tmp_path: Path, tiny_dir: Path) -> None:
    from typer.testing import CliRunner

    from frugal.cli import app
    from frugal.training.checkpoints import FINGERPRINT, CheckpointMismatchError

    run_dir = make_run(tmp_path)
    first = train.run(settings(tiny_dir, max_steps=2, save_steps=2), run_dir)
    trained = load_file(first.output_path / "adapter_model.safetensors")
    output = run_dir / "checkpoints" / "default"
    assert (output / FINGERPRINT).is_file() and (output / "checkpoint-2").is_dir()
    # What only changes how training runs or is recorded may differ on resume. The checkpoint
    # holds the finished training, so nothing more is trained (the Trainer alone would train
    # a third step): the weights are those of the first run.
    resumed = train.run(settings(tiny_dir, max_steps=2, save_steps=1, logging_steps=2,
                                 machine_price_per_hour=3.0), run_dir, resume=True)
    assert resumed.steps == 2 and _logged_steps(run_dir) == [1, 2]
    again = load_file(resumed.output_path / "adapter_model.safetensors")
    assert all(torch.equal(trained[name], again[name]) for name in trained)
    with pytest.raises(CheckpointMismatchError,
                       match=r"train\.learning_rate \(0\.001 then, 0\.002 now\).*Fix: run "
                             r"without --resume.*new name"):
        train.run(settings(tiny_dir, max_steps=2, learning_rate=2e-3), run_dir, resume=True)
    rows = (run_dir / "selected.jsonl").read_text().splitlines()
    changed = {**json.loads(rows[0]), "thinking": "Something else entirely."}
    (run_dir / "selected.jsonl").write_text("\n".join([json.dumps(changed), *rows[1:]]) + "\n")
    with pytest.raises(CheckpointMismatchError,
                       match=rf"the training data \(selected.jsonl: {len(rows)} examples then, "
                             rf"{len(rows)} now, contents differ\)"):
        train.run(settings(tiny_dir, max_steps=2), run_dir, resume=True)
    state = (output / "checkpoint-2" / "trainer_state.json").read_text()
    cli = CliRunner().invoke(app, ["train", "--run", str(run_dir), "--model", str(tiny_dir),
                                   "--max-steps", "2", "--resume"])
    assert cli.exit_code == 1 and "the training data" in cli.output, cli.output
    assert (output / "checkpoint-2" / "trainer_state.json").read_text() == state  # untouched
    # The fix the error names works: without --resume the old checkpoints are replaced.
    fresh = train.run(settings(tiny_dir, max_steps=1, save_steps=1, learning_rate=2e-3), run_dir)
    assert fresh.steps == 1
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-1"]
    assert _logged_steps(run_dir) == [1]


@pytest.mark.parametrize("lost", ["trainer_state.json", "adapter_model.safetensors"])
def test_resume_skips_a_half_written_checkpoint(
    tmp_path: Path, tiny_dir: Path, lost: str
) -> None:
    run_dir = make_run(tmp_path)
    first = train.run(settings(tiny_dir), run_dir)  # 4 steps: checkpoint-2 and checkpoint-4
    expected = load_file(first.output_path / "adapter_model.safetensors")
    output = run_dir / "checkpoints" / "default"
    (output / "checkpoint-4" / lost).unlink()  # as if killed while checkpoint-4 was saved
    shutil.rmtree(first.output_path)
    kept = (output / "checkpoint-2" / "trainer_state.json").stat().st_mtime_ns
    events = RecordedEvents()
    resumed = train.run(settings(tiny_dir), run_dir, resume=True, events=events)
    said = " ".join(message for message, _ in events.notes)
    assert "checkpoint-4 is incomplete" in said and "resuming from checkpoint-2" in said
    # The training bar went through the same channel, from checkpoint-2 to the last step.
    (bar,) = events.bars
    assert bar.label == "train" and bar.total == 4 and bar.done == 4 and bar.closed
    assert resumed.steps == 4
    # Continued from checkpoint-2 (not saved again, so steps 1-2 were not retrained) to the
    # weights of the uninterrupted training.
    assert (output / "checkpoint-2" / "trainer_state.json").stat().st_mtime_ns == kept
    got = load_file(resumed.output_path / "adapter_model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-5), name
    assert _logged_steps(run_dir) == [1, 2, 3, 4]


def test_log_trim_keeps_what_happened_up_to_the_resumed_step(tmp_path: Path) -> None:
    from frugal.training.callbacks import trim_log_to_step

    log = tmp_path / "train-log.jsonl"
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 1.0},
            {"step": 3, "train_runtime": 9.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')  # torn
    trim_log_to_step(log, 2)
    assert [json.loads(line) for line in log.read_text().splitlines()] == rows[:2]
    trim_log_to_step(log, 0)  # a fresh start
    assert log.read_text() == ""


def test_interrupted_then_resumed_training_logs_each_step_once(
    tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from frugal.training import callbacks

    class Killed(Exception):
        pass

    log = callbacks.JsonlLogCallback.on_log

    def log_then_die(self: Any, args: Any, state: Any, control: Any, logs: Any = None,
                     **kwargs: Any) -> None:
        log(self, args, state, control, logs=logs, **kwargs)
        if state.global_step == 3:  # step 3 logged, its checkpoint (at 4) never written
            raise Killed

    monkeypatch.setattr(callbacks.JsonlLogCallback, "on_log", log_then_die)
    run_dir = make_run(tmp_path)
    with pytest.raises(Killed):
        train.run(settings(tiny_dir), run_dir)
    monkeypatch.undo()
    assert _logged_steps(run_dir) == [1, 2, 3]
    train.run(settings(tiny_dir), run_dir, resume=True)  # from checkpoint-2: 3 runs again
    assert _logged_steps(run_dir) == [1, 2, 3, 4]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed beside this Python")
def test_torchrun_two_cpu_processes_train_data_parallel(tmp_path: Path, tiny_dir: Path) -> None:
    run_dir = make_run(tmp_path)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    command = [torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()),
               "-m", "frugal.cli", "train", "--run-dir", str(run_dir), "--model", str(tiny_dir),
               "--max-steps", "3", "--batch-size", "2", "--max-seq-length", "512"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = {
        r["rank"]: r for r in (
            json.loads(p.read_text()) for p in (run_dir / "train-ranks").glob("rank-*.json")
        )
    }
    assert set(ranks) == {0, 1}
    assert all(r["world_size"] == 2 and r["steps"] == 3 and r["tokens"] > 0
               for r in ranks.values())
    assert ranks[0]["saved"] and not ranks[1]["saved"]
    assert (run_dir / "adapters" / "default" / "adapter_model.safetensors").is_file()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
