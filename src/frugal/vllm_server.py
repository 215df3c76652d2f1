"""Start vLLM's OpenAI-compatible server for a model and its adapters, and stop it afterwards.

`frugal eval --engine vllm` (and the tests) use this to run generation on a real vLLM: the base
model is served under its frugal spec name, each LoRA adapter under its own name
(`--enable-lora --lora-modules name=path`), with the prefix cache on so every budget-forcing
continuation costs only its new tokens. vLLM pins its own versions of packages frugal shares
(transformers among them), so it runs from its own interpreter: `FRUGAL_VLLM_PYTHON`, else the
project's `.venv-vllm` (which `make test` creates), else `python3`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from frugal.endpoint_config import EndpointConfig

READY_TIMEOUT = 600.0  # seconds; vLLM's CPU build starts in 26-100 s on 2 cores
_PROJECT_VENV = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"


class VLLMError(RuntimeError):
    """vLLM could not be started (or died); the message carries the end of its log."""


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


def context_length(prompt_tokens: int, thinking_tokens: int, answer_tokens: int) -> int:
    """The context vLLM must hold for one row: prompt, thinking, Waits' slack and the answer."""
    return prompt_tokens + thinking_tokens + answer_tokens + 64


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
    port = _free_port()
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
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"frugal-vllm-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent)
    try:
        endpoint = EndpointConfig(base_url=f"http://127.0.0.1:{port}/v1", model=model)
        _wait_ready(endpoint.base_url, process, log)
        yield endpoint
    finally:
        _stop(process)


def _die_with_parent() -> None:
    """In the child: SIGTERM when frugal dies, even by SIGKILL, so no vLLM is left orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the context manager's own stop still applies
        pass


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VLLMError(f"vLLM exited with status {process.returncode} before it was ready; "
                            f"the end of its log ({log}):\n{_tail(log)}")
        try:
            if httpx.get(base_url + "/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise VLLMError(f"vLLM was not ready after {READY_TIMEOUT:.0f} s; its log ({log}):\n"
                    f"{_tail(log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's whole process group (it forks engine workers), then SIGKILL."""
    # The group even when the leader is gone: its engine workers may still be running.
    try:
        os.killpg(process.pid, signal.SIGTERM)  # start_new_session: the group id is its pid
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _max_rank(adapters: Mapping[str, Path]) -> int:
    import json

    ranks = [json.loads((Path(p) / "adapter_config.json").read_text()).get("r", 16)
             for p in adapters.values()]
    # vLLM accepts only some ranks; the smallest of them that holds every adapter.
    return next(r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= max(ranks))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
