"""Budget forcing on a real vLLM (the CPU build in `.venv-vllm`, which `make test` installs).

One vLLM server for the module serves SmolLM2 and a LoRA adapter (`frugal.vllm_server`); the
endpoint engine drives it. Tests prove the budget invariants on vLLM, that adapters are picked
per request, agreement with the local engine in float32 greedy decoding, and `frugal eval
--engine vllm`. Skipped, with the reason, where vLLM could not be installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from frugal.endpoint_config import EndpointConfig
from frugal.endpoint_engine import EndpointEngine
from frugal.generation import BudgetConfig, BudgetForcingEngine, GenerationResult
from frugal.vllm_server import serve_with_vllm, vllm_available

from .conftest import SMOLLM2
from .engine_cases import (
    INVARIANT_BUDGETS,
    QUESTIONS,
    check_budget_invariants,
    check_eval_on_engine,
    shared_prefix,
    split,
)

pytestmark = pytest.mark.skipif(
    not vllm_available(), reason="vLLM is not installed here (make vllm builds .venv-vllm)"
)

@pytest.fixture(scope="module")
def vllm(adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointConfig]:
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with serve_with_vllm(SMOLLM2, {"shouty": adapter_dir}, max_model_len=2048, eager=True,
                         log=log) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def engine(vllm: EndpointConfig, smollm2: Any) -> EndpointEngine:
    return EndpointEngine(vllm, smollm2.tokenizer)


@pytest.mark.parametrize("budget", INVARIANT_BUDGETS.values(), ids=INVARIANT_BUDGETS.keys())
def test_budget_invariants_hold_on_vllm(engine: EndpointEngine, budget: BudgetConfig) -> None:
    check_budget_invariants(engine.generate(QUESTIONS[:12], budget), budget)


def test_adapters_are_picked_per_request(
    engine: EndpointEngine, smollm2: Any, adapter_dir: Path
) -> None:
    from frugal.adapters import load_with_adapters
    from frugal.generation import Job, ListSource

    budget = BudgetConfig(max_thinking_tokens=16, max_answer_tokens=8)
    questions = QUESTIONS[:4]
    jobs = [Job(engine.format.generation_prompt(q), budget, index=i,
                adapter="shouty" if i % 2 else None) for i, q in enumerate(questions)]
    mixed: dict[int, GenerationResult] = {}
    # All four in one call: the engine must keep base rows out of the adapter's batches.
    engine.run_jobs(ListSource(jobs, engine.format.encode), 4,
                    lambda r: mixed.setdefault(r.index, r))
    base = BudgetForcingEngine(smollm2.model, smollm2.tokenizer).generate(
        questions, budget, batch_size=1)
    loaded = load_with_adapters(SMOLLM2, {"shouty": adapter_dir})
    tuned = BudgetForcingEngine(loaded.model, loaded.tokenizer).generate(
        questions, budget, batch_size=1)
    for i, row in mixed.items():
        own, other = (tuned, base) if i % 2 else (base, tuned)
        with_own = shared_prefix(row.token_ids, own[i].token_ids)
        with_other = shared_prefix(row.token_ids, other[i].token_ids)
        print(f"\nrow {i} ({'shouty' if i % 2 else 'base'}): shares {with_own} tokens with "
              f"the local engine's same model, {with_other} with the other")
        assert with_own > with_other
    assert all(tuned[i].token_ids != base[i].token_ids for i in range(4))


def test_vllm_agrees_with_the_local_engine(engine: EndpointEngine, smollm2: Any) -> None:
    budget = BudgetConfig(max_thinking_tokens=48, num_waits=1, max_answer_tokens=16)
    remote = engine.generate(QUESTIONS, budget)
    local = BudgetForcingEngine(smollm2.model, smollm2.tokenizer).generate(
        QUESTIONS, budget, batch_size=1)

    same = [split(a) == split(b) for a, b in zip(remote, local, strict=True)]
    identical = sum(a.token_ids == b.token_ids for a, b in zip(remote, local, strict=True))
    print(f"\nvLLM vs local engine, float32 greedy, {len(QUESTIONS)} prompts: same split and "
          f"counts {sum(same)}/{len(same)} ({sum(same) / len(same):.1%}), identical tokens "
          f"{identical}/{len(same)}")
    assert sum(same) / len(same) >= 0.9


def test_frugal_eval_on_vllm_writes_what_a_local_eval_writes(tmp_path: Path) -> None:
    """`--engine vllm` starts a vLLM for the evaluation and stops it after."""
    check_eval_on_engine(tmp_path, ["--engine", "vllm"])


def test_frugal_serve_fronts_a_vllm_it_starts_and_stops(
    adapter_dir: Path, tmp_path: Path
) -> None:
    """`frugal serve RUN --engine vllm` as a user runs it: a real process, the official client."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    import httpx
    import openai

    from frugal.experts.router import ROUTER_DIR, ROUTER_FILE, Router

    from .teachers.fake_openai_server import free_port

    run_dir = tmp_path / "run"
    for name in ("shouty", "calm"):  # two experts (the same weights: routing is what is tested)
        shutil.copytree(adapter_dir, run_dir / "adapters" / name)
    router = Router.fit([*QUESTIONS[:16], *QUESTIONS[16:]], ["shouty"] * 16 + ["calm"] * 16)
    router.save(run_dir / ROUTER_DIR)
    (run_dir / ROUTER_DIR / ROUTER_FILE).write_text(json.dumps({"chosen": router.kind}))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "frugal.cli", "serve", str(run_dir), "--engine", "vllm",
         "--port", str(port), "--dtype", "float32"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "frugal serve --engine vllm did not come up"
            time.sleep(1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        assert {m.id for m in client.models.list().data} >= {"shouty", "calm", "auto"}
        routed = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "How many days are in 9 weeks?"}],
            max_tokens=8, extra_body={"max_thinking_tokens": 8})
        assert routed.model == "calm"  # the router's pick, served by vLLM under that name
        for model in ("shouty", SMOLLM2):
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "What is 7 times 8?"}],
                max_tokens=16,
                extra_body={"max_thinking_tokens": 24, "min_thinking_tokens": 24},
            )
            message = reply.choices[0].message
            extra = message.model_extra or {}
            assert extra.get("reasoning_content") is not None  # the thinking, apart
            assert reply.usage is not None and reply.usage.completion_tokens > 0
        children = subprocess.run(["pgrep", "-f", "vllm.entrypoints.openai.api_server"],
                                  capture_output=True, text=True).stdout.split()
        assert children, "vLLM should be running behind frugal"
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn shuts down, and frugal stops vLLM
        server.wait(timeout=120)
    time.sleep(3)
    left = [pid for pid in subprocess.run(
        ["pgrep", "-f", "vllm.entrypoints.openai.api_server"], capture_output=True, text=True
    ).stdout.split() if int(pid) != os.getpid()]
    # The module's own vLLM (the fixture) may still run; the one frugal serve started must not.
    assert len(left) <= len(children) - 1
