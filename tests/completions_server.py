"""A real OpenAI-compatible completions server over a transformers model, for engine tests.

It serves the part of vLLM's `/v1/completions` that `EndpointEngine` uses, computed by a real
model over real sockets: `prompt` as a list of token ids, `max_tokens`, `stop_token_ids` (the
stop token is kept at the end of `token_ids`, as vLLM does with `include_stop_str_in_output`),
the model's EOS, greedy decoding at temperature 0, and `return_token_ids` (the choice carries
`token_ids`; `stop_reason` names the stop token id). Like vLLM, it aborts a request whose client
hung up (`aborted` counts them). It keeps every request body so tests can see how a client drove
it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.teachers.fake_openai_server import free_port


class CompletionsServer:
    """Greedy completions from `model` (a transformers or PEFT model) on 127.0.0.1."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "base") -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.aborted = 0
        self._lock = threading.Lock()  # one forward pass at a time: the model is not reentrant
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.app = FastAPI()
        self.app.post("/v1/completions")(self._complete)
        self._server: uvicorn.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _complete(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        model = body.get("model")
        if model != self.name:
            return JSONResponse({"error": {"message": f"model {model!r} not served"}}, 404)
        if body.get("temperature", 1.0) != 0:
            return JSONResponse({"error": {"message": "this test server is greedy only"}}, 400)
        prompt = [int(t) for t in body["prompt"]]
        stops = set(body.get("stop_token_ids") or [])
        if not body.get("ignore_eos"):
            stops.add(self.tokenizer.eos_token_id)
        hung_up = threading.Event()
        work = asyncio.ensure_future(asyncio.to_thread(
            self._generate, prompt, int(body["max_tokens"]), stops, hung_up))
        while not work.done():
            await asyncio.wait({work}, timeout=0.05)
            if not work.done() and await request.is_disconnected():
                hung_up.set()
        ids = work.result()
        if hung_up.is_set():
            self.aborted += 1
            return JSONResponse({"error": {"message": "client disconnected"}}, 499)
        stopped = bool(ids) and ids[-1] in stops
        choice = {
            "index": 0,
            "text": self.tokenizer.decode(ids),
            "finish_reason": "stop" if stopped else "length",
            "stop_reason": ids[-1] if stopped and ids[-1] != self.tokenizer.eos_token_id
            else None,
            "token_ids": ids,
            "prompt_token_ids": prompt,
        }
        return JSONResponse({
            "id": f"cmpl-{len(self.requests)}", "object": "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids),
                      "total_tokens": len(prompt) + len(ids)},
        })

    def _generate(self, prompt: list[int], max_tokens: int, stops: set[int],
                  hung_up: threading.Event) -> list[int]:
        """Greedy decoding with a KV cache, one token per step, until a stop or max_tokens (or
        the client hangs up, or the server closes)."""
        with self._lock, torch.inference_mode():
            past, ids, step = None, [], torch.tensor([prompt])
            for _ in range(max_tokens):
                if hung_up.is_set() or self._closing.is_set():
                    break
                out = self.model(input_ids=step, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = int(out.logits[0, -1].argmax())
                ids.append(token)
                if token in stops:
                    break
                step = torch.tensor([[token]])
        return ids

    def __enter__(self) -> CompletionsServer:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("completions server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closing.set()  # a generation still running ends at its next step
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

