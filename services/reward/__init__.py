"""The reward service: sandboxed code verification and math verification over HTTP.

Who talks to it: the orchestrator (scores rollouts through `POST /v1/score`),
REST users and SandboxFusion clients such as verl's `sandbox_fusion` reward
(`POST /run_code`). It sits on the `sandbox` library for code execution and on
math-verify (run in killable worker processes) for math; it imports nothing
from `trainer/` or `orchestrator/` and needs no torch.

Layers: `api.py` (routes), `protocol.py` (HTTP models), `serving.py` (logic),
with the domain modules `math_verifier.py`, `math_pool.py`, `code_checks.py`,
`code_verifier.py` and `run_code.py` underneath.
"""
