"""The server over real sockets with the official `openai` client, on the tiny model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from frugal.adapters import load_with_adapters, run_adapters
from frugal.generation import BudgetConfig, BudgetForcingEngine
from frugal.ledger import read_ledger
from frugal.serve import ServeConfig

from .conftest import API_KEY, Running, client, start

QUESTION = "What is 12 plus 30?"


def chat(server: Running, model: str = "tiny", **extra: object) -> object:
    return client(server).chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], extra_body=extra or None,
        max_tokens=6,
    )


def test_models_lists_base_and_adapters(server: Running) -> None:
    cards = {m.id: m for m in client(server).models.list().data}
    assert set(cards) == {"tiny", "alpha", "beta"}
    assert cards["alpha"].parent == "tiny" and cards["beta"].parent == "tiny"


def test_chat_returns_reasoning_apart_with_usage_and_cost(server: Running) -> None:
    reply = chat(server, max_thinking_tokens=7)
    message = reply.choices[0].message
    assert isinstance(message.content, str) and message.reasoning_content
    assert message.model_extra["reasoning"] == message.reasoning_content  # vLLM's newer name
    usage = reply.usage
    # The random model never closes its thinking: the budget is used exactly.
    assert usage.completion_tokens_details.reasoning_tokens == 7
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.model_extra["cost"] > 0
    assert reply.choices[0].finish_reason == "length"  # 6 answer tokens, never an end of turn


def test_budgets_alias_and_server_caps(server: Running) -> None:
    assert chat(server, thinking_token_budget=5).usage.completion_tokens_details \
        .reasoning_tokens == 5
    # Asking beyond the server's cap (64) gets the cap.
    capped = chat(server, max_thinking_tokens=10_000)
    assert capped.usage.completion_tokens_details.reasoning_tokens == 64
    default = chat(server)
    assert default.usage.completion_tokens_details.reasoning_tokens == 8


def test_streaming_matches_the_whole_reply(server: Running) -> None:
    whole = chat(server, max_thinking_tokens=9)
    stream = client(server).chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=6,
        stream=True, stream_options={"include_usage": True},
        extra_body={"max_thinking_tokens": 9},
    )
    reasoning, content, usage, finish = "", "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert reasoning.strip() == whole.choices[0].message.reasoning_content
    assert content.strip() == whole.choices[0].message.content
    assert usage.completion_tokens_details.reasoning_tokens == 9 and finish == "length"


def test_completions_continue_the_raw_prompt_plain_and_streamed(server: Running) -> None:
    api = client(server)
    reply = api.completions.create(model="alpha", prompt=QUESTION, max_tokens=4)
    assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens_details.reasoning_tokens == 0  # no thinking opened
    text = "".join(c.choices[0].text for c in api.completions.create(
        model="alpha", prompt=QUESTION, max_tokens=4, stream=True) if c.choices)
    assert text == reply.choices[0].text and text


def test_each_adapter_answers_as_it_does_alone(server: Running, served_run: Path,
                                               lively_dir: Path) -> None:
    # Sent together, the three models share decode steps (PEFT's mixed batch)...
    with ThreadPoolExecutor(6) as pool:
        served = list(pool.map(
            lambda m: chat(server, m, max_thinking_tokens=12).choices[0].message
            .reasoning_content, ["tiny", "alpha", "beta"] * 2))
    assert served[:3] == served[3:]
    assert len(set(served[:3])) == 3  # the adapters change the output
    # ...and each matches that model run on its own, outside the server.
    adapters = run_adapters(served_run)
    for name, text in zip(["tiny", "alpha", "beta"], served[:3], strict=True):
        chosen = {} if name == "tiny" else {name: adapters[name]}
        loaded = load_with_adapters(str(lively_dir), chosen)
        alone = BudgetForcingEngine(loaded.model, loaded.tokenizer).generate(
            [QUESTION], BudgetConfig(max_thinking_tokens=12, max_answer_tokens=6))[0]
        assert alone.thinking == text, name


def test_key_is_required_and_unknown_models_are_404(server: Running) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="wrong").models.list()
    raw = httpx.post(f"{server.base_url}/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    assert raw.status_code == 401
    with pytest.raises(openai.NotFoundError) as error:
        chat(server, model="gamma")
    assert "alpha" in str(error.value) and "tiny" in str(error.value)


def test_metrics_report_requests_tokens_batches_and_price(server: Running) -> None:
    chat(server)
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics",
                     headers={"Authorization": f"Bearer {API_KEY}"}).text
    for name in ("frugal_requests_total", "frugal_tokens_total", "frugal_batch_size_bucket",
                 "frugal_request_latency_seconds_bucket", "frugal_dollars_per_million_tokens"):
        assert name in text
    price = next(line for line in text.splitlines()
                 if line.startswith("frugal_dollars_per_million_tokens "))
    assert float(price.split()[1]) > 0
    assert httpx.get(f"http://127.0.0.1:{server.port}/health").json() == {"status": "ok"}


def test_concurrent_requests_share_decode_steps(server: Running) -> None:
    before = server.server.serving.metrics.batch_size.collect()[0]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: chat(server, max_thinking_tokens=24), range(8)))
    after = server.server.serving.metrics.batch_size.collect()[0]

    def at_most_one(samples: list) -> float:
        return next(s.value for s in samples if s.name.endswith("_bucket")
                    and s.labels["le"] == "1.0")

    def total(samples: list) -> float:
        return next(s.value for s in samples if s.name.endswith("_count"))

    steps = total(after.samples) - total(before.samples)
    single = at_most_one(after.samples) - at_most_one(before.samples)
    assert steps > 0 and single < steps / 2  # most steps decoded several rows at once


def test_ledger_gets_the_serving_session(served_run: Path, tmp_path: Path) -> None:
    running = start(ServeConfig(target=str(served_run), served_name="tiny",
                                machine_price_per_hour=1.0, default_thinking_tokens=4))
    client(running).chat.completions.create(
        model="beta", messages=[{"role": "user", "content": QUESTION}], max_tokens=3)
    running.stop()
    entry = read_ledger(served_run).entries[-1]
    assert entry.stage == "serve" and entry.tokens and entry.tokens > 0
    assert entry.dollars_per_million_tokens and entry.dollars > 0
