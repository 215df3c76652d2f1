"""`frugal serve RUN_DIR|MODEL`: the OpenAI-compatible server over a run or a plain model.

A run directory contributes its base model (from the training record), every adapter under
`adapters/` (one served model each, `parent` = the base) and its router when it has one
(`model: "auto"`). On shutdown the ledger gets the tokens served and the dollars per million
tokens at the configured hourly price.

The limits that keep it up under load and in front of hostile clients are settings here too: a
bounded queue (429 with Retry-After beyond it), uvicorn's connection limit and keep-alive
timeout, a deadline for non-streamed requests, the allowed `Host` names, and a refusal to serve
a non-loopback address without an API key unless told so.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from frugal.ledger import append_entry, compute_cost
from frugal.names import SafeName, check_run_dir

API_KEY_ENV = "FRUGAL_API_KEY"
logger = logging.getLogger("frugal.serve")


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(..., description="A run directory, or a model spec.")
    model: str | None = Field(None, description="Base model; default: the run's.")
    adapters: dict[SafeName, str] = Field(
        default_factory=dict, description="Extra name=path (names as for adapters/<name>/)."
    )
    served_name: str | None = Field(None, description="Name of the base model in /v1/models.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(None, description=f"Required key; else ${API_KEY_ENV}.")
    max_batch_size: int = Field(16, ge=1)
    batch_window_ms: float = Field(10.0, ge=0.0)
    max_answer_tokens: int = Field(512, ge=1)
    max_thinking_tokens: int = Field(2048, ge=1)
    default_thinking_tokens: int = Field(256, ge=1)
    max_prompt_tokens: int = Field(2048, ge=1)
    machine_price_per_hour: float = Field(0.0, ge=0.0)
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights: auto is bfloat16 on GPUs and AMX CPUs, else float32."
    )
    engine: str = Field(
        "local", description="local (frugal's decode loop), vllm (a vLLM server started here "
        "with every adapter, stopped on exit), or the URL of an OpenAI-compatible completions "
        "server up to /v1 that serves the base model and each adapter under its name.",
    )
    engine_model: str | None = Field(
        None, description="With an engine URL: the base model's name there (default: the "
        "model spec)."
    )
    max_waiting: int = Field(
        64, ge=0, description="Requests that may wait for a batch slot; more get 429 with "
        "Retry-After.")
    request_timeout_s: float = Field(
        600.0, gt=0, description="Deadline of a non-streamed request (504 after it).")
    max_connections: int = Field(
        512, ge=1, description="Open connections uvicorn accepts; beyond it, 503.")
    # Longer than the 5 s after which httpx (and so the openai client) drops an idle pooled
    # connection: the client always closes first, never reuses one the server is closing.
    keep_alive_s: float = Field(15.0, gt=0, description="Idle keep-alive connections close "
                                "after this.")
    body_timeout_s: float = Field(30.0, gt=0, description="A body must arrive within this.")
    max_body_bytes: int = Field(2 << 20, ge=1024, description="Larger bodies get 413.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names clients may use besides the loopback "
        "names and the bind address (DNS-rebinding guard); '*' allows any.")
    allow_no_key: bool = Field(
        False, description="Serve a non-loopback address without an API key.")
    docs: bool = Field(False, description="Serve /docs and /openapi.json.")
    public_metrics: bool = Field(False, description="Serve /metrics without the API key.")


@dataclass
class Server:
    """Everything `frugal serve` starts, so tests and the bench can run it in-process."""

    app: Any
    serving: Any
    engine: Any
    run_dir: Path | None
    started: float
    resources: ExitStack = field(default_factory=ExitStack)  # a vLLM server we started

    def close(self) -> None:
        self.engine.stop()
        self.resources.close()


def build(config: ServeConfig) -> Server:
    from frugal.adapters import base_model_of, find_adapter, load_with_adapters, run_adapters
    from frugal.generation import BudgetForcingEngine, Engine
    from frugal.models import inference_dtype
    from frugal.serving.app import LOOPBACK_HOSTS, HttpPolicy, create_app
    from frugal.serving.engine import ServingEngine
    from frugal.serving.metrics import ServerMetrics
    from frugal.serving.openai_serving import OpenAIServing, ServerLimits

    api_key = config.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and not is_loopback(config.host) and not config.allow_no_key:
        raise ValueError(
            f"binding {config.host} without an API key lets anyone on the network use this "
            f"server. Fix: set --api-key or ${API_KEY_ENV}, or pass --allow-no-key."
        )
    target = Path(config.target).expanduser()
    run_dir = target if target.is_dir() and not (target / "config.json").is_file() else None
    if run_dir is not None:  # the ledger entry is written into it on shutdown
        check_run_dir(run_dir)
    adapters = run_adapters(run_dir) if run_dir else {}
    for name, path in config.adapters.items():
        adapters[name] = find_adapter(None, path)[1]
    if run_dir is not None:
        if config.model:
            model = config.model
        elif adapters:
            model = base_model_of(next(iter(adapters.values())))
        else:
            raise FileNotFoundError(
                f"{run_dir} has no adapters/ to serve and no base model was named. "
                "Fix: run `frugal train` first, or pass --model."
            )
    else:
        model = config.model or config.target
    resources = ExitStack()
    decode: Engine
    if config.engine == "local":
        loaded = load_with_adapters(model, adapters, dtype=inference_dtype(config.dtype))
        decode = BudgetForcingEngine(loaded.model, loaded.tokenizer)
    else:
        decode = _endpoint_engine(config, model, adapters, resources)
    try:
        router = _load_router(run_dir) if run_dir else None
        metrics = ServerMetrics(config.machine_price_per_hour)
        engine = ServingEngine(
            decode, max_batch_size=config.max_batch_size,
            window_s=config.batch_window_ms / 1000, max_waiting=config.max_waiting,
            on_step=metrics.batch_size.observe,
            on_cancelled=lambda where: metrics.cancelled.labels(where).inc(),
        )
        serving = OpenAIServing(
            engine, decode.format,
            base_name=config.served_name or Path(model).name or model,
            adapters=list(adapters), router=router,
            limits=ServerLimits(
                max_answer_tokens=config.max_answer_tokens,
                max_thinking_tokens=config.max_thinking_tokens,
                default_thinking_tokens=min(config.default_thinking_tokens,
                                            config.max_thinking_tokens),
                max_prompt_tokens=config.max_prompt_tokens,
                request_timeout_s=config.request_timeout_s,
            ),
            metrics=metrics,
        )
        started = time.time()
        server = Server(app=None, serving=serving, engine=engine, run_dir=run_dir, started=started,
                        resources=resources)
        bind = f"[{config.host}]" if ":" in config.host else config.host
        policy = HttpPolicy(
            api_key=api_key,
            allowed_hosts=tuple(dict.fromkeys([*LOOPBACK_HOSTS, bind, *config.allowed_hosts])),
            docs=config.docs, public_metrics=config.public_metrics,
            max_body_bytes=config.max_body_bytes, body_timeout_s=config.body_timeout_s,
        )
        server.app = create_app(serving, policy, on_shutdown=lambda: _record(server, config))
        engine.start()
        return server
    except BaseException:
        resources.close()  # a vLLM server started above must not outlive a failed start
        raise


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def uvicorn_config(server: Server, config: ServeConfig, **overrides: Any) -> Any:
    """uvicorn's settings for this server: its connection limit and timeouts."""
    import uvicorn

    settings: dict[str, Any] = {
        "host": config.host, "port": config.port, "log_level": "info",
        "limit_concurrency": config.max_connections,
        "timeout_keep_alive": config.keep_alive_s,
        "timeout_graceful_shutdown": 5,
    }
    return uvicorn.Config(server.app, **(settings | overrides))


def _endpoint_engine(
    config: ServeConfig, model: str, adapters: dict[str, Path], resources: ExitStack
) -> Any:
    """Generation on a completions server: vLLM started here, or one at a URL."""
    from frugal.endpoint_config import endpoint_option
    from frugal.endpoint_engine import EndpointEngine
    from frugal.models import load_tokenizer

    tokenizer = load_tokenizer(model)  # before vLLM starts: a bad model fails fast
    if config.engine == "vllm":
        from frugal.vllm_server import context_length, serve_with_vllm

        dtype = "float32" if config.dtype == "auto" else config.dtype
        length = context_length(config.max_prompt_tokens, config.max_thinking_tokens,
                                config.max_answer_tokens)
        endpoint = resources.enter_context(
            serve_with_vllm(model, adapters, dtype=dtype, max_model_len=length))
    else:
        endpoint = endpoint_option(config.engine, config.engine_model or model)
        if endpoint is None:
            raise ValueError(f"engine {config.engine!r}: local, vllm or a URL")
    return EndpointEngine(endpoint, tokenizer)


def _load_router(run_dir: Path) -> Any:
    """The run's router as a text -> adapter name function, when `frugal experts` made one."""
    try:
        from frugal.experts.router import load_router
    except ImportError:
        return None
    return load_router(run_dir)


def _record(server: Server, config: ServeConfig) -> None:
    """Ledger entry for the serving session: tokens, busy and wall time, price per token."""
    server.close()
    if server.run_dir is None:
        return
    metrics = server.serving.metrics
    busy = server.engine.busy_now()
    wall = time.time() - server.started
    append_entry(server.run_dir, {
        "stage": "serve", "kind": "compute", "tokens": metrics.generated,
        "busy_seconds": round(busy, 3), "compute_seconds": round(wall, 3),
        "machine_price_per_hour": config.machine_price_per_hour,
        "dollars": round(compute_cost(wall, config.machine_price_per_hour), 6),
        "dollars_per_million_tokens": metrics.dollars_per_million(busy),
    })
