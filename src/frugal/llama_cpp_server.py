"""Serve a model and its adapters with llama.cpp's `llama-server`, and stop it afterwards.

`--engine llama.cpp` (serve, eval, local teachers) runs generation here: each served model (the
base, and each adapter merged into it) is exported to GGUF once (`frugal.export`), cached under
`$FRUGAL_CACHE/gguf` by the base's and the adapter's fingerprints so a restart does not export
again, and served by its own `llama-server` process with parallel slots and continuous batching.
A base that is a GGUF file already (a `.gguf` path, a parted alias such as
`qwen2.5-coder-1.5b-instruct`) is served from that file as it is: no dequantizing, no export,
its own quantization (the `weights` setting applies to exported models only).
The endpoint engine talks to each through llama.cpp's native `/completion` API (prompts and
replies as token ids), so budget forcing is exact.

One process per merged model rather than llama.cpp's runtime LoRA adapters in one process: a
merged model decodes at the base model's speed, and llama.cpp cannot batch slots that use
different adapters together; the cost is memory, a whole model per adapter (SmolLM2-135M: 145 MB
in q8_0, 540 MB in f32, plus its KV cache).

The binary: `$FRUGAL_LLAMA_SERVER`, else the project's `.llama.cpp/bin/llama-server` (built by
`make llama-cpp` from llama.cpp's source, which `make test` runs), else `llama-server` on PATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from frugal import engine_process
from frugal.endpoint_config import EndpointConfig
from frugal.settings.engines import GgufType, LlamaCppConfig

READY_TIMEOUT = 120.0  # seconds; SmolLM2 loads in about a second
SERVER_ENV = "FRUGAL_LLAMA_SERVER"
_PROJECT_SERVER = Path(__file__).resolve().parents[2] / ".llama.cpp" / "bin" / "llama-server"


def llama_server_binary() -> str | None:
    """The llama-server executable to run, None when there is none."""
    configured = os.environ.get(SERVER_ENV)
    if configured:
        return configured
    if _PROJECT_SERVER.is_file():
        return str(_PROJECT_SERVER)
    return shutil.which("llama-server")


def llama_cpp_available() -> bool:
    """Whether a llama-server binary is there and runs on this CPU."""
    binary = llama_server_binary()
    if binary is None:
        return False
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def gguf_for(model: str, adapter: Path | None, weights: GgufType) -> Path:
    """The GGUF file of `model` (+ `adapter` merged in): a GGUF base's own file, else exported
    on first use and cached by the fingerprints of both, so a changed base or a retrained
    adapter is exported anew."""
    from frugal.adapters import adapter_fingerprint
    from frugal.export import GGUF_EXPORT_VERSION
    from frugal.models import cache_dir, fingerprint

    if adapter is None:
        from frugal.models import served_gguf

        as_is = served_gguf(model)
        if as_is is not None:
            return as_is
    parts = [fingerprint(model), weights, f"export-{GGUF_EXPORT_VERSION}"]
    if adapter is not None:
        parts.append(adapter_fingerprint(adapter))
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    name = Path(model).name if adapter is None else f"{Path(model).name}+{adapter.name}"
    path = cache_dir() / "gguf" / f"{name}-{weights}-{key}.gguf"
    if path.is_file():
        return path
    from frugal import export

    if adapter is None:
        from frugal.models import load_model

        loaded = load_model(model)
    else:
        loaded = export.load_merged(adapter.parent, str(adapter), model)
    return export.save_gguf(loaded, path, weights)  # atomic: never a half-written cache file


@contextmanager
def serve_with_llama_cpp(
    model: str,
    adapters: Mapping[str, Path] | None = None,
    *,
    config: LlamaCppConfig | None = None,
    context_tokens: int = 4096,
) -> Iterator[EndpointConfig]:
    """Serve `model` (a frugal spec) and each adapter merged into it, one llama-server each;
    yield an endpoint whose base URL serves the base and whose `model_urls` serve the
    adapters by name. Every server is stopped on exit."""
    config = config or LlamaCppConfig()
    binary = llama_server_binary()
    if binary is None:
        raise engine_process.EngineStartError(
            "llama.cpp's server was not found. Fix: run `make llama-cpp` (builds "
            f".llama.cpp/bin/llama-server), or set ${SERVER_ENV} to a llama-server binary.")
    files = {model: gguf_for(model, None, config.weights)}
    files |= {name: gguf_for(model, Path(path), config.weights)
              for name, path in (adapters or {}).items()}
    with ExitStack() as servers:
        urls = {name: servers.enter_context(_one_server(binary, name, file, config,
                                                        context_tokens))
                for name, file in files.items()}
        base = urls.pop(model)
        yield EndpointConfig(base_url=base, model=model, model_urls=urls, api="llama.cpp",
                             concurrency=config.slots * len(files))


@contextmanager
def _one_server(binary: str, name: str, gguf: Path, config: LlamaCppConfig,
                context_tokens: int) -> Iterator[str]:
    port = engine_process.free_port()
    command = [
        binary, "--model", str(gguf), "--alias", name, "--host", "127.0.0.1",
        "--port", str(port), "--parallel", str(config.slots), "--cont-batching",
        # Each slot its own KV cache of the longest row's context. (One unified cache for all
        # slots attends over every slot's cells: 146 instead of 194 tokens/s at 16 clients,
        # SmolLM2 q8_0 on 2 cores.)
        "--no-kv-unified", "--ctx-size", str(context_tokens * config.slots),
        "--no-webui", "--no-warmup",
    ]
    if config.weights == "f32":
        # Exact means float32 throughout: llama.cpp keeps its KV cache in f16 and its CPU flash
        # attention computes in f16 unless told (with them, greedy decoding of a LoRA-merged
        # SmolLM2 took the runner-up at near-ties of 0.002-0.04 logits on 9 of 32 prompts).
        command += ["--cache-type-k", "f32", "--cache-type-v", "f32", "--flash-attn", "off"]
    if config.threads:
        command += ["--threads", str(config.threads), "--threads-batch", str(config.threads)]
    log = engine_process.log_path("llama-server", port)
    process = engine_process.start(command, log)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        engine_process.wait_ready(f"http://127.0.0.1:{port}/health", process, log,
                                  engine="llama.cpp's server", timeout=READY_TIMEOUT)
        yield url
    finally:
        engine_process.stop(process)
