"""Find the LoRA adapters of a run and load them onto their base model.

`frugal train` writes `adapters/<name>/` (a standard PEFT directory plus `frugal-train.json`,
which names the base model spec). Evaluation, serving and experts load adapters by name from
that table; a name is never turned into a path by string building, so a request cannot point
the loader at an arbitrary file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from frugal.models import LoadedModel, load_model
from frugal.names import RULE, is_safe_name
from frugal.run_files import ADAPTERS, TRAIN_RECORD

ADAPTER_CONFIG = "adapter_config.json"


def run_adapters(run_dir: Path) -> dict[str, Path]:
    """Every complete adapter directory of a run, by name, in name order."""
    root = Path(run_dir) / ADAPTERS
    if not root.is_dir():
        return {}
    return {
        path.name: path
        for path in sorted(root.iterdir())
        if (path / ADAPTER_CONFIG).is_file()
    }


def find_adapter(run_dir: Path | None, adapter: str) -> tuple[str, Path]:
    """An adapter's name and directory: a name in the run's `adapters/` or a directory path."""
    known = run_adapters(run_dir) if run_dir is not None else {}
    if adapter in known:
        return adapter, known[adapter]
    path = Path(adapter).expanduser()
    if (path / ADAPTER_CONFIG).is_file():
        return path.name, path
    names = ", ".join(known) or "none"
    if not is_safe_name(adapter):  # neither a directory nor a name an adapter could have
        raise FileNotFoundError(
            f"adapter {adapter!r} is not a directory with {ADAPTER_CONFIG}, and not a valid "
            f"adapter name ({RULE}) of {run_dir} (found: {names}). Fix: pass the name of an "
            "adapter of the run, or the path of an adapter directory."
        )
    raise FileNotFoundError(
        f"adapter {adapter!r} is neither an adapter of {run_dir} (found: {names}) nor a "
        f"directory with {ADAPTER_CONFIG}. Fix: run `frugal train` first or give the path."
    )


def adapter_fingerprint(adapter_dir: Path) -> str:
    """Changes whenever any file of the adapter does (a retrained adapter), so results and
    exports keyed by it are never an older adapter's."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(adapter_dir).iterdir() if p.is_file()):
        digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()[:16]


def base_model_of(adapter_dir: Path) -> str:
    """The base model spec an adapter was trained on (frugal's record, else PEFT's config)."""
    record = Path(adapter_dir) / TRAIN_RECORD
    if record.is_file():
        return json.loads(record.read_text())["base_model"]
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{adapter_dir / ADAPTER_CONFIG} names no base model. Fix: pass --model."
        )
    return base


def load_with_adapters(
    model: str, adapters: dict[str, Path], *, dtype: str = "float32"
) -> LoadedModel:
    """The base model with every adapter attached under its name (the first one active).

    With no adapters the plain base model comes back. PEFT keeps each adapter's LoRA weights
    beside the shared base, so switching adapters (`set_adapter`) costs no reload.
    """
    loaded = load_model(model, dtype=dtype)
    if not adapters:
        return loaded
    from peft import PeftModel

    names = list(adapters)
    peft_model: Any = PeftModel.from_pretrained(
        loaded.model, str(adapters[names[0]]), adapter_name=names[0]
    )
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name)
    peft_model.set_adapter(names[0])
    peft_model.eval()
    return LoadedModel(spec=loaded.spec, path=loaded.path, model=peft_model,
                       tokenizer=loaded.tokenizer)
