"""A real `frugal serve` app on a real socket (uvicorn in a thread) over the tiny model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from peft import LoraConfig, get_peft_model

from frugal.serve import ServeConfig, Server, build, uvicorn_config

from ..conftest import tiny_model
from ..teachers.fake_openai_server import free_port

API_KEY = "test-key"


def make_adapter(run_dir: Path, base: Path, name: str, seed: int) -> Path:
    """A real PEFT adapter with random (non-zero) LoRA weights, as `frugal train` lays it out."""
    import torch

    untouched = tiny_model()
    torch.manual_seed(seed)  # after tiny_model(), which seeds its own initialisation
    model = get_peft_model(
        untouched, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    path = run_dir / "adapters" / name
    model.save_pretrained(path)
    (path / "frugal-train.json").write_text(json.dumps({"base_model": str(base)}))
    return path


class Running:
    def __init__(self, server: Server, port: int, thread: threading.Thread,
                 uv: uvicorn.Server) -> None:
        self.server, self.port, self.thread, self.uv = server, port, thread, uv

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.uv.should_exit = True
        self.thread.join(timeout=30)


def start(config: ServeConfig) -> Running:
    server = build(config)
    port = free_port()
    uv = uvicorn.Server(uvicorn_config(server, config, host="127.0.0.1", port=port,
                                       log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    return Running(server, port, thread, uv)


@pytest.fixture(scope="module")
def served_run(tmp_path_factory: pytest.TempPathFactory, lively_dir: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("served-run")
    make_adapter(run_dir, lively_dir, "alpha", seed=1)
    make_adapter(run_dir, lively_dir, "beta", seed=2)
    return run_dir


@pytest.fixture(scope="module")
def server(served_run: Path) -> Iterator[Running]:
    running = start(ServeConfig(
        target=str(served_run), served_name="tiny", api_key=API_KEY, max_batch_size=8,
        max_answer_tokens=16, max_thinking_tokens=64, default_thinking_tokens=8,
        max_prompt_tokens=256, machine_price_per_hour=0.36, dtype="float32",
    ))
    yield running
    running.stop()


def client(server: Running, **kwargs: Any) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key=kwargs.pop("api_key", API_KEY),
                  max_retries=0, timeout=60, **kwargs)
