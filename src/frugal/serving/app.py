"""Thin FastAPI routes over `OpenAIServing`: parse, authenticate, call, turn errors into
OpenAI-shaped JSON. Every failure a request can cause is a 4xx with a message; an unexpected
one is a 500 for that request alone, never for the server."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from frugal.serving.openai_serving import ClientGone, OpenAIServing, RequestError
from frugal.serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorBody,
    ErrorResponse,
    dump,
)

logger = logging.getLogger("frugal.serve")
# Bodies above this are refused before parsing: no request needs more for a 2k-token prompt.
MAX_BODY_BYTES = 1 << 20


def error_response(status: int, message: str, param: str | None = None,
                   kind: str = "invalid_request_error") -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=kind, param=param, code=status))
    return JSONResponse(body.model_dump(), status_code=status)


def create_app(
    serving: OpenAIServing,
    *,
    api_key: str | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        if on_shutdown:
            on_shutdown()

    app = FastAPI(title="frugal", lifespan=lifespan)
    metrics = serving.metrics

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
        return error_response(error.status, error.message, error.param, error.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        # 400, as OpenAI answers invalid parameters (its clients raise BadRequestError).
        metrics.requests.labels(request.url.path, "400").inc()
        return error_response(400, _describe(error.errors()), _first_field(error.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        metrics.requests.labels(request.url.path, "500").inc()
        return error_response(500, f"internal error: {type(error).__name__}", kind="server_error")

    async def parse(request: Request, model: type) -> Any:
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it arrives: chunked bodies too
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestError(400, f"the body is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise RequestError(400, "the body must be a JSON object")
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise RequestValidationError(error.errors()) from None

    @app.get("/health")
    async def health() -> Response:
        if serving.engine.failure is not None or not serving.engine.alive:
            return JSONResponse({"status": "error"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(serving.engine.busy_now()),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict[str, Any]:
        metrics.requests.labels("/v1/models", "200").inc()
        return dump(serving.models())

    async def answer(request: Request, route: str, model: type, streamed: Any,
                     whole: Any) -> Response:
        """The body of both generation routes: stream it, or wait for the whole reply."""
        body = await parse(request, model)
        if body.stream:
            stream = streamed(body)  # refuses a bad request here, before the 200 is sent
            metrics.requests.labels(route, "200").inc()
            return StreamingResponse(stream, media_type="text/event-stream")
        try:
            response = await whole(body, request.is_disconnected)
        except ClientGone:
            metrics.requests.labels(route, "499").inc()
            return Response(status_code=499)
        metrics.requests.labels(route, "200").inc()
        return JSONResponse(dump(response))

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat(request: Request) -> Response:
        return await answer(request, "/v1/chat/completions", ChatCompletionRequest,
                            serving.chat_stream, serving.chat)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request) -> Response:
        return await answer(request, "/v1/completions", CompletionRequest,
                            serving.completion_stream, serving.completion)

    return app


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
