"""`frugal train`: supervised fine-tuning on `selected.jsonl` in the reasoning format.

TRL's SFTTrainer does the training (LoRA through PEFT by default, full fine-tuning or QLoRA as
options); this module only prepares what it needs and records what happened:
- examples are prompt/completion pairs from the tokenizer's `ReasoningFormat`, so TRL puts the
  loss on the completion only (thinking, answer and end of turn);
- examples longer than `max_seq_length` are left out and reported, never truncated (s1 found
  that cut traces teach a model to ramble);
- batches are padding-free by default (a batch's examples in one row, position ids restarting
  at each) or BFD-packed; transformers turns those position ids into a block-diagonal mask, so
  examples sharing a row never see each other, and no compute goes to padding;
- checkpoints every `save_steps`; `resume` continues from the last complete one, after
  checking that it was made with the same data and result-changing settings (a fingerprint
  beside the checkpoints) and skipping one a kill left half-written;
- progress, `train-log.jsonl`, TensorBoard when installed, and the compute cost in the ledger.
The same command runs data-parallel under `torchrun` or `accelerate launch`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugal.events import Events, QuietEvents
from frugal.ledger import LedgerEntry, append_entry, compute_cost
from frugal.names import check_name, check_run_dir, path_inside
from frugal.reasoning_format import ReasoningFormat
from frugal.run_files import (
    ADAPTERS,
    CHECKPOINTS,
    MODELS,
    SELECTED,
    TRAIN_LOG,
    TRAIN_RECORD,
    TRAIN_SUMMARY,
    SelectedItem,
    read_selected,
    write_json,
)
from frugal.run_lock import locks_run_dir_on_main_rank
from frugal.settings.train import TrainConfig


@dataclass
class TrainResult:
    output_path: Path
    steps: int
    final_loss: float | None
    tokens: int
    seconds: float
    examples: int
    too_long: int
    rank: int = 0


def build_examples(
    records: list[SelectedItem], fmt: ReasoningFormat, system: str | None
) -> list[dict[str, str]]:
    """Prompt/completion pairs: the prompt opens the thinking, the completion closes the turn."""
    examples = []
    for record in records:
        example = fmt.format_example(record.question, record.thinking, record.trace_answer,
                                     system)
        examples.append({"prompt": example.prompt, "completion": example.completion})
    return examples


def split_by_length(
    examples: list[dict[str, str]], tokenizer: Any, max_length: int
) -> tuple[list[dict[str, str]], list[int]]:
    """Examples that fit, and the token lengths of those that do not (reported, not cut)."""
    texts = [e["prompt"] + e["completion"] for e in examples]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    fits = [e for e, n in zip(examples, lengths, strict=True) if n <= max_length]
    return fits, [n for n in lengths if n > max_length]


def micro_batch(config: TrainConfig, *, cuda: bool) -> int:
    """Examples per forward pass. TRL flattens a padding-free batch into one row whose attention
    GPUs compute per example (flash-attention varlen) but CPUs compute in full, quadratic in
    the row; on a CPU one example per pass is both padding-free and free of that waste."""
    if config.packing == "bfd":
        return config.batch_size  # rows are already packed to max_seq_length
    micro = config.micro_batch_size or (config.batch_size if cuda else 1)
    if config.batch_size % micro:
        raise ValueError(
            f"batch_size {config.batch_size} is not a multiple of micro_batch_size {micro}. "
            "Fix: choose a micro batch size that divides the batch size."
        )
    return micro


def sft_config(config: TrainConfig, output_dir: Path, fmt: ReasoningFormat) -> Any:
    import torch
    from trl import SFTConfig

    report_to = ["tensorboard"] if _tensorboard_installed() else "none"
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    micro = micro_batch(config, cuda=torch.cuda.is_available())
    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=config.gradient_accumulation_steps * config.batch_size // micro,
        # Examples longer than max_seq_length were already left out, so without BFD packing
        # (which needs the row length) there is nothing left to truncate.
        max_length=config.max_seq_length if config.packing == "bfd" else None,
        packing=config.packing == "bfd",
        packing_strategy="bfd",
        # One example per pass has no padding to remove; padding-free would only add a warning.
        padding_free=config.packing != "none" and (micro > 1 or config.packing == "bfd"),
        completion_only_loss=True,
        eos_token=fmt.end_of_turn,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a share of all steps
        lr_scheduler_type=config.lr_scheduler,
        weight_decay=config.weight_decay,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        activation_checkpointing=config.gradient_checkpointing,
        include_num_input_tokens_seen=True,
        report_to=report_to,
        disable_tqdm=True,  # the rich progress callback replaces tqdm
        # Data parallel on CPUs (torchrun / accelerate launch) needs gloo; GPUs pick NCCL.
        ddp_backend="gloo" if distributed and not torch.cuda.is_available() else None,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


@dataclass
class Prepared:
    """A ready SFTTrainer and what went into it."""

    trainer: Any
    loaded: Any
    format: ReasoningFormat
    examples: int
    too_long: list[int]
    output_dir: Path


def prepare(
    config: TrainConfig, run_dir: Path, records: list[dict[str, Any]] | None = None, *,
    main: bool | None = None, events: Events | None = None,
) -> Prepared:
    """Load the model, build the examples and the SFTTrainer, without training. `main` (default:
    no `records` given) marks the run's own training rather than one expert of many; `events`
    (the main process's) get the notes and the training bar."""
    import datasets
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    from frugal.training.callbacks import (
        EventsProgressCallback,
        JsonlLogCallback,
        StopIfFinished,
    )
    from frugal.training.setup import (
        load_for_training,
        peft_config,
        score_supervised_positions_only,
    )

    datasets.disable_progress_bars()  # the training bar is the one that matters
    run_dir = check_run_dir(run_dir)
    rank = int(os.environ.get("RANK", "0"))
    main = records is None if main is None else main
    records = read_selected(run_dir) if records is None else records
    if not records:
        raise ValueError(
            f"{run_dir / SELECTED} is empty: curation kept nothing (selection.json says why). "
            "Fix: curate with looser settings or a larger pool."
        )
    loaded = load_for_training(config)
    fmt = ReasoningFormat.for_tokenizer(loaded.tokenizer)
    examples = build_examples(records, fmt, config.system)
    fits, too_long = split_by_length(examples, loaded.tokenizer, config.max_seq_length)
    if too_long and events is not None:
        events.note(
            f"left out {len(too_long)} of {len(examples)} examples longer than max_seq_length="
            f"{config.max_seq_length} (longest {max(too_long)} tokens); they are never truncated",
            warning=True,
        )
    if not fits:
        raise ValueError(
            f"no example fits in max_seq_length={config.max_seq_length}. Fix: raise "
            "--max-seq-length or curate with a lower --max-trace-tokens."
        )
    # model_copy (the experts' per-adapter settings) skips validation: check the name here too.
    output_dir = path_inside(run_dir, CHECKPOINTS, check_name(config.name, "train.name"))
    score_supervised_positions_only()
    trainer = SFTTrainer(
        model=loaded.model,
        args=sft_config(config, output_dir, fmt),
        train_dataset=Dataset.from_list(fits),
        processing_class=loaded.tokenizer,
        peft_config=peft_config(config),
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(
        JsonlLogCallback(path_inside(run_dir, log_name(config, main)), rank=rank)
    )
    trainer.add_callback(StopIfFinished())
    if events is not None:
        trainer.add_callback(EventsProgressCallback(events))
    return Prepared(trainer, loaded, fmt, len(fits), too_long, output_dir)


def log_name(config: TrainConfig, main: bool = True) -> str:
    """`train-log.jsonl` for the run's own training, `train-log-<name>.jsonl` for each expert,
    so adapters trained in one run directory keep their curves apart."""
    return TRAIN_LOG if main else f"train-log-{config.name}.jsonl"


@locks_run_dir_on_main_rank
def run(
    config: TrainConfig,
    run_dir: Path,
    events: Events | None = None,
    *,
    resume: bool = False,
    records: list[SelectedItem] | None = None,
) -> TrainResult:
    """Train on `selected.jsonl` (or on `records`, the experts' per-domain subsets).

    With `resume`, training continues from the last complete checkpoint, and only when that
    checkpoint was made with the same data and result-changing settings (else an error says
    what differs); without, the earlier checkpoints of this name are removed first."""
    from frugal.training import checkpoints
    from frugal.training.callbacks import AlreadyFinished

    run_dir = check_run_dir(run_dir)
    rank = int(os.environ.get("RANK", "0"))
    events = events or QuietEvents()
    said = events if rank == 0 else None  # one process speaks for all
    # First: a name that escapes the run directory must stop everything, even a missing file.
    output_dir = path_inside(run_dir, CHECKPOINTS, check_name(config.name, "train.name"))
    main = records is None  # the run's own training, not one expert of many
    records = read_selected(run_dir) if main else records
    expected = checkpoints.fingerprint(config, records)
    source = SELECTED if main else f"the examples of {config.name}"
    # Checked before the model loads, so a refused resume costs nothing.
    checkpoint = checkpoints.resume_point(
        run_dir, output_dir, expected, source=source, events=said
    ) if resume else None
    prepared = prepare(config, run_dir, records, main=main, events=said)
    trainer = prepared.trainer
    if rank == 0:
        if resume:
            checkpoints.record(output_dir, expected)
        else:
            checkpoints.start_fresh(run_dir, output_dir, expected, events)
    started = time.perf_counter()
    try:
        outcome = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        training_loss = outcome.training_loss
    except AlreadyFinished:  # the checkpoint holds the whole training: its weights are loaded
        training_loss = None
        if said is not None:
            said.note(f"{checkpoint.name if checkpoint else 'the checkpoint'} already holds "
                      f"all {trainer.state.global_step} steps: saving its weights, training "
                      "nothing")
    seconds = time.perf_counter() - started
    kind = ADAPTERS if config.method != "full" else MODELS
    output_path = path_inside(run_dir, kind, config.name)
    if trainer.is_world_process_zero():
        trainer.save_model(str(output_path))
        prepared.loaded.tokenizer.save_pretrained(str(output_path))
        _record(config, run_dir, prepared.loaded.path, output_path, trainer, training_loss,
                seconds,
                prepared.examples, prepared.too_long, main=main)
    _write_rank_state(run_dir, rank, trainer, saved=trainer.is_world_process_zero())
    return TrainResult(
        output_path=output_path,
        steps=trainer.state.global_step,
        final_loss=_final_loss(trainer),
        tokens=int(trainer.state.num_input_tokens_seen),
        seconds=seconds,
        examples=prepared.examples,
        too_long=len(prepared.too_long),
        rank=rank,
    )


def _final_loss(trainer: Any) -> float | None:
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return losses[-1] if losses else None


def _record(
    config: TrainConfig,
    run_dir: Path,
    base_path: str,
    output_path: Path,
    trainer: Any,
    training_loss: float | None,
    seconds: float,
    examples: int,
    too_long: list[int],
    *,
    main: bool = True,
) -> None:
    summary = {
        "base_model": config.model,
        "base_model_path": base_path,
        "output": str(output_path),
        "config": config.model_dump(),
        "steps": trainer.state.global_step,
        "examples": examples,
        "left_out_too_long": len(too_long),
        "tokens": int(trainer.state.num_input_tokens_seen),
        "train_loss": training_loss,
        "final_loss": _final_loss(trainer),
        "seconds": round(seconds, 3),
    }
    write_json(output_path / TRAIN_RECORD, summary)
    if main:  # the run's own training, not one expert of many
        write_json(run_dir / TRAIN_SUMMARY, summary)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dollars = compute_cost(seconds * world, config.machine_price_per_hour)
    append_entry(run_dir, LedgerEntry.model_validate({
        "stage": "train", "kind": "compute", "name": config.name, "method": config.method,
        "processes": world, "compute_seconds": round(seconds * world, 3),
        "machine_price_per_hour": config.machine_price_per_hour,
        "tokens": summary["tokens"], "dollars": round(dollars, 6),
    }))


def _write_rank_state(run_dir: Path, rank: int, trainer: Any, *, saved: bool) -> None:
    """Per-process evidence for data-parallel runs: each rank's steps, and who saved."""
    path = run_dir / "train-ranks" / f"rank-{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {
        "rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "steps": trainer.state.global_step,
        "tokens": int(trainer.state.num_input_tokens_seen), "saved": saved,
    })


def _tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None
