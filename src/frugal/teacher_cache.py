"""`teacher-cache.sqlite`: every teacher response and every dollar paid for one.

The cache is what makes distillation safe to interrupt. It holds three tables:

- `responses`: usable answers, keyed by a hash of the teacher kind, its model, the exact messages
  and the sampling parameters. A re-run finds them and pays nothing twice. Each also has a
  `base_key` that leaves the output limit (`max_tokens`) out: an answer that finished within
  its limit is the same answer under a larger one, so raising the limit to rescue the replies
  it cut short asks only those again.
- `charges`: one row per call that may cost money, written *before* the request is sent
  (status `pending`, priced at the call's worst case) and settled when it ends: `billed` at the
  reply's usage, `worst_case` when a reply came back without readable usage or when the call may
  have been billed before it failed (timeouts, lost connections, a crash), `not_billed` when the
  request never reached the provider or was refused. A SIGKILL leaves `pending` rows, which the
  next start turns into `worst_case`: the cache never shows less than the provider may bill.
- `failures`: questions whose last call failed, with the reason; `final` ones (the reply hit the
  output cap, the request was rejected) are not asked again with the same parameters unless the
  caller says so.

Every write is its own transaction (SQLite in WAL mode, synchronous=FULL), durable when the
method returns.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
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
);
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    question_id TEXT NOT NULL,
    status TEXT NOT NULL,
    cost REAL NOT NULL,
    worst_case REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    settled REAL
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    question_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    final INTEGER NOT NULL,
    created REAL NOT NULL
);
"""

PENDING, BILLED, WORST_CASE, NOT_BILLED = "pending", "billed", "worst_case", "not_billed"


@dataclass(frozen=True)
class Reservation:
    """A call's row in `charges`, priced at its worst case until it is settled."""

    id: int
    key: str
    question_id: str
    worst_case: float


@dataclass(frozen=True)
class Failure:
    question_id: str
    reason: str
    final: bool


def cache_key(teacher: str, model: str, messages: Any, params: dict[str, Any]) -> str:
    """A stable key: the same request always hashes the same, in any process."""
    canonical = json.dumps(
        {"teacher": teacher, "model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def base_key_of(teacher: str, model: str, request: Any) -> str:
    """The key of a request with its output limit left out (see the module docstring)."""
    params = dict(request.get("params") or {}) if isinstance(request, dict) else {}
    params.pop("max_tokens", None)
    messages = request.get("messages") if isinstance(request, dict) else None
    return cache_key(teacher, model, messages, params)


class TeacherCache:
    """Responses and charges on disk; every write is durable when it returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except sqlite3.DatabaseError as error:
            from frugal.run_files import RunFileError

            raise RunFileError(
                self.path, f"not a readable teacher cache ({error})",
                "restore it from a backup; deleting it asks (and pays for) every question "
                "again, and the ledger keeps what was paid",
            ) from None

    def _open(self) -> None:
        # Autocommit: each statement is its own transaction unless wrapped in _transaction().
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        had_charges = self._table_exists("charges")
        self._db.executescript(_SCHEMA)
        if not had_charges:
            self._charge_legacy_responses()
        if not self._has_column("responses", "base_key"):
            self._add_base_keys()
        self._total = self._sum_costs()

    # ------------------------------------------------------------------ responses

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def latest_response(self, teacher: str, model: str) -> dict[str, Any] | None:
        """The newest stored response of this teacher and model, None when there is none."""
        row = self._db.execute(
            "SELECT response FROM responses WHERE teacher = ? AND model = ? "
            "ORDER BY created DESC LIMIT 1", (teacher, model)).fetchone()
        return json.loads(row[0]) if row else None

    def has(self, keys: Iterable[str]) -> set[str]:
        """Which of `keys` have a usable response (one query per chunk, not per key)."""
        return self._present("responses", keys)

    def finished_within_limit(self, base_keys: Iterable[str]) -> dict[str, str]:
        """base key -> the key of a stored response that ended on its own (not at its output
        limit), for those of `base_keys` that have one."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(base_keys)):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT base_key, key, response FROM responses WHERE base_key IN ({marks})"
            for base_key, key, response in self._db.execute(query, chunk):
                if json.loads(response).get("extra", {}).get("finish_reason") != "length":
                    found.setdefault(base_key, key)
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
        reservation: Reservation | None = None,
        status: str = BILLED,
    ) -> None:
        """Store a usable response and its charge in one transaction.

        With a `reservation` the pending charge is settled at `cost` with `status` (`billed`,
        or `worst_case` for a reply without usage); without one (teachers that reserve nothing
        ahead, such as local models) a settled charge is added.
        """
        now = time.time()
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, teacher, model, question_id, request, "
                "response, cost, created, base_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, teacher, model, question_id, json.dumps(request, ensure_ascii=False),
                 json.dumps(response, ensure_ascii=False), cost, now,
                 base_key_of(teacher, model, request)),
            )
            self._db.execute("DELETE FROM failures WHERE key = ?", (key,))
            if reservation is None:
                self._insert_charge(key, question_id, BILLED, cost, cost, "", now, settled=now)
            else:
                self._settle(reservation, status, cost, "")

    # ------------------------------------------------------------------ charges

    def reserve(self, key: str, question_id: str, worst_case: float) -> Reservation:
        """Record, before the request is sent, that it may cost up to `worst_case` dollars."""
        now = time.time()
        with self._transaction():
            charge_id = self._insert_charge(
                key, question_id, PENDING, worst_case, worst_case, "", now, settled=None
            )
        return Reservation(charge_id, key, question_id, worst_case)

    def settle(self, reservation: Reservation, status: str, cost: float, reason: str) -> None:
        """End a reservation: `billed` at `cost`, `worst_case`, or `not_billed` (cost 0)."""
        with self._transaction():
            self._settle(reservation, status, cost, reason)

    def recover_pending(self) -> int:
        """Charge calls a crashed process never settled at their worst case; how many there were.

        Only safe while no other process uses the cache (the run-directory lock holds).
        """
        cursor = self._db.execute(
            "UPDATE charges SET status = ?, cost = worst_case, settled = ?, reason = ? "
            "WHERE status = ?",
            (WORST_CASE, time.time(),
             "the process stopped before the reply arrived: possibly billed", PENDING),
        )
        self._total = self._sum_costs()
        return cursor.rowcount

    def total_cost(self) -> float:
        """Dollars paid, or possibly paid, for every call ever made through this cache."""
        return self._total

    def charge_summary(self) -> dict[str, dict[str, float]]:
        """status -> {"calls": n, "dollars": d}, for reports and tests."""
        rows = self._db.execute(
            "SELECT status, COUNT(*), COALESCE(SUM(cost), 0) FROM charges GROUP BY status"
        ).fetchall()
        return {status: {"calls": count, "dollars": dollars} for status, count, dollars in rows}

    # ------------------------------------------------------------------ failures

    def record_failure(self, key: str, question_id: str, reason: str, *, final: bool) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?)",
            (key, question_id, reason, int(final), time.time()),
        )

    def failures(self, keys: Iterable[str]) -> dict[str, Failure]:
        """key -> the recorded failure, for those of `keys` that have one."""
        found: dict[str, Failure] = {}
        for chunk in _chunks(list(keys)):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, question_id, reason, final FROM failures WHERE key IN ({marks})"
            for key, question_id, reason, final in self._db.execute(query, chunk):
                found[key] = Failure(question_id, reason, bool(final))
        return found

    # ------------------------------------------------------------------ plumbing

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def _insert_charge(
        self, key: str, question_id: str, status: str, cost: float, worst_case: float,
        reason: str, created: float, *, settled: float | None,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO charges (key, question_id, status, cost, worst_case, reason, created, "
            "settled) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, question_id, status, cost, worst_case, reason, created, settled),
        )
        self._total += cost
        return int(cursor.lastrowid or 0)

    def _settle(self, reservation: Reservation, status: str, cost: float, reason: str) -> None:
        if status not in (BILLED, WORST_CASE, NOT_BILLED):
            raise ValueError(f"cannot settle a charge as {status!r}")
        if status == NOT_BILLED:
            cost = 0.0
        elif status == WORST_CASE:
            cost = reservation.worst_case
        cursor = self._db.execute(
            "UPDATE charges SET status = ?, cost = ?, reason = ?, settled = ? "
            "WHERE id = ? AND status = ?",
            (status, cost, reason, time.time(), reservation.id, PENDING),
        )
        if cursor.rowcount != 1:
            raise RuntimeError(f"charge {reservation.id} was already settled")
        self._total += cost - reservation.worst_case

    def _present(self, table: str, keys: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(keys)):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key FROM {table} WHERE key IN ({marks})"
            found.update(row[0] for row in self._db.execute(query, chunk))
        return found

    def _sum_costs(self) -> float:
        return float(self._db.execute("SELECT COALESCE(SUM(cost), 0) FROM charges").fetchone()[0])

    def _has_column(self, table: str, column: str) -> bool:
        return any(row[1] == column for row in self._db.execute(f"PRAGMA table_info({table})"))

    def _add_base_keys(self) -> None:
        # Caches from before base keys: derive them from each stored request.
        with self._transaction():
            self._db.execute("ALTER TABLE responses ADD COLUMN base_key TEXT")
            rows = self._db.execute("SELECT key, teacher, model, request FROM responses")
            for key, teacher, model, request in rows.fetchall():
                self._db.execute("UPDATE responses SET base_key = ? WHERE key = ?",
                                 (base_key_of(teacher, model, json.loads(request)), key))

    def _table_exists(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._db.execute(query, (name,)).fetchone() is not None

    def _charge_legacy_responses(self) -> None:
        # Caches written before charges existed recorded cost on the response only.
        with self._transaction():
            self._db.execute(
                "INSERT INTO charges (key, question_id, status, cost, worst_case, reason, "
                "created, settled) SELECT key, question_id, ?, cost, cost, "
                "'recorded before charges were tracked', created, created FROM responses",
                (BILLED,),
            )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back if the body raises."""

    def __init__(self, cache: TeacherCache) -> None:
        self.cache = cache

    def __enter__(self) -> None:
        self.cache._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_rest: object) -> None:
        if exc_type is None:
            self.cache._db.execute("COMMIT")
            return
        self.cache._db.execute("ROLLBACK")
        # The running total moved with statements that were just undone.
        self.cache._total = self.cache._sum_costs()


def _chunks(keys: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(keys), size):
        yield keys[start : start + size]
