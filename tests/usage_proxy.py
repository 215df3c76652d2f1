"""A pass-through HTTP proxy that records the `usage` a real server reports, for billing tests.

A provider bills the usage its replies carry; a test that checks the ledger against a real
server (llama.cpp's, vLLM's) needs to know what that server said without trusting the client it
tests. The proxy forwards every request to `upstream` unchanged over a real socket, returns the
reply unchanged, and keeps the `usage` object of each JSON reply that has one (`usages`), so the
test adds up what the server "billed" itself.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from tests.teachers.fake_openai_server import free_port


class UsageProxy:
    """Forwards `/v1/...` to `upstream` (a base URL up to /v1), recording each reply's usage."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.usages: list[dict[str, Any]] = []
        self.requests = 0
        self._lock = threading.Lock()
        app = FastAPI()

        @app.post("/v1/{path:path}")
        async def forward(path: str, request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.requests += 1
            async with httpx.AsyncClient(timeout=None) as client:
                reply = await client.post(
                    f"{self.upstream}/{path}", content=body,
                    headers={"content-type": request.headers.get("content-type",
                                                                 "application/json")})
            if reply.headers.get("content-type", "").startswith("application/json"):
                usage = reply.json().get("usage")
                if usage is not None:
                    with self._lock:
                        self.usages.append(usage)
            return Response(reply.content, reply.status_code,
                            media_type=reply.headers.get("content-type"))

        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> UsageProxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the usage proxy did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def billed(self, input_per_million: float, output_per_million: float) -> float:
        """Dollars the recorded usage comes to at these prices (no prompt-cache discount)."""
        with self._lock:
            return sum(u["prompt_tokens"] * input_per_million
                       + u["completion_tokens"] * output_per_million
                       for u in self.usages) / 1_000_000
