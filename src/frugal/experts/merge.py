"""The merged contender: every expert folded into one adapter with PEFT's add_weighted_adapter
(linear averaging, or TIES: trim small updates, elect a sign, merge what agrees)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from frugal.adapters import TRAIN_RECORD, load_with_adapters
from frugal.run_files import atomic_dir, write_json

METHODS = {"linear": {}, "ties": {"density": 0.5}}


def merge_experts(
    base_model: str, experts: dict[str, Path], out_root: Path, methods: list[str]
) -> dict[str, Path]:
    """Write `merged-<method>` adapters next to the experts; returns their directories."""
    loaded = load_with_adapters(base_model, experts)
    model = loaded.model
    names = list(experts)
    weights = [1.0 / len(names)] * len(names)
    written: dict[str, Path] = {}
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown merge {method!r}; choose from {', '.join(METHODS)}")
        name = f"merged-{method}"
        model.add_weighted_adapter(
            adapters=names, weights=weights, adapter_name=name, combination_type=method,
            **METHODS[method],
        )
        target = out_root / name
        # Staged and swapped in whole: a crash never leaves an adapter without its record
        # or with half its weights where the evaluation would load it.
        with tempfile.TemporaryDirectory() as tmp, atomic_dir(target) as staging:
            model.save_pretrained(tmp, selected_adapters=[name])
            saved = Path(tmp) / name  # PEFT puts a non-default adapter in its own folder
            shutil.copytree(saved, staging, dirs_exist_ok=True)
            write_json(staging / TRAIN_RECORD, {
                "base_model": base_model, "merged_from": names, "method": method,
            })
        written[name] = target
    return written
