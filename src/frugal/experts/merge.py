"""The merged contender: every expert folded into one adapter with PEFT's add_weighted_adapter
(linear averaging, or TIES: trim small updates, elect a sign, merge what agrees)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from frugal.adapters import TRAIN_RECORD, load_with_adapters

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
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp, selected_adapters=[name])
            saved = Path(tmp) / name  # PEFT puts a non-default adapter in its own folder
            target = out_root / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(saved, target)
        (target / TRAIN_RECORD).write_text(json.dumps({
            "base_model": base_model, "merged_from": names, "method": method,
        }, indent=2))
        written[name] = target
    return written
