"""A tiny in-process stand-in for vLLM's RL endpoints (httpx.MockTransport), for logic tests.

Each replica (by host:port) has a served version, a pause flag, a list of
calls, and switches to make it fail: ``down`` (connection refused) or
``fail_reload`` (reload_weights answers 500). ``/inference/v1/generate``
answers n choices of ``max_tokens`` tokens, optionally after waiting on an
event so tests can hold requests in flight.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx


@dataclass
class FakeReplica:
    version: str = "0"
    model_root: str = "/models/base"
    paused: bool = False
    down: bool = False
    fail_reload: bool = False
    calls: list[str] = field(default_factory=list)
    reload_paths: list[str] = field(default_factory=list)


class FakeVLLM:
    def __init__(self, urls: list[str]) -> None:
        self.replicas = {httpx.URL(u).netloc.decode(): FakeReplica() for u in urls}
        self.release: asyncio.Event | None = None  # set by a test to hold generate requests
        self.generate_status = 200

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def replica(self, url: str) -> FakeReplica:
        return self.replicas[httpx.URL(url).netloc.decode()]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        rep = self.replicas[request.url.netloc.decode()]
        path = request.url.path
        if rep.down:
            raise httpx.ConnectError("connection refused", request=request)
        rep.calls.append(path)
        body = json.loads(request.content) if request.content else {}
        if path == "/health":
            return httpx.Response(200)
        if path == "/pause":
            rep.paused = True
            return httpx.Response(200, json={"status": "paused"})
        if path == "/resume":
            rep.paused = False
            return httpx.Response(200, json={"status": "resumed"})
        if path == "/collective_rpc":
            if rep.fail_reload:
                return httpx.Response(500, json={"error": "reload failed"})
            rep.reload_paths.append(body["kwargs"]["weights_path"])
            return httpx.Response(200, json={"results": [None]})
        if path == "/update_weight_version":
            rep.version = body["new_version"]
            return httpx.Response(200, json={"success": True})
        if path == "/weight_info":
            return httpx.Response(200, json={"weight_version": rep.version})
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "policy", "root": rep.model_root}]})
        if path == "/inference/v1/generate":
            return await self._generate(rep, body)
        return httpx.Response(404, json={"error": f"no route {path}"})

    async def _generate(self, rep: FakeReplica, body: dict) -> httpx.Response:
        if self.release is not None:
            await self.release.wait()
        if self.generate_status != 200:
            return httpx.Response(self.generate_status, json={"error": "bad request"})
        params = body["sampling_params"]
        n, t = params["n"], params["max_tokens"]
        choices = [
            {
                "index": i,
                "token_ids": list(range(10, 10 + t)),
                "logprobs": {"content": [{"token_id": 10 + j, "logprob": -0.5} for j in range(t)]},
                "finish_reason": "length",
                "weight_versions": [{"version": rep.version, "start": 0, "end": t}],
            }
            for i in reversed(range(n))  # out of order on purpose: the client sorts by index
        ]
        return httpx.Response(200, json={"request_id": body["request_id"], "choices": choices})
