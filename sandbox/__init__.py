"""Sandboxed execution of untrusted programs (Python 3, C++).

A library with no HTTP: `services/reward` sits on it. Programs run inside
bubblewrap namespaces (no network, own PID namespace, read-only runtime view,
a private size-capped work dir) with wall-clock, CPU, memory, process, file
size and open-file limits. The public surface is `sandbox.protocol` (the
request/result models) and `sandbox.pool.SandboxPool` (a warm pool of
pre-started, isolated fork servers). See docs/security.md for the isolation
model and what it does not protect against.
"""
