"""File names inside a run directory (DESIGN.md section 2), and how stages write them."""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

POOL = "pool.jsonl"
TRACES = "traces.jsonl"
TEACHER_CACHE = "teacher-cache.sqlite"
LEDGER = "ledger.json"
SELECTED = "selected.jsonl"
SELECTION = "selection.json"


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write JSON lines to a temporary sibling, then rename: readers never see half a file."""
    staging = path.with_suffix(path.suffix + ".tmp")
    with staging.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    staging.replace(path)


def write_json(path: Path, data: Any) -> None:
    """Write a JSON document the same way: a crash leaves the old file or the new, never half."""
    staging = path.with_suffix(path.suffix + ".tmp")
    staging.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    staging.replace(path)
