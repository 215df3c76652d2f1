"""`teacher-cache.sqlite`: every teacher response, written before it is used.

The cache is what makes distillation safe to interrupt: a response is committed (SQLite in WAL
mode, synchronous=FULL) the moment it arrives, before grading or any file derived from it, so
Ctrl-C or SIGKILL loses nothing already paid for, and a re-run finds it and pays nothing twice.
Keys hash the teacher kind, its model, the exact messages and the sampling parameters: change any
of them and the question is asked again; change none and it never is.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    model TEXT NOT NULL,
    question_id TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    cost REAL NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(teacher: str, model: str, messages: Any, params: dict[str, Any]) -> str:
    """A stable key: the same request always hashes the same, in any process."""
    canonical = json.dumps(
        {"teacher": teacher, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class TeacherCache:
    """A key -> response store on disk; every `put` is durable when it returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each INSERT is its own transaction, committed before put() returns.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def has(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` are cached (one query per chunk, not per key)."""
        keys = list(keys)
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key FROM responses WHERE key IN ({marks})"
            found.update(row[0] for row in self._db.execute(query, chunk))
        return found

    def put(
        self,
        key: str,
        *,
        teacher: str,
        model: str,
        question_id: str,
        request: Any,
        response: dict[str, Any],
        cost: float,
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                teacher,
                model,
                question_id,
                json.dumps(request, ensure_ascii=False),
                json.dumps(response, ensure_ascii=False),
                cost,
                time.time(),
            ),
        )

    def total_cost(self) -> float:
        """Dollars of every response ever stored here."""
        return float(self._db.execute("SELECT COALESCE(SUM(cost), 0) FROM responses").fetchone()[0])

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
