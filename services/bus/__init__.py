"""The bus: typed messages and the Redis-streams transport between components.

`messages` defines every message that crosses a process boundary (rollout
groups orchestrator -> trainer, policy-version announcements trainer -> the
rest, metric events all -> dashboard). This package imports none of its users.
"""
