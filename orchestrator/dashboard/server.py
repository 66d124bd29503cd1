"""Serve a dashboard app with uvicorn in a background thread of the orchestrator process.

The loop keeps running in the main thread and writes `RunState`; the server
thread only reads it. The socket is bound before the thread starts, so port 0
works and `port` is known as soon as `start()` returns; `stop()` asks uvicorn
to exit and joins the thread (no stray server after a run or a test).
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


class DashboardServer:
    """uvicorn on a pre-bound socket, in a daemon thread."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._log_level = log_level
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("DashboardServer is not started")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self, ready_timeout_s: float = 30.0) -> str:
        """Bind, start serving, wait until uvicorn accepts connections; returns the base URL."""
        if self._thread is not None:
            raise RuntimeError("DashboardServer already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._requested_port))
        except OSError as err:
            sock.close()
            raise OSError(f"dashboard cannot listen on {self._host}:{self._requested_port}: {err}") from err
        self._socket = sock
        config = uvicorn.Config(self._app, log_level=self._log_level, lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="dashboard-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + ready_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                self.stop()
                raise RuntimeError("dashboard server thread exited during start-up (see its log)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"dashboard server did not start within {ready_timeout_s} s")
            time.sleep(0.02)
        return self.url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit, join its thread, close the socket. Safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError(f"dashboard server did not stop within {timeout_s} s")
        if self._socket is not None:
            self._socket.close()
        self._server, self._thread, self._socket = None, None, None
