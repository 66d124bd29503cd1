"""`aspo orchestrator serve`: the loop plus its dashboard, in one process.

The dashboard's uvicorn runs in a thread and only reads `RunState`; the loop
runs in the main thread's event loop. SIGINT/SIGTERM ask the loop to stop
(in-flight groups finish, bookkeeping is saved); a second signal exits at once.
The dashboard URL is written to `<run_dir>/orchestrator/dashboard.json` so
`aspo run` and tests can find a port chosen at random.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

from orchestrator.loop import Orchestrator
from orchestrator.settings import OrchestratorSettings
from orchestrator.state import RunState
from services.bus.settings import BusSettings

log = logging.getLogger(__name__)


def dashboard_file(run_dir: Path) -> Path:
    return Path(run_dir) / "orchestrator" / "dashboard.json"


def serve(settings: OrchestratorSettings, bus: BusSettings, loss_name: str = "aspo") -> int:
    """Run the orchestrator until the run finishes or a signal stops it; returns an exit code."""
    from orchestrator.dashboard.api import create_dashboard_app
    from orchestrator.dashboard.server import DashboardServer

    state = RunState(settings.name)
    orch = Orchestrator(settings, bus, state)
    orch.loss_name = loss_name
    server = None
    if settings.dashboard.enabled:
        app = create_dashboard_app(state, orch, settings.dashboard.api_token)
        server = DashboardServer(app, settings.dashboard.host, settings.dashboard.port)
        url = server.start()
        path = dashboard_file(settings.run_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"url": url}))
        log.info("dashboard at %s", url)

    signals = {"count": 0}

    def on_signal(signum: int, _frame: object) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            raise KeyboardInterrupt
        log.info("signal %d: stopping after in-flight groups", signum)
        orch.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(orch.run())
        return 0 if orch.state.status().state in ("finished", "stopping") else 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if server is not None:
            server.stop()
