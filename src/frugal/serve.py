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
from typing import Any

from frugal.ledger import LedgerEntry, append_entry, compute_cost
from frugal.names import check_run_dir
from frugal.settings.serve import API_KEY_ENV, ServeConfig

logger = logging.getLogger("frugal.serve")


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
    from frugal.serving.openai_serving import OpenAIServing

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
            limits=config,
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
    """Generation on a completions server: vLLM or llama.cpp started here, or one at a URL."""
    from frugal.endpoint_config import endpoint_option
    from frugal.endpoint_engine import EndpointEngine
    from frugal.engine_servers import context_length, managed_endpoint
    from frugal.models import load_tokenizer

    tokenizer = load_tokenizer(model)  # before an engine starts: a bad model fails fast
    endpoint = endpoint_option(config.engine, config.engine_model or model, managed=True)
    if endpoint is None:
        raise ValueError(f"engine {config.engine!r}: local, vllm, llama.cpp or a URL")
    if isinstance(endpoint, str):
        endpoint = resources.enter_context(managed_endpoint(
            endpoint, model, adapters, dtype=config.dtype, llama_cpp=config.llama_cpp,
            context_tokens=context_length(config.max_prompt_tokens, config.max_thinking_tokens,
                                          config.max_answer_tokens)))
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
    append_entry(server.run_dir, LedgerEntry.model_validate({
        "stage": "serve", "kind": "compute", "tokens": metrics.generated,
        "busy_seconds": round(busy, 3), "compute_seconds": round(wall, 3),
        "machine_price_per_hour": config.machine_price_per_hour,
        "dollars": round(compute_cost(wall, config.machine_price_per_hour), 6),
        "dollars_per_million_tokens": metrics.dollars_per_million(busy),
    }))
