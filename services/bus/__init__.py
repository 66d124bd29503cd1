"""The bus: typed messages and the Redis-streams transport between components.

Modules: `messages` (wire types), `settings` (BusSettings), `redis_server`
(a private AOF redis-server or REDIS_URL), `producer` / `transport` (bounded
work queues with consumer groups), `broadcast` (fan-out announcements),
`idempotency` (the trained-ids ledger), `channels` (every named stream built
from BusSettings), `status` and `cli` (`aspo bus ...`).

`messages` defines every message that crosses a process boundary (rollout
groups orchestrator -> trainer, policy-version announcements trainer -> the
rest, metric events all -> dashboard). This package imports none of its users.
"""
