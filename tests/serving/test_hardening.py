"""The server under hostile clients, browsers and overload, over real sockets.

Each hostile request has the status it must get; a browser-style request is refused; a client
that leaves has its row cancelled (counted in /metrics) whether it waited or decoded; a flood
of clients ends with only 200s and 429s, bounded memory and an empty queue; the event loop
answers /health while a 1 MiB prompt is tokenised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from frugal.serve import ServeConfig, build, uvicorn_config
from frugal.settings.engines import LlamaCppConfig

from .conftest import API_KEY, Running, start

QUESTION = "What is 12 plus 30?"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
JSON_AUTH = AUTH | {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def roomy(served_run: Path) -> Iterator[Running]:
    """Long thinking allowed (so requests can be left mid-way), a short body timeout and
    deadline, two decode slots and a queue of four."""
    running = start(ServeConfig(
        target=str(served_run), served_name="tiny", api_key=API_KEY, max_batch_size=2,
        max_waiting=4, max_answer_tokens=16, max_thinking_tokens=100_000,
        default_thinking_tokens=8, max_prompt_tokens=60_000, dtype="float32",
        request_timeout_s=4, body_timeout_s=1,
    ))
    yield running
    running.stop()


def root(server: Running) -> str:
    return f"http://127.0.0.1:{server.port}"


def cancelled(server: Running) -> dict[str, float]:
    metric = server.server.serving.metrics.cancelled.collect()[0]
    return {s.labels["where"]: s.value for s in metric.samples if s.name.endswith("_total")}


def wait_until(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def long_chat(thinking: int = 50_000) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 4, "max_thinking_tokens": thinking}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.fixture(scope="module")
def llama_cpp_server(served_run: Path) -> Iterator[Running]:
    """The same server with llama.cpp's server generating behind it."""
    from frugal.llama_cpp_server import llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama.cpp's server is not built here (make llama-cpp builds .llama.cpp/)")
    running = start(ServeConfig(
        target=str(served_run), served_name="tiny", api_key=API_KEY, max_batch_size=8,
        max_answer_tokens=16, max_thinking_tokens=64, default_thinking_tokens=8,
        max_prompt_tokens=256, machine_price_per_hour=0.36, engine="llama.cpp",
        llama_cpp=LlamaCppConfig(weights="f32", slots=4),
    ))
    yield running
    running.stop()


@pytest.mark.parametrize("engine", ["local", "llama.cpp"])
def test_every_hostile_request_gets_its_status_and_the_server_stays_up(
    engine: str, request: pytest.FixtureRequest
) -> None:
    server: Running = request.getfixturevalue(
        "server" if engine == "local" else "llama_cpp_server")
    good = {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 3, "max_thinking_tokens": 4}

    def chat(**change: Any) -> bytes:
        return json.dumps(good | change).encode()

    def user(content: Any) -> bytes:
        return chat(messages=[{"role": "user", "content": content}])

    plain = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, bytes | None, dict[str, str], int]] = [
        ("not JSON", "chat", b"{not json", JSON_AUTH, 400),
        ("empty body", "chat", b"", JSON_AUTH, 400),
        ("a list", "chat", b"[]", JSON_AUTH, 400),
        ("null", "chat", b"null", JSON_AUTH, 400),
        ("a string", "chat", b'"text"', JSON_AUTH, 400),
        ("not UTF-8", "chat", b"\xff\xfe\x00", JSON_AUTH, 400),
        ("no messages", "chat", json.dumps({"model": "tiny"}).encode(), JSON_AUTH, 400),
        ("no model", "chat", json.dumps({"messages": good["messages"]}).encode(), JSON_AUTH,
         400),
        ("empty messages", "chat", chat(messages=[]), JSON_AUTH, 400),
        ("messages a string", "chat", chat(messages="hello"), JSON_AUTH, 400),
        ("unknown role", "chat", chat(messages=[{"role": "wizard", "content": "x"}]), JSON_AUTH,
         400),
        ("assistant last", "chat", chat(messages=[{"role": "assistant", "content": "x"}]),
         JSON_AUTH, 400),
        ("image part", "chat", user([{"type": "image_url",
                                      "image_url": {"url": "file:///etc/passwd"}}]), JSON_AUTH,
         400),
        ("max_tokens -5", "chat", chat(max_tokens=-5), JSON_AUTH, 400),
        ("max_tokens 0", "chat", chat(max_tokens=0), JSON_AUTH, 400),
        ("max_tokens text", "chat", chat(max_tokens="lots"), JSON_AUTH, 400),
        ("thinking -1", "chat", chat(max_thinking_tokens=-1), JSON_AUTH, 400),
        ("num_waits -3", "chat", chat(num_waits=-3), JSON_AUTH, 400),
        ("temperature 99", "chat", chat(temperature=99), JSON_AUTH, 400),
        ("top_p 0", "chat", chat(top_p=0), JSON_AUTH, 400),
        ("n 5", "chat", chat(n=5), JSON_AUTH, 400),
        ("model path", "chat", chat(model="../../etc/passwd"), JSON_AUTH, 404),
        ("model dir", "chat", chat(model="/tmp"), JSON_AUTH, 404),
        ("model number", "chat", chat(model=42), JSON_AUTH, 400),
        ("model null", "chat", chat(model=None), JSON_AUTH, 400),
        ("prompt too long", "chat", user("word " * 2000), JSON_AUTH, 400),
        ("5000 braces", "chat", b"{" * 5000, JSON_AUTH, 400),
        ("5000-digit integer", "chat", chat(x=0)[:-1] + b', "n": ' + b"9" * 5000 + b"}",
         JSON_AUTH, 400),
        ("200,000 nested lists", "chat", nested(200_000), JSON_AUTH, 400),
        ("deep unknown field", "chat",
         chat(x=0)[:-1] + b', "deep": ' + nested(100_000) + b"}", JSON_AUTH, 400),
        ("seed text", "chat", chat(seed="x"), JSON_AUTH, 400),
        ("stream maybe", "chat", chat(stream="maybe"), JSON_AUTH, 400),
        ("stream_options 7", "chat", chat(stream_options=7), JSON_AUTH, 400),
        ("20 stops", "chat", chat(stop=[f"s{i}" for i in range(20)]), JSON_AUTH, 400),
        ("logprobs", "chat", chat(logprobs=True, top_logprobs=2), JSON_AUTH, 400),
        ("no key", "chat", chat(), plain, 401),
        ("wrong key", "chat", chat(), {"Authorization": "Bearer nope"} | plain, 401),
        ("basic auth", "chat", chat(), {"Authorization": f"Basic {API_KEY}"} | plain, 401),
        ("3 MiB body", "chat", b"x" * (3 << 20), JSON_AUTH, 413),
        ("text/plain", "chat", chat(), AUTH | {"Content-Type": "text/plain"}, 415),
        ("form", "chat", chat(), AUTH | {"Content-Type": "application/x-www-form-urlencoded"},
         415),
        ("no content type", "chat", chat(), AUTH, 415),
        ("foreign Host", "chat", chat(), JSON_AUTH | {"Host": "evil.example"}, 400),
        ("completions no prompt", "completions", json.dumps({"model": "tiny"}).encode(),
         JSON_AUTH, 400),
        ("completions empty", "completions",
         json.dumps({"model": "tiny", "prompt": ""}).encode(), JSON_AUTH, 400),
        ("two prompts", "completions",
         json.dumps({"model": "tiny", "prompt": ["a", "b"]}).encode(), JSON_AUTH, 400),
        ("prompt a number", "completions",
         json.dumps({"model": "tiny", "prompt": 12}).encode(), JSON_AUTH, 400),
        ("negative token id", "completions",
         json.dumps({"model": "tiny", "prompt": [5, -1]}).encode(), JSON_AUTH, 400),
        ("unknown model", "completions",
         json.dumps({"model": "nope", "prompt": "hi"}).encode(), JSON_AUTH, 404),
        ("completions max_tokens -1", "completions",
         json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": -1}).encode(), JSON_AUTH,
         400),
        ("lone surrogate", "completions", b'{"model": "tiny", "prompt": "\\ud800"}', JSON_AUTH,
         400),
        ("300,000 characters", "completions",
         json.dumps({"model": "tiny", "prompt": "z" * 300_000}).encode(), JSON_AUTH, 400),
        ("models no key", "models", None, {}, 401),
        ("models huge key", "models", None, {"Authorization": "Bearer " + "A" * 10_000}, 401),
        ("docs", "docs", None, AUTH, 404),
        ("openapi", "openapi", None, AUTH, 404),
        ("metrics no key", "metrics", None, {}, 401),
        # Extreme but legal: clamped, or ignored with a log line.
        ("content null", "chat", user(None), JSON_AUTH, 200),
        ("min 10**12", "chat", chat(min_thinking_tokens=10**12), JSON_AUTH, 200),
        ("budget 0", "chat", chat(thinking_token_budget=0), JSON_AUTH, 400),
        ("max_tokens 10**15", "chat", chat(max_tokens=10**15), JSON_AUTH, 200),
        ("unknown field", "chat", chat(unknown_field={"deep": [1, 2]}), JSON_AUTH, 200),
        ("control characters", "chat", user("\u0000\u202e"), JSON_AUTH, 200),
    ]
    assert len(cases) >= 60
    paths = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
             "models": "/v1/models", "docs": "/docs", "openapi": "/openapi.json",
             "metrics": "/metrics"}
    table: list[tuple[str, int, int]] = []
    for name, kind, body, headers, expected in cases:
        url = root(server) + paths[kind]
        if body is None:
            reply = httpx.get(url, headers=headers, timeout=60)
        else:
            reply = httpx.post(url, headers=headers, content=body, timeout=60)
        table.append((name, expected, reply.status_code))
        if 400 <= reply.status_code < 500 and reply.status_code not in (404,) and \
                reply.headers.get("content-type") == "application/json":
            error = reply.json()["error"]
            assert isinstance(error["code"], str) and error["message"], name
    print("\n".join(f"{name:28} expected {want} got {got}" for name, want, got in table))
    assert [(n, got) for n, _, got in table] == [(n, want) for n, want, _ in table]
    assert httpx.get(root(server) + "/health").json() == {"status": "ok"}
    reply = httpx.post(root(server) + paths["chat"], headers=JSON_AUTH,
                       content=json.dumps(good).encode(), timeout=60)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["reasoning"]


def test_a_browser_style_request_is_refused_without_a_key(served_run: Path) -> None:
    """A web page can POST text/plain without a CORS preflight and, by DNS rebinding, reach a
    local server under its own host name: both are refused even when no key is set."""
    running = start(ServeConfig(target=str(served_run), served_name="tiny",
                                default_thinking_tokens=2, max_answer_tokens=2))
    try:
        url = f"{root(running)}/v1/chat/completions"
        body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
        no_cors = httpx.post(url, content=body, headers={"Content-Type": "text/plain"})
        assert no_cors.status_code == 415
        assert no_cors.json()["error"]["code"] == "unsupported_media_type"
        rebound = httpx.post(url, content=body, headers={
            "Content-Type": "application/json", "Host": f"attacker.example:{running.port}"})
        assert rebound.status_code == 400
        local = httpx.post(url, content=body, headers={
            "Content-Type": "application/json", "Host": f"localhost:{running.port}"})
        assert local.status_code == 200
        assert httpx.get(f"{root(running)}/metrics").status_code == 200  # no key: open
    finally:
        running.stop()


def test_network_exposure_needs_a_key_or_an_explicit_flag(served_run: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRUGAL_API_KEY", raising=False)
    with pytest.raises(ValueError, match="--allow-no-key"):
        build(ServeConfig(target=str(served_run), host="0.0.0.0"))
    for allowed in (ServeConfig(target=str(served_run), host="0.0.0.0", allow_no_key=True),
                    ServeConfig(target=str(served_run), host="0.0.0.0", api_key="k"),
                    ServeConfig(target=str(served_run), host="::1")):
        server = build(allowed)
        server.close()


def test_docs_and_public_metrics_only_when_configured(served_run: Path) -> None:
    config = ServeConfig(target=str(served_run), served_name="tiny", api_key=API_KEY,
                         docs=True, public_metrics=True, max_connections=7, keep_alive_s=3)
    running = start(config)
    try:
        assert httpx.get(f"{root(running)}/openapi.json").status_code == 200
        assert httpx.get(f"{root(running)}/metrics").status_code == 200
        uv = uvicorn_config(running.server, config)
        assert uv.limit_concurrency == 7 and uv.timeout_keep_alive == 3
    finally:
        running.stop()


def test_a_slow_body_is_cut_off(roomy: Running) -> None:
    with socket.create_connection(("127.0.0.1", roomy.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + API_KEY.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo")
        started = time.monotonic()
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 408") and time.monotonic() - started < 5


def test_a_client_that_leaves_mid_stream_is_cancelled(roomy: Running) -> None:
    before = cancelled(roomy).get("decoding", 0)
    with httpx.stream("POST", f"{roomy.base_url}/chat/completions", headers=AUTH,
                      json=long_chat() | {"stream": True}) as response:
        for line in response.iter_lines():
            if '"reasoning"' in line:
                break  # hang up after the first thinking token
    assert wait_until(lambda: cancelled(roomy).get("decoding", 0) == before + 1)
    assert wait_until(lambda: roomy.server.engine._in_flight == 0)


def test_a_client_that_leaves_while_waiting_is_dropped_before_its_prompt(
        roomy: Running) -> None:
    engine = roomy.server.engine
    before = cancelled(roomy)
    with httpx.Client(headers=AUTH, timeout=httpx.Timeout(60, read=1.0)) as http:
        occupy = [threading.Thread(target=_give_up, args=(http, roomy, 1.5)) for _ in range(2)]
        for thread in occupy:
            thread.start()
        assert wait_until(lambda: engine._in_flight == 2)  # both decode slots taken
        with pytest.raises(httpx.ReadTimeout):  # a non-streamed request, left while queued
            http.post(f"{roomy.base_url}/chat/completions", json=long_chat())
        for thread in occupy:
            thread.join()
    assert wait_until(lambda: engine._in_flight == 0 and engine.waiting() == 0)
    after = cancelled(roomy)
    assert after.get("queued", 0) == before.get("queued", 0) + 1
    assert after.get("decoding", 0) == before.get("decoding", 0) + 2


def _give_up(http: httpx.Client, server: Running, after_s: float) -> None:
    with contextlib.suppress(httpx.ReadTimeout):  # it gives up: that is the point
        http.post(f"{server.base_url}/chat/completions", json=long_chat(),
                  timeout=httpx.Timeout(60, read=after_s))


def test_a_non_streamed_request_past_its_deadline_gets_504(roomy: Running) -> None:
    before = cancelled(roomy).get("decoding", 0)
    started = time.monotonic()
    reply = httpx.post(f"{roomy.base_url}/chat/completions", headers=AUTH, json=long_chat(),
                       timeout=60)
    assert reply.status_code == 504 and reply.json()["error"]["code"] == "timeout"
    assert 4 <= time.monotonic() - started < 8
    assert wait_until(lambda: cancelled(roomy).get("decoding", 0) == before + 1)


def test_health_answers_while_a_1_mib_prompt_is_tokenised(roomy: Running) -> None:
    prompt = "word " * 210_000  # 1 MiB, about 210,000 tokens: tokenised, then refused
    result: dict[str, Any] = {}

    def send() -> None:
        result["reply"] = httpx.post(
            f"{roomy.base_url}/chat/completions", headers=AUTH, timeout=60,
            json={"model": "tiny", "messages": [{"role": "user", "content": prompt}]})

    sender = threading.Thread(target=send)
    latencies = []
    with httpx.Client() as http:
        http.get(f"{root(roomy)}/health")  # connected before the big request starts
        sender.start()
        while sender.is_alive():
            started = time.perf_counter()
            assert http.get(f"{root(roomy)}/health").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
    sender.join()
    reply = result["reply"]
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "context_length_exceeded"
    assert "210" in reply.json()["error"]["message"]  # it was counted, so it was tokenised
    print(f"/health during the 1 MiB prompt: {len(latencies)} answers, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert len(latencies) >= 5 and max(latencies) < 0.1


def test_unknown_field_warnings_are_escaped_and_rate_limited(
        server: Running, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from frugal.serving.openai_serving import UNKNOWN_FIELD_LOG_EVERY_S, _ThrottledLog

    # A fresh throttle: an earlier test's unknown field must not have used up this window.
    monkeypatch.setattr(server.server.serving, "_unknown_log",
                        _ThrottledLog(UNKNOWN_FIELD_LOG_EVERY_S))
    hostile = "evil\n\x1b[31mFAKE: request from admin"
    with caplog.at_level(logging.WARNING, logger="frugal.serve"):
        for _ in range(5):
            reply = httpx.post(f"{server.base_url}/chat/completions", headers=AUTH, timeout=60,
                               json={"model": "tiny", "max_tokens": 1, "max_thinking_tokens": 1,
                                     "messages": [{"role": "user", "content": "hi"}],
                                     hostile: 1})
            assert reply.status_code == 200
    lines = [r.getMessage() for r in caplog.records if "unknown field" in r.getMessage()]
    assert len(lines) == 1  # one per 10 s, whatever the client sends
    assert "\n" not in lines[0] and "\x1b" not in lines[0] and "evil" in lines[0]


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_a_flood_of_clients_gets_only_200s_and_429s(served_run: Path) -> None:
    running = start(ServeConfig(
        target=str(served_run), served_name="tiny", api_key=API_KEY, max_batch_size=8,
        max_waiting=24, max_answer_tokens=4, max_thinking_tokens=64, default_thinking_tokens=8,
        dtype="float32"))
    engine = running.server.engine
    clients, requests = 120, 480
    statuses: Counter[str] = Counter()
    retry_after: set[str] = set()
    peak = [_rss_mb()]
    baseline = peak[0]

    async def client_loop(number: int, http: httpx.AsyncClient) -> None:
        gives_up = number % 3 == 0  # a third of the clients time out early
        for _ in range(requests // clients):
            stream = number % 4 == 1
            body = {"model": ["tiny", "alpha", "beta"][number % 3], "max_tokens": 4,
                    "max_thinking_tokens": 8 + number % 24, "stream": stream,
                    "messages": [{"role": "user", "content": f"{QUESTION} #{number}"}]}
            try:
                reply = await http.post(f"{running.base_url}/chat/completions", json=body,
                                        timeout=0.3 if gives_up else 120)
                statuses[str(reply.status_code)] += 1
                if reply.status_code == 429:
                    retry_after.add(reply.headers["retry-after"])
            except httpx.TimeoutException:
                statuses["client gave up"] += 1
            except httpx.TransportError as error:
                if gives_up:  # its own cancelled connections, torn down under it
                    statuses["client gave up"] += 1
                    continue
                kind = "stream" if stream else "whole"  # counted, so a failure says what
                statuses[f"{type(error).__name__} ({kind}): {error}"] += 1

    async def flood() -> float:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        # The clients that give up have their own pool: a connection closed by a timeout is
        # never handed to a client that waits for its answer.
        async with httpx.AsyncClient(headers=AUTH, limits=limits) as waiting, \
                httpx.AsyncClient(headers=AUTH, limits=limits) as impatient:
            started = time.monotonic()
            await asyncio.gather(*(client_loop(n, impatient if n % 3 == 0 else waiting)
                                   for n in range(clients)))
            return time.monotonic() - started

    sampling = True

    def sample() -> None:
        while sampling:
            peak.append(_rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        seconds = asyncio.run(flood())
        drain_started = time.monotonic()
        drained = wait_until(lambda: engine._in_flight == 0 and engine.waiting() == 0, 30)
        drain = time.monotonic() - drain_started
    finally:
        sampling = False
        sampler.join()
    healthy = httpx.get(f"{root(running)}/health").status_code
    after = httpx.post(f"{running.base_url}/chat/completions", headers=AUTH, timeout=60, json={
        "model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    running.stop()
    print(f"flood: {requests} requests from {clients} clients in {seconds:.1f} s: "
          f"{dict(statuses)}; Retry-After {sorted(retry_after)}; RSS {baseline:.0f} MB -> "
          f"peak {max(peak):.0f} MB; drained in {drain:.2f} s")
    assert sum(statuses.values()) == requests
    assert set(statuses) <= {"200", "429", "client gave up"}, statuses
    assert statuses["200"] > 0 and statuses["429"] > 0 and statuses["client gave up"] > 0
    assert retry_after and all(int(value) >= 1 for value in retry_after)
    assert drained and healthy == 200 and after.status_code == 200, (drained, healthy, after)
    assert max(peak) - baseline < 500, peak  # bounded: the queue, not the clients, sets the size


def test_a_stream_dropped_before_its_first_step_is_cancelled(roomy: Running) -> None:
    """A response cancelled before it starts never runs its stream: the row is cancelled
    anyway, when the stream is dropped, instead of decoding to its cap for nobody."""
    from frugal.serving.protocol import ChatCompletionRequest

    serving = roomy.server.serving
    before = cancelled(roomy)

    async def start_and_drop() -> None:
        job = serving.prepare_chat(ChatCompletionRequest.model_validate(long_chat()))
        stream = serving.stream(job, chat=True, include_usage=False)
        del stream  # never iterated, as when the client leaves before the response starts

    asyncio.run(start_and_drop())
    assert wait_until(lambda: sum(cancelled(roomy).values()) == sum(before.values()) + 1)
    assert wait_until(lambda: roomy.server.engine._in_flight == 0)
