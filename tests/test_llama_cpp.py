"""Budget forcing on llama.cpp's real server (built from source by `make llama-cpp`).

One set of llama-server processes for the module serves SmolLM2 and a LoRA adapter merged into
it, exported to float32 GGUF (`frugal.llama_cpp_server`); the endpoint engine drives them over
llama.cpp's native API. Tests prove the budget invariants, that adapters are picked per request,
agreement with the local engine in float32 greedy decoding, the GGUF cache, `frugal eval
--engine llama.cpp` and `frugal serve --engine llama.cpp` with the official client. Skipped,
with the reason, where llama.cpp's server could not be built.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from frugal.endpoint_config import EndpointConfig
from frugal.endpoint_engine import STREAM_CHUNK, EndpointEngine, EndpointError
from frugal.generation import BudgetConfig, BudgetForcingEngine, GenerationResult, Job, ListSource
from frugal.llama_cpp_server import gguf_for, llama_cpp_available, serve_with_llama_cpp
from frugal.settings.engines import LlamaCppConfig

from .conftest import SMOLLM2
from .engine_cases import (
    BRANCH_BUDGETS,
    BRANCH_IDS,
    BRANCH_QUESTIONS,
    INVARIANT_BUDGETS,
    QUESTIONS,
    check_budget_invariants,
    check_eval_on_engine,
    shared_prefix,
    split,
)

pytestmark = pytest.mark.skipif(
    not llama_cpp_available(),
    reason="llama.cpp's server is not built here (make llama-cpp builds .llama.cpp/)",
)
EXACT = LlamaCppConfig(weights="f32", slots=8)


@pytest.fixture(scope="module")
def llama_cpp(adapter_dir: Path) -> Iterator[EndpointConfig]:
    with serve_with_llama_cpp(SMOLLM2, {"shouty": adapter_dir}, config=EXACT,
                              context_tokens=1024) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def engine(llama_cpp: EndpointConfig, smollm2: Any) -> EndpointEngine:
    return EndpointEngine(llama_cpp, smollm2.tokenizer)


@pytest.fixture(scope="module")
def tuned_locally(adapter_dir: Path) -> BudgetForcingEngine:
    """The local engine on the same merged weights llama.cpp serves for the adapter."""
    from frugal.export import load_merged

    merged = load_merged(adapter_dir.parent, str(adapter_dir), SMOLLM2)
    return BudgetForcingEngine(merged.model.float(), merged.tokenizer)


@pytest.mark.parametrize("budget", INVARIANT_BUDGETS.values(), ids=INVARIANT_BUDGETS.keys())
def test_budget_invariants_hold_on_llama_cpp(engine: EndpointEngine,
                                             budget: BudgetConfig) -> None:
    check_budget_invariants(engine.generate(QUESTIONS[:12], budget), budget)


def test_the_api_is_detected_and_each_adapter_has_its_server(
    llama_cpp: EndpointConfig, smollm2: Any
) -> None:
    assert set(llama_cpp.model_urls) == {"shouty"}
    assert llama_cpp.url_for("shouty") != llama_cpp.base_url
    asked = EndpointConfig(base_url=llama_cpp.base_url, model=SMOLLM2)  # api: auto
    budget = BudgetConfig(max_thinking_tokens=16, max_answer_tokens=8)
    by_url = EndpointEngine(asked, smollm2.tokenizer).generate(QUESTIONS[:2], budget)
    direct = EndpointEngine(llama_cpp, smollm2.tokenizer).generate(QUESTIONS[:2], budget)
    assert [r.token_ids for r in by_url] == [r.token_ids for r in direct]
    # One server serves one model: an adapter it has no server for is an error, not the base.
    engine = EndpointEngine(asked, smollm2.tokenizer)
    job = Job(engine.format.generation_prompt(QUESTIONS[0]), budget, index=0, adapter="shouty")
    with pytest.raises(EndpointError, match="adapter 'shouty'"):
        engine.run_jobs(ListSource([job], engine.format.encode), 1, lambda r: None)


def test_adapters_are_picked_per_request(
    engine: EndpointEngine, smollm2: Any, tuned_locally: BudgetForcingEngine
) -> None:
    budget = BudgetConfig(max_thinking_tokens=16, max_answer_tokens=8)
    questions = QUESTIONS[:4]
    jobs = [Job(engine.format.generation_prompt(q), budget, index=i,
                adapter="shouty" if i % 2 else None) for i, q in enumerate(questions)]
    mixed: dict[int, GenerationResult] = {}
    engine.run_jobs(ListSource(jobs, engine.format.encode), 4,
                    lambda r: mixed.setdefault(r.index, r))
    base = BudgetForcingEngine(smollm2.model, smollm2.tokenizer).generate(
        questions, budget, batch_size=1)
    tuned = tuned_locally.generate(questions, budget, batch_size=1)
    for i, row in mixed.items():
        own, other = (tuned, base) if i % 2 else (base, tuned)
        with_own = shared_prefix(row.token_ids, own[i].token_ids)
        with_other = shared_prefix(row.token_ids, other[i].token_ids)
        print(f"\nrow {i} ({'shouty' if i % 2 else 'base'}): shares {with_own} tokens with "
              f"the local engine's same model, {with_other} with the other")
        assert with_own > with_other
    assert all(tuned[i].token_ids != base[i].token_ids for i in range(4))


@pytest.mark.parametrize("adapter", [None, "shouty"], ids=["base", "merged-adapter"])
def test_llama_cpp_agrees_with_the_local_engine(
    engine: EndpointEngine, smollm2: Any, tuned_locally: BudgetForcingEngine,
    adapter: str | None,
) -> None:
    budget = BudgetConfig(max_thinking_tokens=48, num_waits=1, max_answer_tokens=16)
    jobs = [Job(engine.format.generation_prompt(q), budget, index=i, adapter=adapter)
            for i, q in enumerate(QUESTIONS)]
    rows: dict[int, GenerationResult] = {}
    engine.run_jobs(ListSource(jobs, engine.format.encode), 8,
                    lambda r: rows.setdefault(r.index, r))
    remote = [rows[i] for i in range(len(QUESTIONS))]
    local_engine = (tuned_locally if adapter
                    else BudgetForcingEngine(smollm2.model, smollm2.tokenizer))
    local = local_engine.generate(QUESTIONS, budget, batch_size=1)
    same = [split(a) == split(b) for a, b in zip(remote, local, strict=True)]
    identical = sum(a.token_ids == b.token_ids for a, b in zip(remote, local, strict=True))
    apart = [shared_prefix(a.token_ids, b.token_ids)
             for a, b in zip(remote, local, strict=True) if a.token_ids != b.token_ids]
    print(f"\nllama.cpp (f32 GGUF) vs local engine ({adapter or 'base'}), float32 greedy, "
          f"{len(QUESTIONS)} prompts: same split and counts {sum(same)}/{len(same)} "
          f"({sum(same) / len(same):.1%}), identical tokens {identical}/{len(same)}; first "
          f"difference at token {apart}")
    assert sum(same) / len(same) >= 0.9


@pytest.fixture(scope="module")
def early_llama_cpp(early_dir: Path) -> Iterator[EndpointConfig]:
    with serve_with_llama_cpp(str(early_dir), config=EXACT, context_tokens=512) as endpoint:
        yield endpoint


@pytest.mark.parametrize("budget", BRANCH_BUDGETS, ids=BRANCH_IDS)
def test_every_branch_gives_the_local_engines_tokens_on_llama_cpp(
    early_llama_cpp: EndpointConfig, early_stopper: Any, smollm2_tokenizer: Any,
    budget: BudgetConfig,
) -> None:
    # A model that tries to stop early takes every branch of budget forcing (Waits for the
    # minimum and for num_waits, the cap, its own end, an end of turn inside thinking, the
    # answer's cap): on llama.cpp's native API, f32, the tokens, forced flags, sections and
    # counts are the local engine's.
    local = BudgetForcingEngine(early_stopper, smollm2_tokenizer).generate(
        BRANCH_QUESTIONS, budget, batch_size=1)
    remote = EndpointEngine(early_llama_cpp, smollm2_tokenizer).generate(BRANCH_QUESTIONS,
                                                                         budget)
    same = sum(a.token_ids == b.token_ids for a, b in zip(remote, local, strict=True))
    print(f"\n{budget.max_thinking_tokens}/{budget.min_thinking_tokens}/{budget.num_waits}: "
          f"{same}/{len(local)} identical; waits {[r.waits for r in remote]}, forced max "
          f"{[r.forced_max for r in remote]}, finish {[r.finish_reason for r in remote]}")
    for mine, theirs in zip(remote, local, strict=True):
        assert (mine.token_ids, mine.forced, mine.sections, mine.thinking_tokens,
                mine.answer_tokens, mine.waits, mine.forced_max, mine.finish_reason) == (
            theirs.token_ids, theirs.forced, theirs.sections, theirs.thinking_tokens,
            theirs.answer_tokens, theirs.waits, theirs.forced_max, theirs.finish_reason)


def test_the_gguf_export_is_cached_by_fingerprint(adapter_dir: Path, llama_cpp: Any,
                                                  tmp_path: Path) -> None:
    first = gguf_for(SMOLLM2, adapter_dir, "f32")  # exported when the module's servers started
    stamp = first.stat().st_mtime_ns
    assert gguf_for(SMOLLM2, adapter_dir, "f32") == first
    assert first.stat().st_mtime_ns == stamp  # not written again
    retrained = shutil.copytree(adapter_dir, tmp_path / "shouty")
    weights = retrained / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight changes: a new export
    weights.write_bytes(bytes(data))
    assert gguf_for(SMOLLM2, retrained, "f32") != first
    gguf_for(SMOLLM2, retrained, "f32").unlink()


def test_llama_cpp_splits_text_as_the_models_tokenizer_does(llama_cpp: EndpointConfig,
                                                            smollm2: Any) -> None:
    """The exported GGUF names its pre-tokenizer, so a runtime given text (not frugal's token
    ids) tokenizes it as transformers does: without it llama.cpp split "74 + 54", "$1" and
    "don't" its own way."""
    texts = ["What is 74 + 54?", "It costs $1,234.50 in 2024.", "don't I'll we've",
             "  two  spaces\n\n\tand a tab", "x=3.14159; y = 12345678 // ok",
             "Ünïcödé — 東京 🙂",
             "<think>\nStep 1: 3 × 4 = 12.\n</think>"]
    url = llama_cpp.base_url.removesuffix("/v1") + "/tokenize"
    for text in texts:
        ours = httpx.post(url, json={"content": text}, timeout=30).json()["tokens"]
        assert ours == smollm2.tokenizer(text, add_special_tokens=False).input_ids, text


def test_frugal_eval_on_llama_cpp_writes_what_a_local_eval_writes(tmp_path: Path) -> None:
    """`--engine llama.cpp` starts llama.cpp's server for the evaluation and stops it after."""
    check_eval_on_engine(tmp_path, ["--engine", "llama.cpp", "--llama-cpp-weights", "f32"])


def _llama_servers() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "llama-server"], capture_output=True, text=True)
    return {pid for pid in found.stdout.split() if int(pid) != os.getpid()}


def test_frugal_serve_fronts_llama_cpp_it_starts_and_stops(
    adapter_dir: Path, tmp_path: Path
) -> None:
    """`frugal serve RUN --engine llama.cpp` as a user runs it: a real process, the official
    client, two experts each with its own merged server, `model: auto` routing."""
    import openai

    from frugal.experts.router import ROUTER_DIR, ROUTER_FILE, Router

    from .teachers.fake_openai_server import free_port

    run_dir = tmp_path / "run"
    for name in ("shouty", "calm"):  # two experts (the same weights: routing is what is tested)
        shutil.copytree(adapter_dir, run_dir / "adapters" / name)
    router = Router.fit(QUESTIONS, ["shouty"] * 16 + ["calm"] * 16)
    router.save(run_dir / ROUTER_DIR)
    (run_dir / ROUTER_DIR / ROUTER_FILE).write_text(json.dumps({"chosen": router.kind}))
    before = _llama_servers()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "frugal.cli", "serve", str(run_dir), "--engine", "llama.cpp",
         "--llama-cpp-weights", "f32", "--llama-cpp-slots", "4", "--port", str(port)],
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
            assert time.monotonic() < deadline, "frugal serve --engine llama.cpp did not start"
            time.sleep(0.5)
        started = _llama_servers() - before
        assert len(started) == 3  # the base and one merged model per expert
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        assert {m.id for m in client.models.list().data} >= {"shouty", "calm", "auto"}
        routed = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "How many days are in 9 weeks?"}],
            max_tokens=8, extra_body={"max_thinking_tokens": 8})
        assert routed.model == "calm"  # the router's pick, served by its own llama.cpp
        for model in ("shouty", SMOLLM2):
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "What is 7 times 8?"}],
                max_tokens=16, extra_body={"max_thinking_tokens": 24, "min_thinking_tokens": 24},
            )
            extra = reply.choices[0].message.model_extra or {}
            assert extra.get("reasoning_content")  # the thinking, apart
            details = reply.usage.completion_tokens_details if reply.usage else None
            assert details is not None and details.reasoning_tokens == 24  # minimum = cap
        streamed = client.chat.completions.create(
            model="shouty", messages=[{"role": "user", "content": "What is 7 times 8?"}],
            max_tokens=8, stream=True, extra_body={"max_thinking_tokens": 12})
        chunks = [c for c in streamed if c.choices]
        assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason is not None
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn shuts down, and frugal stops llama.cpp
        server.wait(timeout=120)
    time.sleep(1)
    assert not (_llama_servers() & started), "the llama.cpp servers frugal started must stop"


class _Sink:
    """What distill gives a local teacher: every question admitted, each answer kept."""

    def __init__(self) -> None:
        self.puts: dict[str, Any] = {}

    def admit(self, question: Any, input_tokens: int, max_output_tokens: int) -> bool:
        return True

    def put(self, question: Any, response: Any, reservation: Any = None) -> None:
        self.puts[question.id] = response


def test_a_local_teacher_answers_through_llama_cpp_it_starts(smollm2: Any) -> None:
    """`distill.local.engine: llama.cpp`: the hf teacher's answers come from a llama.cpp it
    starts and stops, the same answers as its local engine's (f32), cached apart from them."""
    from frugal.questions import Question
    from frugal.teachers.local import HFTeacher, LocalTeacherConfig

    budget = BudgetConfig(max_thinking_tokens=24, min_thinking_tokens=8, max_answer_tokens=12)
    questions = [Question(id=f"q{i}", question=q, answer="0", source="test")
                 for i, q in enumerate(QUESTIONS[:4])]
    served = HFTeacher(LocalTeacherConfig(model=SMOLLM2, budget=budget, engine="llama.cpp",
                                          llama_cpp=EXACT))
    local = HFTeacher(LocalTeacherConfig(model=SMOLLM2, budget=budget), loaded=smollm2)
    before = _llama_servers()
    answers = {}
    for name, teacher in (("served", served), ("local", local)):
        sink = _Sink()
        teacher.run(questions, sink)
        answers[name] = {q: (r.completions[0].thinking, r.completions[0].answer)
                         for q, r in sink.puts.items()}
    assert len(answers["served"]) == 4 and answers["served"] == answers["local"]
    assert served.cache_params()["engine"] == "llama.cpp (f32)"
    assert "engine" not in local.cache_params()
    assert _llama_servers() <= before  # the teacher's server stopped with its run


def test_a_streaming_row_gets_its_tokens_while_llama_cpp_generates_them(
    engine: EndpointEngine,
) -> None:
    """A live job sees its tokens while they are generated (STREAM_CHUNK at a time), in
    order, with their sections, and exactly the tokens of the same row unstreamed."""
    budget = BudgetConfig(max_thinking_tokens=64, min_thinking_tokens=48, max_answer_tokens=32)
    seen: list[tuple[int, Any, bool, float]] = []
    job = Job(engine.format.generation_prompt(QUESTIONS[0]), budget, index=0, live=True,
              on_token=lambda t, section, forced: seen.append(
                  (t, section, forced, time.perf_counter())))
    results: list[GenerationResult] = []
    engine.run_jobs(ListSource([job], engine.format.encode), 1, results.append)
    result = results[0]
    assert [t for t, *_ in seen] == result.token_ids
    assert [str(s) for _, s, *_ in seen] == result.sections
    # The same tokens as the same row generated without streaming (greedy).
    assert engine.generate(QUESTIONS[:1], budget)[0].token_ids == result.token_ids
    generated = [when for _, _, forced, when in seen if not forced]
    # Tokens handed over together arrive within microseconds; requests are milliseconds apart.
    bursts = [1]
    for before, after in zip(generated, generated[1:], strict=False):
        if after - before < 1e-3:
            bursts[-1] += 1
        else:
            bursts.append(1)
    print(f"\n{len(generated)} generated tokens streamed over "
          f"{generated[-1] - generated[0]:.2f} s in bursts of {bursts}")
    assert result.answer_tokens > STREAM_CHUNK  # one request would hand them over at once
    assert max(bursts) <= STREAM_CHUNK


class _DropFirstRequest:
    """A TCP proxy to a server that reads the first request it gets and closes the connection
    without answering, as a server does with a keep-alive connection it is closing; later
    connections are passed through."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.dropped:
                self.dropped += 1
                client.recv(65536)
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with __import__("contextlib").suppress(OSError):
                    end.shutdown(2)

    def close(self) -> None:
        self.listener.close()


def test_a_request_the_server_closes_unanswered_is_sent_again(
    llama_cpp: EndpointConfig, engine: EndpointEngine, smollm2: Any
) -> None:
    from urllib.parse import urlparse

    proxy = _DropFirstRequest(urlparse(llama_cpp.base_url).port or 0)
    try:
        through = EndpointConfig(base_url=f"http://127.0.0.1:{proxy.port}/v1", model=SMOLLM2,
                                 api="llama.cpp")
        budget = BudgetConfig(max_thinking_tokens=24, min_thinking_tokens=12,
                              max_answer_tokens=8)
        retried = EndpointEngine(through, smollm2.tokenizer).generate(QUESTIONS[:1], budget)
    finally:
        proxy.close()
    assert proxy.dropped == 1
    direct = engine.generate(QUESTIONS[:1], budget)
    assert retried[0].token_ids == direct[0].token_ids
