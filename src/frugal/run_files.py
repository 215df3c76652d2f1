"""File names inside a run directory (DESIGN.md section 2), in one place."""

POOL = "pool.jsonl"
TRACES = "traces.jsonl"
TEACHER_CACHE = "teacher-cache.sqlite"
LEDGER = "ledger.json"
SELECTED = "selected.jsonl"
SELECTION = "selection.json"
