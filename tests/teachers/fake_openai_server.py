"""A real OpenAI-compatible chat-completions server for tests, with scripted faults.

Teachers are tested against real sockets and the official client, so what is proven is what
happens in production: status codes, headers, timeouts and broken bodies travel over HTTP. The
server is a FastAPI app served by uvicorn, either in a background thread (`FakeOpenAIServer` as a
context manager) or as its own process::

    python -m tests.teachers.fake_openai_server --port 8123 --state-file /tmp/state.json

It bills like a provider: every call it answers with a body is billed at the usage it reports (or
would have reported), usable or not, and so is a call whose client hung up while it was being
generated (the provider did the work); error statuses (429, 5xx, 4xx) are not billed. Output
respects the request's `max_tokens` (a reply that would be longer is cut there, finish_reason
"length"). `billed_dollars` is what a provider's invoice would say, at `prices` per million
tokens (input, output; cached input at the input price), so tests compare the ledger with it.

It counts calls per prompt (keyed by the last user message's content), total calls, successful
answers and the most requests ever in flight at once. The in-thread server's counts are readable
directly (`server.calls`, `server.snapshot()`); every server, in a thread or standalone, can also
write them to a JSON state file when each call arrives and when it is answered, so a test that
SIGKILLs a client mid-run can still count what the server saw.

Faults are scripted per prompt: `plan={prompt: [fault, ...]}` applies one fault per call, in
order, then answers normally; `fail_forever={prompt: fault}` applies the fault on every call.
A fault is a tuple (or a bare name when it takes no argument):

- ``("429", retry_after)``: 429; `retry_after` seconds goes in ``Retry-After`` (a str is sent
  verbatim, e.g. an HTTP date; None sends no header)
- ``("429_ms", milliseconds)``: 429 with ``retry-after-ms``
- ``("500",)``: 500 with an OpenAI-style error body
- ``("status", code)``: any status code with an error body (e.g. 400, 404, 503)
- ``("timeout", seconds)``: sleep that long (longer than the client's timeout, which gives
  up), or until the client hangs up; then answer normally
- ``("malformed",)``: 200, ``content-type: application/json``, a body that is not JSON
- ``("empty_choices",)``: 200 with ``"choices": []``
- ``("no_content",)``: 200 with a message that has neither content nor reasoning
- ``("length_empty",)``: 200, empty content, ``finish_reason: "length"`` and usage of the full
  ``max_tokens`` (a reasoning API whose hidden reasoning used up the output cap)
- ``("no_usage",)``: a normal answer whose body has no ``usage`` (still billed)
- ``("odd_shape",)``: 200 JSON whose first choice's message is a string (billed)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

Fault = tuple[Any, ...] | str
# Where the reply puts its thinking: a reasoning field, a <think> block, the text before the
# answer in content (a chat model without a reasoning channel), or nowhere: billed as
# reasoning tokens and not returned (OpenAI's reasoning models).
ReasoningMode = Literal["reasoning_content", "reasoning", "think", "content", "hidden"]
# (thinking, answer) for a prompt; the default thinks about the question and answers 42.
ReplyFn = Callable[[str], tuple[str, str]]

PROMPT_TOKENS = 11  # fixed, so tests can assert usage parsing exactly
CACHED_TOKENS = 3


def default_reply(prompt: str) -> tuple[str, str]:
    return f"Let me think about: {prompt}", "Final Answer: 42"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 with call counting and fault injection."""

    def __init__(
        self,
        *,
        port: int = 0,
        delay: float = 0.0,
        plan: Mapping[str, Sequence[Fault]] | None = None,
        fail_forever: Mapping[str, Fault] | None = None,
        reply: ReplyFn | None = None,
        reasoning_mode: ReasoningMode = "reasoning_content",
        api_key: str | None = None,
        model: str = "fake-teacher",
        state_file: str | Path | None = None,
        prices: tuple[float, float] = (1.0, 10.0),
    ) -> None:
        self.port = port or free_port()
        self.delay = delay  # seconds each answered call takes, so concurrency is observable
        self.plan: dict[str, list[Fault]] = {k: list(v) for k, v in (plan or {}).items()}
        self.fail_forever: dict[str, Fault] = dict(fail_forever or {})
        self.reply = reply or default_reply
        self.reasoning_mode: ReasoningMode = reasoning_mode
        self.api_key = api_key
        self.model = model
        self.state_file = Path(state_file) if state_file is not None else None
        self.prices = prices  # dollars per million (input, output) tokens

        # Counters are written on the server's event loop and read from the test's thread.
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # requests received, per prompt
        self.answered: Counter[str] = Counter()  # successful answers sent, per prompt
        self.abandoned: Counter[str] = Counter()  # clients gone before the answer: still billed
        self.billed_calls = 0
        self.billed_dollars = 0.0
        self.last_answer_at = 0.0  # time.monotonic() of the last answer sent
        self.total_calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[dict[str, Any]] = []  # request bodies, in arrival order
        self.arrivals: dict[str, list[float]] = {}  # prompt -> time.monotonic() of each call
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total_calls": self.total_calls,
                "calls": dict(self.calls),
                "answered": dict(self.answered),
                "abandoned": dict(self.abandoned),
                "max_in_flight": self.max_in_flight,
                "billed_calls": self.billed_calls,
                "billed_dollars": self.billed_dollars,
            }

    def _bill(self, prompt_tokens: int, completion_tokens: int) -> None:
        """What the provider's invoice adds for one call it worked on."""
        dollars = (prompt_tokens * self.prices[0] + completion_tokens * self.prices[1]) / 1e6
        with self._lock:
            self.billed_calls += 1
            self.billed_dollars += dollars

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        # Write-then-rename so a reader never sees a half-written file.
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def _next_fault(self, prompt: str) -> Fault | None:
        with self._lock:
            if prompt in self.fail_forever:
                return self.fail_forever[prompt]
            queue = self.plan.get(prompt)
            return queue.pop(0) if queue else None

    # ------------------------------------------------------------------ app

    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            body = await request.json()
            prompt = _user_prompt(body)
            with self._lock:
                self.requests.append(body)
                self.arrivals.setdefault(prompt, []).append(time.monotonic())
                self.calls[prompt] += 1
                self.total_calls += 1
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._write_state()
            try:
                # Checked after counting, so a test can prove a 401 is not retried.
                expected = None if self.api_key is None else f"Bearer {self.api_key}"
                if expected is not None and request.headers.get("authorization") != expected:
                    return _error(401, "Incorrect API key provided.", "invalid_api_key")
                return await self._respond(request, body, prompt)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return app

    async def _respond(self, request: Request, body: dict[str, Any], prompt: str) -> Response:
        name, args = _split_fault(self._next_fault(prompt))
        if name == "429":
            retry_after = args[0] if args else None
            headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
            return _error(429, "Rate limit reached.", "rate_limit_exceeded", headers)
        if name == "429_ms":
            return _error(
                429, "Rate limit reached.", "rate_limit_exceeded", {"retry-after-ms": str(args[0])}
            )
        if name == "500":
            return _error(500, "The server had an error.", "server_error")
        if name == "status":
            return _error(int(args[0]), f"Scripted HTTP {args[0]}.", "scripted")
        if name == "timeout":
            # Outlast the client's timeout, but stop early once it hangs up, so that shutting
            # the server down does not wait for a sleep nobody is waiting on.
            deadline = time.monotonic() + float(args[0])
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.05)
        elif name is not None and name not in (
            "empty_choices", "no_content", "length_empty", "no_usage", "malformed", "odd_shape"
        ):
            raise ValueError(f"unknown fault {name!r}")

        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 1 << 30)
        thinking, answer = self.reply(prompt)
        words = (thinking + " " + answer).split()
        completion_tokens = min(len(words), max_tokens)
        finish_reason = "stop"
        if len(words) > max_tokens:
            # Cut at the cap like an engine does: thinking first, so the answer goes missing.
            thinking, answer, finish_reason = " ".join(words[:max_tokens]), "", "length"
        if name == "length_empty":
            completion_tokens, finish_reason = max_tokens, "length"
        if self.delay:
            await asyncio.sleep(self.delay)
        if await request.is_disconnected():
            # The client died or gave up while we generated: a provider has done the work
            # and bills it, though nobody receives the reply.
            with self._lock:
                self.abandoned[prompt] += 1
            self._bill(PROMPT_TOKENS, completion_tokens)
            self._write_state()
            return Response(status_code=499)
        self._bill(PROMPT_TOKENS, completion_tokens)
        if name == "malformed":
            self._write_state()
            return Response(
                '{"id": "chatcmpl-broken", "choices": [', 200, media_type="application/json"
            )
        if name == "odd_shape":
            self._write_state()
            return JSONResponse({"id": "chatcmpl-odd", "object": "chat.completion",
                                 "created": 0, "model": self.model,
                                 "choices": [{"index": 0, "message": "hi"}]})
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        if name == "no_content":
            message = {"role": "assistant", "content": None}
        elif name == "length_empty":
            message = {"role": "assistant", "content": ""}
        elif self.reasoning_mode == "think":
            message["content"] = f"<think>\n{thinking}\n</think>\n\n{answer}"
        elif self.reasoning_mode == "content":
            message["content"] = f"{thinking}\n\n{answer}"
        elif self.reasoning_mode == "hidden":
            pass  # billed below as reasoning tokens, never sent
        else:
            message[self.reasoning_mode] = thinking
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{self.total_calls}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": []
            if name == "empty_choices"
            else [{"index": 0, "message": message, "finish_reason": finish_reason}],
        }
        if name != "no_usage":
            payload["usage"] = {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": completion_tokens,
                "total_tokens": PROMPT_TOKENS + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
            }
            if self.reasoning_mode == "hidden":
                payload["usage"]["completion_tokens_details"] = {
                    "reasoning_tokens": min(len(thinking.split()), completion_tokens)}
        if name in (None, "no_usage"):
            with self._lock:
                self.answered[prompt] += 1
                self.last_answer_at = time.monotonic()
        self._write_state()
        return JSONResponse(payload)

    # ------------------------------------------------------------------ running

    def _config(self) -> uvicorn.Config:
        # A short graceful shutdown, so a stuck handler can never hold a test up for long.
        return uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=1,
            lifespan="off",
        )

    def start(self) -> FakeOpenAIServer:
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"fake OpenAI server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the standalone-process mode)."""
        self._write_state()  # an empty state file says "up, no calls yet"
        uvicorn.Server(self._config()).run()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _split_fault(fault: Fault | None) -> tuple[str | None, tuple[Any, ...]]:
    """("429", 1.5) -> ("429", (1.5,)); "500" -> ("500", ()); None -> (None, ())."""
    if fault is None:
        return None, ()
    if isinstance(fault, str):
        return fault, ()
    return str(fault[0]), tuple(fault[1:])


def _user_prompt(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": code, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--state-file",
        type=Path,
        required=True,
        help="JSON file rewritten with the call counts after every call",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per answered call")
    parser.add_argument("--api-key", default=None, help="require this bearer key (401 otherwise)")
    parser.add_argument("--price-input", type=float, default=1.0, help="$ per 1M input tokens")
    parser.add_argument("--price-output", type=float, default=10.0, help="$ per 1M output tokens")
    parser.add_argument(
        "--plan", default=None, help='JSON object: prompt -> list of faults, e.g. {"q": [["500"]]}'
    )
    parser.add_argument(
        "--fail-forever",
        default=None,
        help='JSON object: prompt -> the fault applied on every call, e.g. {"q": ["500"]}',
    )
    parser.add_argument(
        "--reasoning-mode",
        default="reasoning_content",
        choices=["reasoning_content", "reasoning", "think", "content", "hidden"],
    )
    args = parser.parse_args(argv)
    plan = {
        k: [tuple(f) if isinstance(f, list) else f for f in v]
        for k, v in json.loads(args.plan or "{}").items()
    }
    fail_forever = {
        k: tuple(f) if isinstance(f, list) else f
        for k, f in json.loads(args.fail_forever or "{}").items()
    }
    FakeOpenAIServer(
        port=args.port,
        fail_forever=fail_forever,
        delay=args.delay,
        plan=plan,
        api_key=args.api_key,
        reasoning_mode=args.reasoning_mode,
        state_file=args.state_file,
        prices=(args.price_input, args.price_output),
    ).serve_forever()


if __name__ == "__main__":
    main()
