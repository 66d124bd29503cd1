"""The orchestrator's live dashboard: JSON endpoints, Prometheus metrics and a web page.

Who talks to it: the orchestrator loop builds the app over its `RunState`
(the only writer) and a `RunControl` (itself), and serves it with
`DashboardServer`; browsers poll `/api/*` every ~2 s; Prometheus scrapes
`/metrics`; operators pause/resume/stop a run with a bearer token.

The page (`static/`) is plain ES2017 with hand-written canvas charts and no
external resources, so it works air-gapped. Nothing here writes run state.
"""

from orchestrator.dashboard.api import create_dashboard_app
from orchestrator.dashboard.protocol import MetricsResponse, RunControl
from orchestrator.dashboard.server import DashboardServer
from orchestrator.dashboard.settings import DashboardSettings

__all__ = ["DashboardServer", "DashboardSettings", "MetricsResponse", "RunControl", "create_dashboard_app"]
