"""HTTP routes of the reward service: thin handlers over `serving.RewardService` in app state.

Errors: invalid JSON or fields -> 422 naming the field (FastAPI's shape);
oversized code/stdin/body -> 413; unknown language -> 400 listing the supported
ones; queue full -> 503 with Retry-After; missing/wrong bearer key -> 401.
User input never produces a 500.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.reward.errors import RewardInputError
from services.reward.protocol import (
    CodeVerifyRequest,
    CodeVerifyResponse,
    HealthResponse,
    MathVerifyRequest,
    MathVerifyResponse,
    RunCodeRequest,
    RunCodeResponse,
    ScoreRequest,
    ScoreResponse,
)
from services.reward.serving import Overloaded, RewardService
from services.reward.settings import RewardSettings

log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="Needed when the service has an api_key.")
_UNMETERED = {"/metrics", "/health"}


def _service(request: Request) -> RewardService:
    return request.app.state.service


def _require_key(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    key = request.app.state.service.settings.api_key
    if key is None:
        return
    if creds is None or not secrets.compare_digest(creds.credentials.encode(), key.encode()):
        raise _Unauthorized()


class _Unauthorized(Exception):
    pass


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body over the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 for bodies over `max_bytes`, by Content-Length or, for chunked bodies, while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            response = JSONResponse(status_code=413, content={"detail": _BodyTooLarge(self.max_bytes).detail})
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)  # FastAPI re-raises HTTPException from body reading
            return message

        await self.app(scope, limited_receive, send)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RewardInputError)
    async def _input_error(_: Request, err: RewardInputError) -> JSONResponse:
        return JSONResponse(status_code=err.status_code, content={"detail": str(err), "field": err.field})

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, err: Overloaded) -> JSONResponse:
        service: RewardService = request.app.state.service
        service.metrics.rejected.inc()
        retry = str(service.settings.retry_after_s)
        return JSONResponse(status_code=503, content={"detail": f"overloaded: {err}"}, headers={"Retry-After": retry})

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, __: _Unauthorized) -> JSONResponse:
        return JSONResponse(status_code=401, content={"detail": "missing or wrong bearer API key"},
                            headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def _meter(request: Request, call_next):  # type: ignore[no-untyped-def]
        service: RewardService = request.app.state.service
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        if endpoint not in _UNMETERED:
            service.metrics.requests.labels(endpoint, str(response.status_code)).inc()
            service.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response


def _install_routes(app: FastAPI) -> None:
    auth = [Depends(_require_key)]

    @app.post("/run_code", response_model=RunCodeResponse, dependencies=auth, tags=["sandbox"],
              summary="Run a program (SandboxFusion-compatible)")
    async def run_code(body: RunCodeRequest, request: Request) -> RunCodeResponse:
        """Run Python or C++ in the sandbox with SandboxFusion's request and response shape."""
        return await _service(request).run_code(body)

    @app.post("/v1/verify/math", response_model=MathVerifyResponse, dependencies=auth, tags=["verify"],
              summary="Verify a math answer")
    async def verify_math(body: MathVerifyRequest, request: Request) -> MathVerifyResponse:
        """Extract the answer (last \\boxed{} after </think>, else math-verify's fallbacks) and verify it."""
        return await _service(request).verify_math(body)

    @app.post("/v1/verify/code", response_model=CodeVerifyResponse, dependencies=auth, tags=["verify"],
              summary="Verify a program against LiveCodeBench/TACO tests")
    async def verify_code(body: CodeVerifyRequest, request: Request) -> CodeVerifyResponse:
        """Run the program on every test (stdin/stdout or call-based) and judge the outputs."""
        return await _service(request).verify_code(body)

    @app.post("/v1/score", response_model=ScoreResponse, dependencies=auth, tags=["verify"],
              summary="Score a batch of math and code items")
    async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
        """Verify items concurrently; results come back in request order, a bad item gives an error result."""
        return await _service(request).score(body)

    @app.get("/health", response_model=HealthResponse, tags=["ops"], summary="Liveness and sandbox isolation report")
    async def health(request: Request) -> HealthResponse:
        """Service status, the sandbox's isolation report and pool counters."""
        return _service(request).health()

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        """Requests by endpoint and status, latency histograms, time-outs, pool utilisation, queue depth."""
        return Response(_service(request).render_metrics(), media_type="text/plain; version=0.0.4")


def create_app(settings: RewardSettings, service: RewardService | None = None) -> FastAPI:
    """Build the app; the service (and its pools) start with the app's lifespan."""
    svc = service or RewardService(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.close()

    app = FastAPI(
        title="ASPO reward service",
        version="0.1.0",
        description="Sandboxed code execution (SandboxFusion-compatible /run_code) and math verification "
        "(math-verify in killable workers) for RL rewards.",
        lifespan=lifespan,
    )
    app.state.service = svc
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    _install_handlers(app)
    _install_routes(app)
    return app
