"""The ledger and the teacher cache's charges: appends that never collide, reconciliation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from frugal.ledger import (
    LedgerEntry,
    append_entry,
    read_ledger,
    reconcile_teacher_cache,
    teacher_dollars,
)
from frugal.teacher_cache import BILLED, NOT_BILLED, PENDING, WORST_CASE, TeacherCache


def test_appends_from_several_processes_lose_nothing(tmp_path: Path) -> None:
    # `frugal serve` appends without the run-directory lock, beside a stage that holds it.
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from frugal.ledger import LedgerEntry, append_entry\n"
        "for i in range(25):\n"
        "    append_entry(Path(sys.argv[1]), LedgerEntry(stage=sys.argv[2], dollars=0.01))\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), f"w{n}"])
               for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0] * 4
    ledger = read_ledger(tmp_path)
    assert len(ledger.entries) == 100
    assert ledger.total_dollars == pytest.approx(1.0)


def test_charges_settle_once_and_a_crash_leaves_them_at_their_worst_case(tmp_path: Path) -> None:
    path = tmp_path / "teacher-cache.sqlite"
    with TeacherCache(path) as cache:
        answered = cache.reserve("k1", "q1", worst_case=0.5)
        refused = cache.reserve("k2", "q2", worst_case=0.5)
        cache.reserve("k3", "q3", worst_case=0.5)  # in flight when the process dies
        assert cache.total_cost() == pytest.approx(1.5)  # reservations count at once
        cache.put("k1", teacher="openai", model="m", question_id="q1", request={},
                  response={"completions": []}, cost=0.01, reservation=answered)
        cache.settle(refused, NOT_BILLED, 0.0, "HTTP 429")
        with pytest.raises(RuntimeError, match="already settled"):
            cache.settle(refused, BILLED, 0.2, "twice")
        assert cache.total_cost() == pytest.approx(0.51)
    with TeacherCache(path) as cache:  # the next start
        assert cache.charge_summary()[PENDING]["calls"] == 1
        assert cache.recover_pending() == 1
        summary = cache.charge_summary()
        assert PENDING not in summary and summary[WORST_CASE]["dollars"] == pytest.approx(0.5)
        assert cache.total_cost() == pytest.approx(0.51)
        total = cache.total_cost()

    append_entry(tmp_path, LedgerEntry(stage="distill", teacher_dollars=0.01, dollars=0.01))
    gap = reconcile_teacher_cache(tmp_path, total, reason="a crash")
    assert gap == pytest.approx(0.5)
    assert teacher_dollars(read_ledger(tmp_path)) == pytest.approx(total)
    assert reconcile_teacher_cache(tmp_path, total, reason="again") == 0  # nothing twice
    assert len(read_ledger(tmp_path).entries) == 2


def test_a_cache_from_before_charges_keeps_its_paid_responses(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "teacher-cache.sqlite"
    with sqlite3.connect(path) as db:  # the old schema: responses with their cost only
        db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, "
                   "model TEXT NOT NULL, question_id TEXT NOT NULL, request TEXT NOT NULL, "
                   "response TEXT NOT NULL, cost REAL NOT NULL, created REAL NOT NULL)")
        db.execute("INSERT INTO responses VALUES ('k', 'openai', 'm', 'q', '{}', '{}', 0.25, 0)")
    with TeacherCache(path) as cache:
        assert cache.total_cost() == pytest.approx(0.25) and cache.has(["k"]) == {"k"}
    with TeacherCache(path) as cache:  # migrated once, not on every open
        assert cache.total_cost() == pytest.approx(0.25)


def test_a_corrupt_teacher_cache_is_a_clear_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from frugal.cli import app
    from frugal.pool import PoolConfig
    from frugal.pool import run as build_pool

    build_pool(PoolConfig(source="tasks", per_family=1), tmp_path)
    (tmp_path / "teacher-cache.sqlite").write_bytes(b"not a database" * 100)
    result = CliRunner().invoke(app, ["distill", "--run", str(tmp_path)])
    assert result.exit_code == 1 and "not a readable teacher cache" in result.output
    assert "Traceback" not in result.output
