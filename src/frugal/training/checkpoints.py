"""Which checkpoint `frugal train --resume` may continue from.

A checkpoint is only worth resuming when it holds what the Trainer needs and belongs to the same
training. So:
- when training starts, a fingerprint of the training data and of every setting that changes
  the result is written beside the checkpoints (`frugal-fingerprint.json`); a resume compares
  it and refuses, naming what differs, rather than silently mixing two trainings;
- a `checkpoint-N` directory without a readable `trainer_state.json` or without weights is a
  save that a kill interrupted (the Trainer writes `trainer_state.json` last); it is skipped and
  removed, and training resumes from the last complete one;
- a fresh start removes the earlier checkpoints of the same name, so that a later resume
  cannot pick up a checkpoint of the training this one replaces.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from frugal.events import Events
from frugal.names import remove_inside
from frugal.run_files import SelectedItem, write_json

FINGERPRINT = "frugal-fingerprint.json"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Weights as the Trainer saves them: PEFT adapters, whole models (sharded or not), and the
# per-process directories of FSDP and DeepSpeed.
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                 "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_WEIGHT_DIRS = ("pytorch_model_fsdp_*", "global_step*")
# Settings that change how training runs or is recorded, never the weights it produces (the
# micro batch only splits a batch: gradient accumulation gives the same loss).
_NOT_RESULT_CHANGING = {"name", "machine_price_per_hour", "save_steps", "save_total_limit",
                        "logging_steps", "gradient_checkpointing", "micro_batch_size"}
_TRAINING_FIELDS = ("question", "thinking", "trace_answer")


class CheckpointMismatchError(ValueError):
    """The checkpoints were made with other data or settings than this training."""


def fingerprint(config: Any, records: list[SelectedItem]) -> dict[str, Any]:
    """What decides the trained weights: the training examples in order (only the fields that
    become examples, so curation metadata can change freely), the settings that change the
    result, and the number of processes (which multiplies the effective batch)."""
    data = [[getattr(record, key) for key in _TRAINING_FIELDS] for record in records]
    digest = hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()
    settings = {key: value for key, value in config.model_dump(mode="json").items()
                if key not in _NOT_RESULT_CHANGING}
    return {"data_sha256": digest, "examples": len(records), "settings": settings,
            "processes": int(os.environ.get("WORLD_SIZE", "1"))}


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Every `checkpoint-N` directory, by step."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in output_dir.iterdir()
             if (m := _CHECKPOINT.match(path.name)) and path.is_dir()]
    return sorted(found)


def missing_part(checkpoint: Path) -> str | None:
    """What a checkpoint lacks to be resumed from, or None when it is complete."""
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
        int(state["global_step"])
    except FileNotFoundError:
        return TRAINER_STATE
    except (OSError, ValueError, KeyError, TypeError):
        return f"a readable {TRAINER_STATE}"
    weights = any((checkpoint / name).is_file() and (checkpoint / name).stat().st_size > 0
                  for name in _WEIGHT_FILES)
    if not weights and not any(any(checkpoint.glob(p)) for p in _WEIGHT_DIRS):
        return "model weights"
    return None


def resume_point(run_dir: Path, output_dir: Path, expected: dict[str, Any], *, source: str,
                 events: Events | None) -> Path | None:
    """The last complete checkpoint, after checking it belongs to this training; incomplete
    ones are removed (by the process that has `events`, rank 0, so data-parallel ranks do not
    race). None when there is nothing to resume from."""
    found = checkpoints(output_dir)
    problems = {path: missing_part(path) for _, path in found}
    complete = [path for _, path in found if problems[path] is None]
    chosen = complete[-1] if complete else None
    if chosen is not None:
        check_fingerprint(output_dir, expected, chosen, source=source, events=events)
    for path, missing in problems.items():
        if missing is not None and events is not None:
            events.note(f"{path.name} is incomplete (no {missing}: its save was interrupted); "
                        "skipping it", warning=True)
            remove_inside(run_dir, path)
    if events is not None:
        if chosen is None:
            events.note(f"no complete checkpoint in {output_dir} yet: starting from the "
                        "beginning")
        else:
            events.note(f"resuming from {chosen.name}")
    return chosen


def check_fingerprint(output_dir: Path, expected: dict[str, Any], checkpoint: Path, *,
                      source: str, events: Events | None) -> None:
    """Refuse to resume `checkpoint` when it was made with other data or settings."""
    path = output_dir / FINGERPRINT
    fix = ("Fix: run without --resume to start this training over (its checkpoints are "
           "replaced), train under a new name (--name, or train.name in a recipe), or resume "
           "with the original data and settings.")
    if not path.is_file():  # made before fingerprints were written: nothing to compare
        if events is not None:
            events.note(f"{output_dir} has no {FINGERPRINT}, so it cannot be checked that "
                        f"{checkpoint.name} was made with this data and these settings",
                        warning=True)
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
        differences = _differences(before, expected, source)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointMismatchError(
            f"{path} cannot be read, so it is unknown what {checkpoint} was trained on. {fix}"
        ) from None
    if differences:
        raise CheckpointMismatchError(
            f"{checkpoint} was made with other data or settings than this training: "
            f"{'; '.join(differences)}. Resuming would mix two trainings. {fix}"
        )


def _differences(before: dict[str, Any], now: dict[str, Any], source: str) -> list[str]:
    found = []
    if before["data_sha256"] != now["data_sha256"]:
        found.append(f"the training data ({source}: {before['examples']} examples then, "
                     f"{now['examples']} now, contents differ)")
    old, new = before["settings"], now["settings"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            found.append(f"train.{key} ({old.get(key)!r} then, {new.get(key)!r} now)")
    if before.get("processes", 1) != now["processes"]:
        found.append(f"the number of processes ({before.get('processes', 1)} then, "
                     f"{now['processes']} now)")
    return found


def start_fresh(run_dir: Path, output_dir: Path, expected: dict[str, Any],
                events: Events) -> None:
    """Before a training that does not resume: drop the checkpoints of the one it replaces
    and record what this one is made of."""
    stale = checkpoints(output_dir)
    for _, path in stale:
        remove_inside(run_dir, path)
    if stale:
        events.note(f"removed {len(stale)} checkpoint(s) of an earlier training in "
                    f"{output_dir} (this one starts over; pass --resume to continue instead)")
    record(output_dir, expected)


def record(output_dir: Path, expected: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / FINGERPRINT, expected)
