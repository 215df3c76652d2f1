"""Thin FastAPI routes over `OpenAIServing`: parse, authenticate, call, turn errors into
OpenAI-shaped JSON. Every failure a request can cause is a 4xx with a message; an unexpected
one is a 500 for that request alone, never for the server.

What a public endpoint needs besides: bodies are JSON only (415 otherwise, so a web page cannot
send one without a CORS preflight), the `Host` header must be one of the allowed names
(Starlette's `TrustedHostMiddleware`, against DNS rebinding), a body must arrive in time and
within its size, the API description is off unless asked for, and `/metrics` needs the key
unless configured public. Parsing and preparing a request (templating, tokenising, routing) run
in worker threads, so one large prompt never stalls the other clients' streams.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from frugal.serving.openai_serving import (
    ClientGone,
    OpenAIServing,
    PreparedJob,
    RequestError,
    include_usage,
)
from frugal.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorBody,
    ErrorResponse,
    dump,
)

logger = logging.getLogger("frugal.serve")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class HttpPolicy:
    """What the HTTP layer accepts; `frugal.serve.ServeConfig` fills it from the settings."""

    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS  # "*" allows any
    docs: bool = False  # /docs and /openapi.json
    public_metrics: bool = False
    max_body_bytes: int = 2 << 20  # a 1 MiB prompt fits with its JSON around it
    body_timeout_s: float = 30.0  # a client that sends its body slower is cut off


def error_response(error: RequestError) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=error.message, type=error.kind,
                                         param=error.param, code=error.code))
    return JSONResponse(body.model_dump(), status_code=error.status, headers=error.headers)


def create_app(
    serving: OpenAIServing,
    policy: HttpPolicy | None = None,
    *,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    policy = policy or HttpPolicy()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        if on_shutdown:
            on_shutdown()

    docs = {} if policy.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="frugal", lifespan=lifespan, **docs)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(policy.allowed_hosts),
                       www_redirect=False)
    metrics = serving.metrics
    api_key = policy.api_key

    async def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
            raise RequestError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                               kind="authentication_error")

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> JSONResponse:
        metrics.requests.labels(request.url.path, str(error.status)).inc()
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        # 400, as OpenAI answers invalid parameters (its clients raise BadRequestError).
        metrics.requests.labels(request.url.path, "400").inc()
        return error_response(RequestError(400, _describe(error.errors()),
                                           _first_field(error.errors()),
                                           code="invalid_value"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        metrics.requests.labels(request.url.path, "500").inc()
        return error_response(RequestError(500, f"internal error: {type(error).__name__}",
                                           kind="server_error", code="internal_error"))

    async def read_body(request: Request) -> bytes:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise RequestError(415, "send the body as JSON with 'Content-Type: "
                               f"application/json' (got {media_type or 'none'!r})")
        limit = policy.max_body_bytes
        if int(request.headers.get("content-length") or 0) > limit:
            raise RequestError(413, f"request body over {limit} bytes")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(policy.body_timeout_s):
                async for chunk in request.stream():  # counted as it arrives: chunked too
                    size += len(chunk)
                    if size > limit:
                        raise RequestError(413, f"request body over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestError(408, f"the body did not arrive within {policy.body_timeout_s:g} s",
                               code="request_timeout") from None
        except ClientDisconnect:  # gone before its body arrived: nothing to answer
            raise RequestError(499, "the client closed the connection") from None
        return b"".join(chunks)

    async def prepare(request: Request, model: type, prepare_job: Callable[[Any], PreparedJob]
                      ) -> tuple[Any, PreparedJob]:
        body = await read_body(request)
        # Off the event loop: decoding a large body, templating and tokenising its prompt.
        parsed, job = await run_in_threadpool(_parse_and_prepare, body, model, prepare_job)
        return parsed, job

    @app.get("/health")
    async def health() -> Response:
        if serving.engine.failure is not None or not serving.engine.alive:
            return JSONResponse({"status": "error"}, status_code=503)
        return JSONResponse({"status": "ok"})

    metrics_guard = [] if policy.public_metrics else [Depends(authorize)]

    @app.get("/metrics", dependencies=metrics_guard)
    async def prometheus() -> Response:
        return Response(metrics.render(serving.engine.busy_now(), serving.engine.waiting()),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict[str, Any]:
        metrics.requests.labels("/v1/models", "200").inc()
        return dump(serving.models())

    async def answer(request: Request, route: str, model: type,
                     prepare_job: Callable[[Any], PreparedJob], whole: Any, chat: bool
                     ) -> Response:
        """The body of both generation routes: stream it, or wait for the whole reply."""
        body, job = await prepare(request, model, prepare_job)
        if await request.is_disconnected():  # gone while its prompt was prepared
            metrics.cancelled.labels("queued").inc()
            metrics.requests.labels(route, "499").inc()
            return Response(status_code=499)
        if body.stream:
            stream = serving.stream(job, chat=chat, include_usage=include_usage(body))
            metrics.requests.labels(route, "200").inc()
            return StreamingResponse(stream, media_type="text/event-stream")
        try:
            response = await whole(job, request.is_disconnected)
        except ClientGone:
            metrics.requests.labels(route, "499").inc()
            return Response(status_code=499)
        metrics.requests.labels(route, "200").inc()
        return JSONResponse(dump(response))

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat(request: Request) -> Response:
        return await answer(request, "/v1/chat/completions", ChatCompletionRequest,
                            serving.prepare_chat, serving.chat, chat=True)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request) -> Response:
        return await answer(request, "/v1/completions", CompletionRequest,
                            serving.prepare_completion, serving.completion, chat=False)

    return app


def _parse_and_prepare(body: bytes, model: type, prepare_job: Callable[[Any], PreparedJob]
                       ) -> tuple[Any, PreparedJob]:
    try:
        data = json.loads(body)
    except ValueError as error:  # not JSON, not UTF-8, or an integer too long to convert
        raise RequestError(400, f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise RequestError(400, "the body nests too deeply") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the body must be a JSON object")
    try:
        parsed = model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None
    except RecursionError:
        raise RequestError(400, "the body nests too deeply") from None
    return parsed, prepare_job(parsed)


def _describe(errors: Any) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {error.get('msg')}")
    return "; ".join(parts) or "invalid request"


def _first_field(errors: Any) -> str | None:
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        if loc:
            return ".".join(loc)
    return None
