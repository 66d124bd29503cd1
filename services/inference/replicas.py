"""Which vLLM replicas can take work: shared by the client and the weight updater.

The pool keeps, per replica, the requests in flight (for least-loaded
routing), whether it is healthy (a connection error marks it down until a
``/health`` probe after ``health_recheck_s`` passes), whether the weight
updater took it out of rotation (it failed an update and serves unknown
weights), and which policy version and weights dir it serves.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx


class NoReplicaAvailable(RuntimeError):
    """Every replica is down or out of rotation; the message lists why per replica."""


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    healthy: bool = True
    down_since: float = 0.0
    in_rotation: bool = True
    last_error: str | None = None
    version: int | None = None  # policy version served (None = unknown)
    weights_path: str | None = None  # dir it was last loaded from (None = the start-up model)


class ReplicaPool:
    """Least-in-flight routing over replicas, skipping unhealthy ones."""

    def __init__(self, urls: list[str], health_recheck_s: float = 5.0) -> None:
        if not urls:
            raise ValueError("ReplicaPool needs at least one base URL")
        if len(set(urls)) != len(urls):
            raise ValueError(f"duplicate replica URLs: {urls}")
        self.replicas = [Replica(url=u.rstrip("/")) for u in urls]
        self.health_recheck_s = health_recheck_s
        self._lock = asyncio.Lock()

    def get(self, url: str) -> Replica:
        for r in self.replicas:
            if r.url == url.rstrip("/"):
                return r
        raise KeyError(url)

    def mark_down(self, replica: Replica, error: str) -> None:
        replica.healthy = False
        replica.down_since = time.monotonic()
        replica.last_error = error

    def take_out_of_rotation(self, replica: Replica, error: str) -> None:
        replica.in_rotation = False
        replica.last_error = error

    async def _probe(self, replica: Replica, http: httpx.AsyncClient) -> None:
        try:
            ok = (await http.get(f"{replica.url}/health", timeout=5.0)).status_code == 200
        except httpx.TransportError as err:
            ok, replica.last_error = False, f"health probe: {err!r}"
        if ok:
            replica.healthy, replica.last_error = True, None
        else:
            replica.down_since = time.monotonic()

    def _usable(self, exclude: set[str] | frozenset[str]) -> list[Replica]:
        return [r for r in self.replicas if r.in_rotation and r.healthy and r.url not in exclude]

    async def pick(
        self, http: httpx.AsyncClient, exclude: set[str] | frozenset[str] = frozenset()
    ) -> Replica:
        """The in-rotation healthy replica with fewest requests in flight (ties: list order).

        Replicas down for longer than ``health_recheck_s`` are re-probed first;
        when none is usable, every down replica is probed at once (a restarted
        single replica must not wait out the recheck interval).
        """
        now = time.monotonic()
        down = [
            r for r in self.replicas if r.in_rotation and not r.healthy and r.url not in exclude
        ]
        stale = [r for r in down if now - r.down_since >= self.health_recheck_s]
        if stale:
            await asyncio.gather(*(self._probe(r, http) for r in stale))
        if not self._usable(exclude) and down:
            await asyncio.gather(*(self._probe(r, http) for r in down if not r.healthy))
        candidates = self._usable(exclude)
        if not candidates:
            why = "; ".join(
                f"{r.url}: {'out of rotation' if not r.in_rotation else 'down'} ({r.last_error})"
                for r in self.replicas
            )
            raise NoReplicaAvailable(f"no inference replica available: {why}")
        return min(candidates, key=lambda r: r.in_flight)

    async def acquire(
        self, http: httpx.AsyncClient, exclude: set[str] | frozenset[str] = frozenset()
    ) -> Replica:
        """Pick a replica and count one request in flight on it; pair with :meth:`release`."""
        async with self._lock:  # pick + increment atomically so bursts spread out
            replica = await self.pick(http, exclude)
            replica.in_flight += 1
        return replica

    def acquire_url(self, url: str) -> Replica:
        """Count a request on one named replica (admin calls that must hit every replica)."""
        replica = self.get(url)
        replica.in_flight += 1
        return replica

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
