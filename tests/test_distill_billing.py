"""Money under faults: what the teacher server billed against what the ledger says, and the cap.

Every test runs real distillations against `FakeOpenAIServer`, which bills like a provider (every
call it works on, usable or not, abandoned or not; error statuses free), over real sockets with
the official client, in-process or as `frugal distill` subprocesses that are SIGKILLed or sent
Ctrl-C. Each prints one row: calls made, dollars billed by the server, dollars in the ledger, the
cap. The rule: ledger dollars equal billed dollars (to 1e-9) except for calls recorded as possibly
billed (charged at their worst case), where the ledger may be higher, never lower; and billed
dollars never exceed the cap.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from frugal import distill
from frugal.distill import DistillConfig
from frugal.ledger import TokenPrices, read_ledger, teacher_dollars
from frugal.pool import PoolConfig
from frugal.pool import run as build_pool
from frugal.run_files import TEACHER_CACHE
from frugal.run_lock import hold
from frugal.teacher_cache import PENDING, WORST_CASE, TeacherCache
from frugal.teachers.openai_teacher import OpenAITeacherConfig

from .teachers.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
INPUT_PRICE, OUTPUT_PRICE = 1.0, 10.0  # dollars per million tokens, on both sides
PRICES = TokenPrices(input_per_million=INPUT_PRICE, output_per_million=OUTPUT_PRICE)


def task_pool(run_dir: Path, per_family: int = 2) -> list[str]:
    """Build a task-family pool; return its questions (the server's per-prompt keys)."""
    built = build_pool(PoolConfig(source="tasks", per_family=per_family), run_dir)
    return [q.question for q in built.questions]


def teacher_config(server: FakeOpenAIServer, **overrides: Any) -> OpenAITeacherConfig:
    settings: dict[str, Any] = {
        "base_url": server.base_url, "model": "fake-teacher", "concurrency": 4,
        "max_retries": 4, "backoff_base": 0.01, "backoff_max": 0.2, "timeout": 5.0,
        "max_tokens": 4096,
    }
    return OpenAITeacherConfig(**{**settings, **overrides})


def serve(**kwargs: Any) -> FakeOpenAIServer:
    return FakeOpenAIServer(prices=(INPUT_PRICE, OUTPUT_PRICE), **kwargs)


def account(
    run_dir: Path, billed_calls: int, billed: float, cap: float | None, label: str
) -> dict[str, float]:
    """Print and check one row of the table: billed vs ledger vs cap."""
    ledger = teacher_dollars(read_ledger(run_dir))
    with TeacherCache(run_dir / TEACHER_CACHE) as cache:
        charges = cache.charge_summary()
        cache_total = cache.total_cost()
    worst = charges.get(WORST_CASE, {"calls": 0, "dollars": 0.0})
    print(f"\n{label:<28} calls billed {billed_calls:>3}  billed ${billed:.9f}  "
          f"ledger ${ledger:.9f}  possibly billed {int(worst['calls'])} (${worst['dollars']:.6f})"
          f"  cap {'-' if cap is None else f'${cap:.2f}'}")
    assert PENDING not in charges, "a finished run leaves no unsettled call"
    assert ledger == pytest.approx(cache_total, abs=1e-12)  # the ledger is the cache's total
    assert ledger >= billed - 1e-9, "the ledger is never below the bill"
    if worst["calls"] == 0:
        assert ledger == pytest.approx(billed, abs=1e-9)
    else:
        # Possibly-billed calls are charged at their worst case: never less than the bill.
        assert ledger <= billed + worst["dollars"] + 1e-9
    if cap is not None:
        assert billed <= cap + 1e-12 and ledger <= cap + 1e-12
    return {"ledger": ledger, "billed": billed, "worst": worst["dollars"]}


# ---------------------------------------------------------------------------- in-process faults


def test_empty_length_limited_replies_are_charged_once_each_and_the_cap_holds(
    tmp_path: Path,
) -> None:
    prompts = task_pool(tmp_path)
    cap = 0.20
    with serve(fail_forever={p: ("length_empty",) for p in prompts}) as server:
        config = DistillConfig(teacher="openai", openai=teacher_config(server),
                               prices=PRICES, max_cost=cap)
        result = distill.run(config, tmp_path)
        state = server.snapshot()
    row = account(tmp_path, state["billed_calls"], state["billed_dollars"], cap,
                  "empty at the output cap")
    # Each call bills 4096 output tokens (~$0.041): four fit under $0.20, none is retried.
    assert state["total_calls"] == state["billed_calls"] == 4
    assert max(state["calls"].values()) == 1
    assert row["ledger"] > 0.16
    assert not result.complete and result.cap_message and len(result.failed) == 4
    assert all("max_tokens" in why for why in result.failed.values())
    # A re-run with the same settings does not pay for the same empty replies again.
    with serve(fail_forever={p: ("length_empty",) for p in prompts}) as server:
        config.openai = teacher_config(server)
        config.max_cost = 1.0
        again = distill.run(config, tmp_path)
        assert all(server.calls[p] == 0 for p in prompts if p in {
            q for q in state["calls"]})
    assert len(again.failed) >= 4


@pytest.mark.parametrize(
    ("label", "fault", "overrides"),
    [
        ("no usage in the reply", ("no_usage",), {}),
        ("429 storm", ("429", 0.02), {}),
        ("5xx", ("500",), {}),
        ("timeout after the read", ("timeout", 2.0), {"timeout": 0.4}),
        ("malformed body", ("malformed",), {}),
        ("empty choices", ("empty_choices",), {}),
    ],
)
def test_fault_modes_keep_ledger_and_bill_together(
    tmp_path: Path, label: str, fault: tuple[Any, ...], overrides: dict[str, Any]
) -> None:
    prompts = task_pool(tmp_path, per_family=1)
    faults = 1 if fault[0] == "timeout" else 2
    if fault[0] == "no_usage":
        plan = {p: [fault] for p in prompts}  # the first answer of each question has no usage
    else:
        plan = {p: [fault] * faults for p in prompts}
    cap = 5.0
    with serve(plan=plan) as server:
        config = DistillConfig(teacher="openai", openai=teacher_config(server, **overrides),
                               prices=PRICES, max_cost=cap)
        result = distill.run(config, tmp_path)
        time.sleep(0.3)  # let abandoned calls finish billing on the server
        state = server.snapshot()
    row = account(tmp_path, state["billed_calls"], state["billed_dollars"], cap, label)
    assert result.complete and len(result.traces) == len(prompts)
    if fault[0] in ("no_usage", "malformed", "timeout"):
        assert row["worst"] > 0 and result.possibly_billed > 0  # recorded as possibly billed
    else:
        assert row["worst"] == 0


def test_a_zero_price_cap_is_refused_before_any_call(tmp_path: Path) -> None:
    task_pool(tmp_path, per_family=1)
    with serve() as server:
        with pytest.raises(ValueError, match="prices are zero"):
            DistillConfig(teacher="openai", openai=teacher_config(server), max_cost=1.0)
        finished = subprocess.run(
            [sys.executable, "-m", "frugal.cli", "distill", "--run", str(tmp_path),
             "--teacher", "openai", "--base-url", server.base_url, "--model", "m",
             "--max-cost", "1"],
            cwd=REPO, capture_output=True, text=True,
        )
        assert server.total_calls == 0
    assert finished.returncode == 1 and "prices are zero" in finished.stderr
    assert "Traceback" not in finished.stderr


def long_reply(prompt: str) -> tuple[str, str]:
    """About 900 output tokens: each call bills close to its worst case at max_tokens 1000."""
    return " ".join(["step"] * 895), "Final Answer: 42"


def test_the_cap_holds_across_concurrent_calls_and_re_runs(tmp_path: Path) -> None:
    prompts = task_pool(tmp_path, per_family=6)
    caps = [0.10, 0.10, 0.25]  # the same cap twice (pays nothing more), then a raised one
    answered = []
    with serve(delay=0.05, reply=long_reply) as server:
        for attempt, cap in enumerate(caps):
            config = DistillConfig(
                teacher="openai", openai=teacher_config(server, concurrency=8, max_tokens=1000),
                prices=PRICES, max_cost=cap,
            )
            calls_before = server.total_calls
            result = distill.run(config, tmp_path)
            state = server.snapshot()
            account(tmp_path, state["billed_calls"], state["billed_dollars"], cap,
                    f"cap ${cap:.2f}, 8 in flight")
            assert not result.complete and result.cap_message
            answered.append(len(result.traces))
            if attempt == 1:
                assert server.total_calls == calls_before  # the same cap: nothing more paid
    assert 0 < answered[0] == answered[1] < answered[2] < len(prompts)
    assert all(n == 1 for n in state["answered"].values())


# ---------------------------------------------------------------------------- processes


def distill_command(run_dir: Path, server: FakeOpenAIServer, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "frugal.cli", "distill", "--run", str(run_dir),
        "--teacher", "openai", "--base-url", server.base_url, "--model", "fake-teacher",
        "--concurrency", "2", "--max-retries", "5", "--timeout", "1", "--max-tokens", "1000",
        "--price-input", str(INPUT_PRICE), "--price-output", str(OUTPUT_PRICE), *extra,
    ]


def wait_until(predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_sigkill_at_random_moments_never_leaves_the_ledger_below_the_bill(
    tmp_path: Path,
) -> None:
    prompts = task_pool(tmp_path, per_family=16)
    rng = random.Random(13)
    faults = [("429", 0.05), ("500",), ("malformed",), ("empty_choices",), ("timeout", 3.0)]
    plan = {p: [faults[i % len(faults)]] for i, p in enumerate(prompts[::3])}
    kills = 10
    with serve(delay=0.25, plan=plan) as server:
        command = distill_command(tmp_path, server)
        for kill in range(kills):
            calls_before = server.total_calls
            child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            # A random moment after this run's first call went out: among calls in flight,
            # replies being cached, retries and ledger writes.
            wait_until(lambda: server.total_calls > calls_before  # noqa: B023 (called at once)
                       or child.poll() is not None)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.8))
            child.send_signal(signal.SIGKILL)
            child.wait()
            time.sleep(0.3)  # calls the kill abandoned finish billing on the server
            added = distill.reconcile(tmp_path)  # what the next start does first
            state = server.snapshot()
            with TeacherCache(tmp_path / TEACHER_CACHE) as cache:
                cache_total = cache.total_cost()
            ledger = teacher_dollars(read_ledger(tmp_path))
            print(f"\nkill {kill + 1}: calls {state['total_calls']}, billed "
                  f"${state['billed_dollars']:.9f}, ledger ${ledger:.9f} (reconciled "
                  f"+${added:.9f}), cache ${cache_total:.9f}")
            assert ledger >= cache_total - 1e-12
            assert ledger >= state["billed_dollars"] - 1e-9
        finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        assert finished.returncode == 0, finished.stderr
        time.sleep(0.3)
        state = server.snapshot()
    account(tmp_path, state["billed_calls"], state["billed_dollars"], None,
            f"{kills} SIGKILLs, then a full run")
    # Every question answered; a kill can make a call in flight be paid again (its reply died
    # with the process, charged at its worst case), at most the 2 in flight per kill, never one
    # whose reply was cached.
    assert set(state["answered"]) == set(prompts)
    assert sum(n - 1 for n in state["answered"].values()) <= 2 * kills


def test_one_ctrl_c_waits_for_calls_in_flight_and_exits_130(tmp_path: Path) -> None:
    prompts = task_pool(tmp_path, per_family=4)
    with serve(delay=0.6) as server:
        child = subprocess.Popen(distill_command(tmp_path, server), cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: server.in_flight == 2 and sum(server.answered.values()) >= 2)
        wait_until(lambda: server.in_flight == 2)
        in_flight = server.in_flight
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
        time.sleep(0.2)
        state = server.snapshot()
    account(tmp_path, state["billed_calls"], state["billed_dollars"], None, "one Ctrl-C")
    assert child.returncode == 130, stderr
    assert sum(state["abandoned"].values()) == 0  # the calls in flight were waited for
    assert in_flight == 2 and 0 < sum(state["answered"].values()) < len(prompts)
    with TeacherCache(tmp_path / TEACHER_CACHE) as cache:
        assert len(cache) == sum(state["answered"].values())  # and cached
    assert "Traceback" not in stderr


def test_a_second_ctrl_c_aborts_calls_in_flight_charged_at_worst_case(tmp_path: Path) -> None:
    task_pool(tmp_path, per_family=4)
    with serve(delay=1.5) as server:
        child = subprocess.Popen(distill_command(tmp_path, server, "--timeout", "30"), cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: server.in_flight == 2)
        child.send_signal(signal.SIGINT)
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, stderr = child.communicate(timeout=60)
        aborted_in = time.monotonic() - started
        time.sleep(1.8)  # the aborted calls finish (and bill) on the server
        state = server.snapshot()
    row = account(tmp_path, state["billed_calls"], state["billed_dollars"], None,
                  "two Ctrl-Cs")
    assert child.returncode == 130, stderr
    assert aborted_in < 1.2, "the second Ctrl-C must not wait for the calls in flight"
    assert sum(state["abandoned"].values()) == 2 and row["worst"] > 0


def test_a_second_process_on_the_same_run_directory_fails_at_once(tmp_path: Path) -> None:
    prompts = task_pool(tmp_path, per_family=6)  # 36 questions, 2 at a time: ~9 s of calls
    with serve(delay=0.5) as server:
        first = subprocess.Popen(distill_command(tmp_path, server), cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: server.total_calls > 0)
        calls_before = server.total_calls
        started = time.monotonic()
        second = subprocess.run(distill_command(tmp_path, server), cwd=REPO,
                                capture_output=True, text=True)
        second_running = first.poll() is None  # the second ran while the first held the lock
        assert first.wait(timeout=120) == 0
        time.sleep(0.2)
        state = server.snapshot()
    account(tmp_path, state["billed_calls"], state["billed_dollars"], None, "two processes")
    assert second_running and second.returncode == 1
    assert f"pid {first.pid}" in second.stderr and "in use" in second.stderr
    assert time.monotonic() - started < 30 and "Traceback" not in second.stderr
    assert calls_before > 0 and all(n == 1 for n in state["answered"].values())
    assert set(state["answered"]) == set(prompts)


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from frugal.run_lock import hold\n"
         f"with hold({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(OSError, match=f"pid {holder.pid}"), hold(tmp_path):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with hold(tmp_path):  # no stale lock to clean up
        record = json.loads((tmp_path / ".frugal.lock").read_text())
        assert record["pid"] == os.getpid()


def test_raising_max_tokens_asks_only_the_replies_it_cut_short(tmp_path: Path) -> None:
    prompts = task_pool(tmp_path, per_family=1)
    long = set(prompts[:2])

    def reply(prompt: str) -> tuple[str, str]:
        thinking = " ".join(["step"] * 150) if prompt in long else "a short thought"
        return thinking, "Final Answer: 42"

    with serve(reply=reply) as server:
        config = DistillConfig(teacher="openai", openai=teacher_config(server, max_tokens=100),
                               prices=PRICES)
        first = distill.run(config, tmp_path)
        assert server.total_calls == len(prompts)
        assert sum(not t.answer for t in first.traces) == 2  # cut at 100 tokens
        config.openai = teacher_config(server, max_tokens=400)
        second = distill.run(config, tmp_path)
        state = server.snapshot()
    account(tmp_path, state["billed_calls"], state["billed_dollars"], None,
            "max_tokens raised 100 -> 400")
    assert state["total_calls"] == len(prompts) + 2  # only the two cut short were asked again
    assert {p for p, n in state["calls"].items() if n == 2} == long
    assert all(t.answer for t in second.traces) and len(second.traces) == len(prompts)
