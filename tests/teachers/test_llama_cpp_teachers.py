"""Real models teaching through llama.cpp's real server (built by `make llama-cpp`).

- The `openai` teacher against `llama-server` serving SmolLM2-135M-Instruct (a chat model with no
  reasoning channel, as most affordable teachers are), end to end through pool, distill and
  curate, with a pass-through proxy that records the usage the server reported: traces have the
  thinking the model wrote before its answer line, curation keeps them, and the ledger equals
  that usage times the prices.
- The `hf` teacher in `style: chat`: frugal starts llama.cpp itself, measures it, and sets each
  request's time limit from that speed.

Skipped, with the reason, where llama.cpp's server could not be built.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from frugal import curate, distill
from frugal.endpoint_config import EndpointConfig
from frugal.events import RecordedEvents
from frugal.ledger import TokenPrices, read_ledger
from frugal.llama_cpp_server import llama_cpp_available, serve_with_llama_cpp
from frugal.pool import PoolConfig
from frugal.pool import run as build_pool
from frugal.settings.curate import CurateConfig
from frugal.settings.distill import DistillConfig
from frugal.settings.engines import LlamaCppConfig
from frugal.settings.teachers import LocalTeacherConfig, OpenAITeacherConfig
from frugal.teachers.served_chat import request_timeout
from tests.conftest import SMOLLM2
from tests.usage_proxy import UsageProxy

pytestmark = pytest.mark.skipif(
    not llama_cpp_available(),
    reason="llama.cpp's server is not built here (make llama-cpp builds .llama.cpp/)",
)

# One-step word problems: SmolLM2-135M reasons about them in its reply and closes with an
# answer line ("The answer is 5."), right or wrong.
QUESTIONS = [
    ("There are 9 birds on a tree and 4 fly away. How many birds are left?", "5"),
    ("What is 5 plus 8?", "13"),
    ("Sara had 10 candies and ate 3. How many candies are left?", "7"),
    ("Tom has 3 apples and buys 4 more. How many apples does he have now?", "7"),
    ("A farmer has 12 cows and sells 5. How many cows does he have left?", "7"),
    ("What is 6 times 3?", "18"),
]
PRICES = TokenPrices(input_per_million=150.0, output_per_million=600.0)


def word_problems(run_dir: Path) -> int:
    source = run_dir.parent / f"{run_dir.name}-questions.jsonl"
    source.write_text("".join(json.dumps({"id": f"w{i}", "question": q, "answer": a,
                                          "domain": "word-problems"}) + "\n"
                              for i, (q, a) in enumerate(QUESTIONS)))
    return len(build_pool(PoolConfig(source=str(source)), run_dir).questions)


@pytest.fixture(scope="module")
def llama_server() -> Iterator[EndpointConfig]:
    with serve_with_llama_cpp(SMOLLM2, config=LlamaCppConfig(weights="q8_0", slots=4),
                              context_tokens=1024) as endpoint:
        yield endpoint


def test_the_openai_teacher_on_a_real_server_yields_kept_traces_billed_to_the_cent(
    tmp_path: Path, llama_server: EndpointConfig
) -> None:
    run_dir = tmp_path / "run"
    total = word_problems(run_dir)
    with UsageProxy(llama_server.base_url) as proxy:
        teacher = OpenAITeacherConfig(base_url=proxy.base_url, model=llama_server.model,
                                      temperature=0.0, max_tokens=160, concurrency=4,
                                      timeout=120.0)
        config = DistillConfig(teacher="openai", openai=teacher, prices=PRICES)
        events = RecordedEvents()
        result = distill.run(config, run_dir, events)
        server_billed = proxy.billed(PRICES.input_per_million, PRICES.output_per_million)
        calls = len(proxy.usages)

    assert calls == total == len(result.traces) and result.complete
    # What the ledger says is what the server's usage comes to at the prices, to the cent
    # (and closer: both are the same sum).
    ledger_dollars = read_ledger(run_dir).total_dollars
    print(f"{calls} calls: ledger ${ledger_dollars:.6f}, server usage at the prices "
          f"${server_billed:.6f}")
    assert ledger_dollars == pytest.approx(server_billed, abs=1e-9)
    assert server_billed > 0.1
    # A chat model without a reasoning channel: its thinking is the text before its answer line.
    with_thinking = [t for t in result.traces if t.thinking.strip()]
    assert len(with_thinking) >= total // 2
    assert all(t.thinking_from == "content" for t in with_thinking)
    # The first reply told what this teacher gives (with or without an answer line).
    (said,) = [n for n, _ in events.notes if n.startswith(f"teacher {llama_server.model}:")]
    assert "from its first reply" in said
    # A re-run pays for nothing.
    with UsageProxy(llama_server.base_url) as proxy:
        config.openai = teacher.model_copy(update={"base_url": proxy.base_url})
        assert distill.run(config, run_dir).calls == 0 and proxy.requests == 0

    # Curation keeps the traces with thinking (a 135M teacher is often wrong: correctness is
    # not what this test is about), and says why it dropped the others.
    curated = curate.run(CurateConfig(target=10, require_correct=False, tokenizer=SMOLLM2,
                                      format_patterns=[]), run_dir)
    assert {i.question.id for i in curated.selected} == {t.id for t in with_thinking}
    reasons = json.loads(curated.selection_path.read_text())["dropped"]
    assert all("no thinking" in d["reason"] for d in reasons.values())


def test_request_time_limits_follow_the_measured_speed() -> None:
    # 40 tokens/s over 8 busy slots is 5 a slot: 300 tokens take 60 s, twice that, + 60 s.
    assert request_timeout(40.0, 8, 300) == pytest.approx(2 * 60 + 60)
    assert request_timeout(20.0, 8, 300) > request_timeout(40.0, 8, 300)


def test_the_hf_teacher_in_chat_style_starts_llama_cpp_and_splits_its_answers(
    tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    total = word_problems(run_dir)
    local = LocalTeacherConfig(model=SMOLLM2, style="chat", engine="llama.cpp",
                               llama_cpp=LlamaCppConfig(weights="q8_0", slots=4))
    local.budget.max_thinking_tokens, local.budget.max_answer_tokens = 120, 40
    config = DistillConfig(teacher="hf", local=local, machine_price_per_hour=3.6)
    events = RecordedEvents()
    result = distill.run(config, run_dir, events)
    assert len(result.traces) == total and result.complete
    assert all(t.teacher == "hf" and t.thinking_from in ("content", "none")
               for t in result.traces)
    assert any(t.thinking_from == "content" and t.thinking for t in result.traces)
    (timing,) = [note for note, _ in events.notes if "tokens/s with its 4 slots busy" in note]
    assert "not asked again" in timing
    # Machine time is what a local teacher costs: $3.6/h is $0.001 a second.
    (entry,) = read_ledger(run_dir).entries
    assert entry.teacher_dollars == 0
    assert entry.compute_dollars == pytest.approx(entry.compute_seconds * 0.001, rel=1e-3)


def test_frugal_cost_measures_a_chat_teacher_on_the_server_it_will_run_on(
    tmp_path: Path, tiny_dir: Path
) -> None:
    from frugal.cost import estimate
    from frugal.recipes import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: r\nmodel: {tiny_dir}\nmachine_price_per_hour: 3.6\n"
        "pool: {per_family: 2, difficulties: [1]}\n"
        f"distill: {{teacher: hf, local: {{model: {SMOLLM2}, style: chat, engine: llama.cpp, "
        "llama_cpp: {weights: q8_0, slots: 4}, "
        "budget: {max_thinking_tokens: 100, max_answer_tokens: 20}}}\n"
        "curate: {target: 8}\n"
        "eval: {benchmark: {name: m, per_family: 1}, max_thinking_tokens: [8], "
        "max_answer_tokens: 8}\n")
    found = estimate(load_recipe(str(recipe)))
    # Worst case: every answer writes its whole limit, at the speed measured with 4 slots busy.
    assert found.teacher_output_tokens == 12 * 120
    assert 0 < found.teacher_seconds < found.teacher_output_tokens  # faster than 1 token/s
    assert found.teacher_dollars == pytest.approx(found.teacher_seconds * 0.001)
    assert "chat answers" in found.teacher_gives
