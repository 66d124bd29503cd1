"""HTTP routes of the dashboard: thin handlers over the `RunState` and `RunControl` in app state.

Read endpoints (`/api/status`, `/api/metrics`, `/api/samples`, `/health`,
`/metrics`, the page) need no token: they expose numbers and sampled text of
the run, so bind to a public interface only on a trusted network. Control
endpoints (`POST /api/pause|resume|stop`) need `Authorization: Bearer
<api_token>`: 401 without or with a wrong one, 503 "control disabled" when no
token (or no control) was configured, so they are never open by default.

Every response carries a Content-Security-Policy that allows only same-origin
scripts, styles and fetches: the page loads nothing from outside (users run
air-gapped), and a model completion that slipped into the DOM as markup could
not run inline script.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from orchestrator.dashboard.metrics import build_registry, render
from orchestrator.dashboard.protocol import ControlResponse, MetricsResponse, RunControl
from orchestrator.state import RunState, RunStatus, SampleRecord

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_bearer = HTTPBearer(auto_error=False, description="Needed for the control endpoints.")


class _ControlRefused(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def _state(request: Request) -> RunState:
    return request.app.state.run_state


def _authorised_control(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> RunControl:
    """The run control, once the caller has shown the configured bearer token."""
    token: str | None = request.app.state.api_token
    control: RunControl | None = request.app.state.control
    if token is None or control is None:
        reason = "no api_token configured" if token is None else "no run control attached"
        raise _ControlRefused(503, f"control disabled: {reason}")
    if creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode()):
        raise _ControlRefused(401, "missing or wrong bearer token")
    return control


def create_dashboard_app(state: RunState, control: RunControl | None = None, api_token: str | None = None) -> FastAPI:
    """The dashboard app over `state` (read only) and `control` (called by the POST endpoints)."""
    if api_token is not None and not api_token.strip():
        raise ValueError("api_token is empty: pass None to disable control, or a real secret")
    app = FastAPI(title="ASPO run dashboard", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.state.run_state = state
    app.state.control = control
    app.state.api_token = api_token
    app.state.registry = build_registry(state)
    _install_handlers(app)
    _add_read_routes(app)
    _add_control_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # A long run's first /api/metrics is megabytes of repetitive JSON (~6 MB at 10k steps): gzip cuts it
    # ~7x for browsers behind an SSH tunnel; level 1 keeps the CPU cost below the serialisation cost.
    app.add_middleware(GZipMiddleware, minimum_size=4096, compresslevel=1)
    return app


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(_ControlRefused)
    async def _refused(_: Request, err: _ControlRefused) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status_code == 401 else None
        return JSONResponse(status_code=err.status_code, content={"detail": err.detail}, headers=headers)

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.url.path.startswith("/api/") or request.url.path == "/":
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _add_read_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health")
    def health(request: Request) -> dict[str, str]:
        return {"status": "ok", "run_id": _state(request).status().run_id}

    @app.get("/api/status", response_model=RunStatus)
    def status(request: Request) -> RunStatus:
        return _state(request).status()

    @app.get("/api/metrics", response_model=MetricsResponse)
    def metrics(
        request: Request,
        since: Annotated[int, Query(ge=0, description="Return steps with step >= since.")] = 0,
    ) -> Response:
        # Serialised by the store under its lock (no deep copies, see `RunState.steps_json`); the
        # response_model above still documents the shape, the unit tests check it.
        state = _state(request)
        total = json.dumps({str(lag): n for lag, n in state.lag_histogram_total().items()})
        body = b'{"steps":' + state.steps_json(since) + b',"lag_histogram_total":' + total.encode() + b"}"
        return Response(body, media_type="application/json")

    @app.get("/api/samples", response_model=list[SampleRecord])
    def samples(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=500, description="Most recent samples to return, newest first.")] = 50,
    ) -> list[SampleRecord]:
        return _state(request).samples(limit)

    @app.get("/metrics", include_in_schema=False)
    def prometheus(request: Request) -> Response:
        return Response(render(request.app.state.registry), media_type="text/plain; version=0.0.4; charset=utf-8")


def _add_control_routes(app: FastAPI) -> None:
    def route(action: str) -> None:
        @app.post(f"/api/{action}", response_model=ControlResponse, name=action)
        def control_action(control: Annotated[RunControl, Depends(_authorised_control)]) -> ControlResponse:
            getattr(control, action)()
            return ControlResponse(action=action)

    for action in ("pause", "resume", "stop"):
        route(action)
