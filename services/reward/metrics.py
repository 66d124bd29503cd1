"""Prometheus metrics of the reward service (one registry per app, so tests can run several)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RewardMetrics:
    """Requests by endpoint and status, latencies, time-outs, item outcomes, pool use, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("aspo_reward_requests_total", "HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r)
        self.latency = Histogram("aspo_reward_request_seconds", "Request latency by endpoint.", ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.items = Counter("aspo_reward_items_total", "Verified items by kind (math, code, run_code) and outcome.", ["kind", "status"], registry=r)
        self.timeouts = Counter("aspo_reward_timeouts_total", "Time-outs: math items past their deadline, code tests and runs past their limit.", ["kind"], registry=r)
        self.rejected = Counter("aspo_reward_rejected_total", "Requests refused with 503 because the queue was full.", registry=r)
        self.queue_depth = Gauge("aspo_reward_queue_depth", "Requests waiting for a work slot.", registry=r)
        self.inflight = Gauge("aspo_reward_inflight", "Requests being worked on.", registry=r)
        self.pool_workers = Gauge("aspo_reward_pool_workers", "Workers per pool (sandbox, math).", ["pool"], registry=r)
        self.pool_busy = Gauge("aspo_reward_pool_busy", "Busy workers per pool.", ["pool"], registry=r)
        self.pool_utilisation = Gauge("aspo_reward_pool_utilisation", "Busy / workers per pool.", ["pool"], registry=r)
        self.pool_restarts = Gauge("aspo_reward_pool_restarts", "Workers replaced so far per pool.", ["pool"], registry=r)

    def set_pool(self, pool: str, stats: dict[str, Any]) -> None:
        workers = float(stats.get("workers") or 0)
        busy = float(stats.get("busy") or 0)
        self.pool_workers.labels(pool).set(workers)
        self.pool_busy.labels(pool).set(busy)
        self.pool_utilisation.labels(pool).set(busy / workers if workers else 0.0)
        self.pool_restarts.labels(pool).set(float(stats.get("restarts") or 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
