"""Start vLLM's OpenAI-compatible server for a model and its adapters, and stop it afterwards.

`frugal eval --engine vllm` (and the tests) use this to run generation on a real vLLM: the base
model is served under its frugal spec name, each LoRA adapter under its own name
(`--enable-lora --lora-modules name=path`), with the prefix cache on so every budget-forcing
continuation costs only its new tokens. vLLM pins its own versions of packages frugal shares
(transformers among them), so it runs from its own interpreter: `FRUGAL_VLLM_PYTHON`, else the
project's `.venv-vllm` (which `make test` creates), else `python3`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from frugal import engine_process
from frugal.endpoint_config import EndpointConfig

READY_TIMEOUT = 600.0  # seconds; vLLM's CPU build starts in 26-100 s on 2 cores
_PROJECT_VENV = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"



def vllm_python() -> str:
    """The interpreter that has vLLM installed."""
    configured = os.environ.get("FRUGAL_VLLM_PYTHON")
    if configured:
        return configured
    return str(_PROJECT_VENV) if _PROJECT_VENV.is_file() else "python3"


def vllm_available() -> bool:
    """Whether `vllm_python()` can import vLLM (a subprocess check, a few seconds)."""
    try:
        done = subprocess.run([vllm_python(), "-c", "import vllm"], capture_output=True,
                              timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@contextmanager
def serve_with_vllm(
    model: str,
    adapters: Mapping[str, Path] | None = None,
    *,
    dtype: str = "float32",
    max_model_len: int = 4096,
    kv_cache: str = "1G",
    eager: bool | None = None,
    log: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[EndpointConfig]:
    """Serve `model` (a frugal spec) and `adapters` with vLLM; yield where to reach it."""
    from frugal.models import resolve_model_path

    adapters = dict(adapters or {})
    port = engine_process.free_port()
    command = [
        vllm_python(), "-m", "vllm.entrypoints.openai.api_server",
        "--model", resolve_model_path(model), "--served-model-name", model,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
        "--max-model-len", str(max_model_len), "--enable-prefix-caching",
        # The prefix cache reuses whole blocks: 32 tokens (the CPU backend's smallest) instead
        # of 128 makes a Wait continuation recompute at most 31 tokens.
        "--block-size", "32",
    ]
    import torch

    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        # A KV cache of a set size: vLLM's CPU build otherwise sizes it from the NUMA node's
        # memory and refuses to start when that reads low. GPUs size theirs themselves.
        command += ["--kv-cache-memory-bytes", kv_cache]
    if eager is None:  # compiling pays off on GPUs; on CPUs it costs a minute at every start
        eager = on_cpu
    if eager:  # CPU start-up: 26 s instead of 80-100 s of compiling, about 15% slower decode
        command.append("--enforce-eager")
    if adapters:
        command += ["--enable-lora", "--max-lora-rank", str(_max_rank(adapters)),
                    "--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    command += list(extra_args)
    log = log or engine_process.log_path("vllm", port)
    process = engine_process.start(command, log)
    try:
        endpoint = EndpointConfig(base_url=f"http://127.0.0.1:{port}/v1", model=model)
        engine_process.wait_ready(endpoint.base_url + "/models", process, log, engine="vLLM",
                                  timeout=READY_TIMEOUT)
        yield endpoint
    finally:
        engine_process.stop(process)


def _max_rank(adapters: Mapping[str, Path]) -> int:
    import json

    ranks = [json.loads((Path(p) / "adapter_config.json").read_text()).get("r", 16)
             for p in adapters.values()]
    # vLLM accepts only some ranks; the smallest of them that holds every adapter.
    return next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= max(ranks))
