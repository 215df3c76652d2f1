"""Benchmark LoRA SFT on SmolLM2-135M-Instruct with GSM8K traces: `frugal train` against plain TRL.

The same fine-tuning, one epoch over the first N GSM8K training rows (question, the human worked
solution as thinking, "Final Answer: N" as the answer), in the reasoning format of
`frugal.reasoning_format` so both arms train on the identical prompt/completion text:
  (a) frugal: `frugal.train.run` with its default batching (`TrainConfig.packing`; today
      padding-free: each batch's examples in one row with restarting position ids, so the same
      steps as padded batches but no padding; `--packing bfd` tries best-fit-decreasing rows);
  (b) plain TRL: a minimal `SFTTrainer` + `peft.LoraConfig` script with `SFTConfig`'s defaults
      (no packing: each batch padded to its longest example) except the shared settings below.
Shared: LoRA r=16, alpha=32, dropout 0.05 on all linear layers; learning rate 2e-4, linear
schedule (TRL's default) with no warm-up; batch size 8 sequences or packed rows per step; one
epoch; seed 0; max length 1024; no gradient checkpointing (TRL defaults it on, frugal off);
float32 on the CPU (bf16 on a bf16 GPU, as frugal does); completion-only loss; logging every step.

Each arm runs in its own Python process (this script re-invokes itself with `--arm`), so peak
RSS (`ru_maxrss` of that process, model load included) belongs to one arm only. Measured per arm:
- real tokens: non-padding tokens trained on. (a) `TrainResult.tokens` (every position is a
  real token when batches are padding-free or BFD-packed; with `--packing none` the dataset's
  token count is used), checked against the dataset's token count; (b) the Trainer's count
  with `include_num_input_tokens_seen="non_padding"` (sum of the attention mask);
- train seconds: wall-clock of `trainer.train()` only (no model load, no dataset building);
- tokens/s = real tokens / train seconds; final loss (last logged) and the mean of the last 5
  logged losses (the loss check uses the mean, which is less noisy);
- MFU: achieved FLOP/s / measured matmul FLOP/s (best of several n x n matmuls, 2 n^3 FLOPs
  each, same device and dtype as training). Achieved FLOP/s = FLOPs per token x real tokens /
  train seconds, with FLOPs per token = 4 x N_frozen + 6 x N_lora: the frozen weights need a
  forward pass (2N) and the gradient with respect to their inputs (2N) but no weight gradient;
  the LoRA weights need all three (6N). N_frozen counts the (tied) embedding once, as the LM
  head's matmul; attention scores (about 5% more for these ~200-token examples) are left out.
  Padding positions that (b) computes on are not counted as useful FLOPs.

Targets: tokens/s a/b >= 1.5, peak RSS a/b <= 1.0, mean last-5 loss within 5% of each other.
Run: `.venv/bin/python bench/train.py` (flags: --help). On a small CPU machine keep other
processes idle: PyTorch's threads slow down badly when a core is busy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
ANSWER_PREFIX = "Final Answer:"
ARMS = {"frugal": "(a) frugal train", "trl": "(b) plain TRL"}
TARGET_SPEEDUP = 1.5
TARGET_MEMORY = 1.0
TARGET_LOSS = 0.05
LAST_LOSSES = 5
# The shared hyper-parameters (besides --batch-size, --max-length, --epochs).
LORA_R, LORA_ALPHA, LORA_DROPOUT, LORA_TARGETS = 16, 32, 0.05, "all-linear"
LEARNING_RATE = 2e-4
SCHEDULER = "linear"  # TRL's default; frugal's own default is cosine with 5% warm-up
WARMUP = 0.0
SEED = 0
LOGGING_STEPS = 1


# --------------------------------------------------------------------------- data


def write_selected(run_dir: Path, data: Path, examples: int) -> int:
    """`selected.jsonl` with GSM8K's human solutions as traces; returns the number of records."""
    from frugal.questions import GSM8K_FIELDS, read_questions
    from frugal.run_files import SELECTED

    questions = read_questions(data, GSM8K_FIELDS, limit=examples)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / SELECTED).open("w", encoding="utf-8") as handle:
        for q in questions:
            record = {
                "id": q.id,
                "question": q.question,
                "answer": q.answer,
                "thinking": q.solution or "",
                "trace_answer": f"{ANSWER_PREFIX} {q.answer}",
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(questions)


def dataset_tokens(examples: list[dict[str, str]], tokenizer: Any) -> list[int]:
    """Token length of each prompt + completion, tokenized whole as TRL does."""
    texts = [e["prompt"] + e["completion"] for e in examples]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def logged_losses(log_history: list[dict[str, Any]]) -> list[float]:
    return [float(e["loss"]) for e in log_history if "loss" in e]


def peak_rss_mb() -> float:
    """This process's peak resident set size (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def gpu_peak_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def use_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# --------------------------------------------------------------------------- the two arms


def arm_frugal(args: argparse.Namespace) -> dict[str, Any]:
    from frugal.events import RichEvents
    from frugal.models import load_tokenizer
    from frugal.reasoning_format import ReasoningFormat
    from frugal.run_files import read_selected
    from frugal.settings.train import LoraSettings, TrainConfig
    from frugal.train import TRAIN_LOG, build_examples
    from frugal.train import run as train_run

    config = TrainConfig(
        model=MODEL,
        method="lora",
        lora=LoraSettings(r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT,
                          target_modules=LORA_TARGETS),
        learning_rate=LEARNING_RATE,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seq_length=args.max_length,
        **({"packing": args.packing} if args.packing else {}),  # else frugal's default
        warmup_ratio=WARMUP,
        lr_scheduler=SCHEDULER,
        save_steps=10**6,  # no checkpoint inside the timed loop
        logging_steps=LOGGING_STEPS,
        seed=SEED,
    )
    result = train_run(config, args.run_dir, events=RichEvents())  # the training bar
    rss = peak_rss_mb()
    log = args.run_dir / TRAIN_LOG
    history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    tokenizer = load_tokenizer(MODEL)
    fmt = ReasoningFormat.for_tokenizer(tokenizer)
    lengths = dataset_tokens(build_examples(read_selected(args.run_dir), fmt, None), tokenizer)
    real = round(sum(n for n in lengths if n <= args.max_length) * args.epochs)
    padded = config.packing in ("none", False)  # else every position computed is a real token
    return {
        "packing": str(config.packing),
        "examples": result.examples,
        "steps": result.steps,
        "tokens": real if padded else result.tokens,
        "positions": result.tokens,
        "dataset_tokens": real,
        "seconds": result.seconds,
        "losses": logged_losses(history),
        "peak_rss_mb": rss,
        "gpu_peak_mb": gpu_peak_mb(),
    }


def arm_trl(args: argparse.Namespace) -> dict[str, Any]:
    """The plain TRL script: SFTConfig defaults, no packing, only the shared settings changed."""
    import datasets
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from frugal.models import load_model
    from frugal.reasoning_format import ReasoningFormat
    from frugal.train import build_examples, read_selected

    datasets.disable_progress_bars()
    loaded = load_model(MODEL)  # a fresh float32 instance, loaded the way frugal loads it
    fmt = ReasoningFormat.for_tokenizer(loaded.tokenizer)
    examples = build_examples(read_selected(args.run_dir), fmt, None)
    lengths = dataset_tokens(examples, loaded.tokenizer)
    sft_args = SFTConfig(
        output_dir=str(args.run_dir / "trl-output"),
        learning_rate=LEARNING_RATE,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        packing=False,
        lr_scheduler_type=SCHEDULER,
        warmup_steps=WARMUP,
        seed=SEED,
        data_seed=SEED,
        activation_checkpointing=False,
        bf16=use_bf16(),
        logging_steps=LOGGING_STEPS,
        save_strategy="no",
        include_num_input_tokens_seen="non_padding",
        report_to="none",
    )
    lora = LoraConfig(
        r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
        target_modules=LORA_TARGETS, task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=loaded.model,
        args=sft_args,
        train_dataset=Dataset.from_list(examples),
        processing_class=loaded.tokenizer,
        peft_config=lora,
    )
    # Count the positions the model computes on, padding included, next to the real tokens.
    collate = trainer.data_collator
    positions = [0]

    def counting_collator(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(features)
        positions[0] += int(batch["input_ids"].numel())
        return batch

    trainer.data_collator = counting_collator
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {
        "packing": "none",
        "examples": len(examples),
        "steps": trainer.state.global_step,
        "tokens": int(trainer.state.num_input_tokens_seen),
        "positions": positions[0],
        "dataset_tokens": round(sum(min(n, args.max_length) for n in lengths) * args.epochs),
        "seconds": seconds,
        "losses": logged_losses(trainer.state.log_history),
        "peak_rss_mb": peak_rss_mb(),
        "gpu_peak_mb": gpu_peak_mb(),
    }


def run_arm(args: argparse.Namespace) -> None:
    """Child process: train one arm and write its result file."""
    result = arm_frugal(args) if args.arm == "frugal" else arm_trl(args)
    result["arm"] = args.arm
    args.result_file.write_text(json.dumps(result, indent=2) + "\n")


def launch(arm: str, run_dir: Path, args: argparse.Namespace, console: Any) -> dict[str, Any]:
    """Run one arm in a fresh Python process and read its result."""
    result_file = run_dir / "bench-result.json"
    log_file = run_dir / "bench-output.log"
    command = [
        sys.executable, str(Path(__file__).resolve()), "--arm", arm,
        "--run-dir", str(run_dir), "--result-file", str(result_file),
        "--examples", str(args.examples), "--batch-size", str(args.batch_size),
        "--max-length", str(args.max_length), "--epochs", str(args.epochs),
        *(["--packing", args.packing] if args.packing else []),
    ]
    console.print(f"running {ARMS[arm]} in its own process ...")
    started = time.perf_counter()
    if args.verbose:
        completed = subprocess.run(command, check=False)
    else:
        with log_file.open("w") as log:
            completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0 or not result_file.is_file():
        if not args.verbose:
            tail = log_file.read_text(errors="replace").splitlines()[-40:]
            console.print("\n".join(tail), markup=False, highlight=False)
        raise SystemExit(f"{ARMS[arm]} failed with exit code {completed.returncode}")
    console.print(f"  done in {time.perf_counter() - started:.0f} s (load and save included)")
    return json.loads(result_file.read_text())


# --------------------------------------------------------------------------- FLOPs


def flops_per_token() -> tuple[float, int, int]:
    """Training FLOPs per token of LoRA SFT: 4 x frozen + 6 x LoRA parameters (see docstring)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from frugal.models import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(MODEL))
    lora = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                      target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    with torch.device("meta"), warnings.catch_warnings():  # shapes only, no memory
        warnings.simplefilter("ignore", FutureWarning)
        model = AutoModelForCausalLM.from_config(config)
        embedding = model.get_input_embeddings().weight
        output = model.get_output_embeddings()
        tied = output is not None and output.weight is embedding
        model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if not tied:
        frozen -= embedding.numel()  # an untied input embedding is a lookup, not a matmul
    return 4.0 * frozen + 6.0 * trainable, frozen, trainable


def matmul_flops(repeats: int = 5) -> tuple[float, str]:
    """Best measured n x n matmul FLOP/s on the training device and dtype."""
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if use_bf16() else torch.float32
    n = 8192 if cuda else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call is a warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    label = f"{n}x{n} {str(dtype).removeprefix('torch.')} matmul on {device}"
    return 2.0 * n**3 / best, label


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "[green]PASS[/green]" if ok else "[red]FAIL[/red]"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=256, help="first N GSM8K rows")
    parser.add_argument("--batch-size", type=int, default=8, help="per-device batch size")
    parser.add_argument("--max-length", type=int, default=1024, help="longest sequence")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument(
        "--packing", help="frugal's TrainConfig.packing for arm (a) (default: frugal's default)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K JSON Lines file")
    parser.add_argument("--verbose", action="store_true", help="show the arms' own output")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.arm:
        run_arm(args)
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    load = os.getloadavg()[0]
    if load > 0.5:
        console.print(
            f"[yellow]warning: load average {load:.2f} before the run; other processes on "
            "these cores can slow PyTorch's threads many times over and skew every ratio[/yellow]"
        )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="frugal-bench-train-") as tmp:
        for arm in ARMS:
            run_dir = Path(tmp) / arm
            count = write_selected(run_dir, args.data, args.examples)
            results[arm] = launch(arm, run_dir, args, console)
    console.print(
        f"{MODEL}, {count} GSM8K traces, batch {args.batch_size}, max length {args.max_length}, "
        f"{args.epochs:g} epoch(s), LoRA r={LORA_R} alpha={LORA_ALPHA} on {LORA_TARGETS}, "
        f"lr {LEARNING_RATE} {SCHEDULER}, seed {SEED}"
    )
    per_token, frozen, trainable = flops_per_token()
    peak, matmul_label = matmul_flops()

    a, b = results["frugal"], results["trl"]
    for r in (a, b):
        r["tokens_per_s"] = ratio(r["tokens"], r["seconds"])
        r["mean_loss"] = statistics.fmean(r["losses"][-LAST_LOSSES:]) if r["losses"] else None
        r["final_loss"] = r["losses"][-1] if r["losses"] else None
        r["flops_per_s"] = per_token * r["tokens_per_s"]
        r["mfu"] = ratio(r["flops_per_s"], peak)
        r["padding"] = 1 - ratio(r["tokens"], r["positions"]) if r["positions"] else 0.0

    # One row per metric, one column per arm: fits a narrow terminal.
    table = Table(title="LoRA SFT, one process per arm (wall-clock of trainer.train() only)")
    for column in ("", ARMS["frugal"], ARMS["trl"], "a/b"):
        table.add_column(column, justify="left" if not column else "right")
    rows: list[tuple[str, str, str]] = [
        ("examples", "examples", "{:,}"),
        ("batching", "packing", "{}"),
        ("steps", "steps", "{:,}"),
        ("real tokens", "tokens", "{:,}"),
        ("positions computed", "positions", "{:,}"),
        ("padding share", "padding", "{:.0%}"),
        ("train seconds", "seconds", "{:.1f}"),
        ("real tokens/s", "tokens_per_s", "{:,.1f}"),
        ("peak RSS MB", "peak_rss_mb", "{:,.0f}"),
        ("final loss", "final_loss", "{:.4f}"),
        (f"mean last-{LAST_LOSSES} loss", "mean_loss", "{:.4f}"),
        ("achieved GFLOP/s", "flops_per_s", "{:,.1f}"),
        ("MFU", "mfu", "{:.1%}"),
    ]
    if a.get("gpu_peak_mb") is not None:
        rows.insert(8, ("peak GPU MB", "gpu_peak_mb", "{:,.0f}"))
    for label, key, form in rows:
        va, vb = a.get(key), b.get(key)
        scale = 1e9 if key == "flops_per_s" else 1

        def show(v: Any, form: str = form, scale: float = scale) -> str:
            if v is None:
                return "-"
            return form.format(v / scale if scale != 1 else v)

        numbers = isinstance(va, int | float) and isinstance(vb, int | float)
        both = numbers and bool(vb) and key not in ("padding", "packing")
        table.add_row(label, show(va), show(vb), f"{va / vb:.2f}" if both else "")
    console.print(table)

    for arm, r in results.items():
        if r["tokens"] != r["dataset_tokens"]:
            console.print(
                f"[yellow]{ARMS[arm]}: counted {r['tokens']:,} real tokens but the dataset has "
                f"{r['dataset_tokens']:,} per {args.epochs:g} epoch(s)[/yellow]"
            )
    speedup = ratio(a["tokens_per_s"], b["tokens_per_s"])
    memory = ratio(a["peak_rss_mb"], b["peak_rss_mb"])
    console.print(
        f"tokens/s a/b = {speedup:.2f}  (target >= {TARGET_SPEEDUP})  "
        f"{verdict(speedup >= TARGET_SPEEDUP)}"
    )
    console.print(
        f"peak RSS a/b = {memory:.2f}  (target <= {TARGET_MEMORY})  "
        f"{verdict(memory <= TARGET_MEMORY)}"
    )
    if a["mean_loss"] is None or b["mean_loss"] is None:
        console.print("loss: [red]FAIL[/red] (an arm logged no loss)")
    else:
        gap = abs(a["mean_loss"] - b["mean_loss"]) / b["mean_loss"]
        console.print(
            f"mean last-{LAST_LOSSES} loss a = {a['mean_loss']:.4f}, b = {b['mean_loss']:.4f}: "
            f"differ by {gap:.1%}  (target within {TARGET_LOSS:.0%})  "
            f"{verdict(gap <= TARGET_LOSS)}"
        )
    console.print(
        f"MFU: {per_token / 1e9:.2f} GFLOP per token (4 x {frozen / 1e6:.1f}M frozen + "
        f"6 x {trainable / 1e6:.2f}M LoRA parameters) against {peak / 1e12:.3f} TFLOP/s "
        f"measured ({matmul_label}, best of 5)"
    )
    if args.json:
        args.json.write_text(json.dumps({
            "arms": results, "flops_per_token": per_token, "matmul_flops_per_s": peak,
            "matmul": matmul_label, "speedup": speedup, "memory_ratio": memory,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
