"""The reward service: sandboxed code verification and math verification over HTTP.

Who talks to it: the orchestrator (scores rollouts through `POST /v1/score`),
REST users and SandboxFusion clients such as verl's `sandbox_fusion` reward
(`POST /run_code`). It sits on the `sandbox` library for code execution and on
math-verify (run in killable worker processes) for math; it imports nothing
from `trainer/` or `orchestrator/` and needs no torch.

Layers: `api.py` (routes), `protocol.py` (HTTP models), `serving.py` (logic,
admission control), `settings.py`, `cli.py` (`aspo reward serve`), `metrics.py`;
domain modules underneath: `math_verifier.py` (extraction, one item),
`math_pool.py` (killable worker processes), `code_checks.py` (code extraction,
harnesses, comparison), `code_verifier.py` (tests in the sandbox), `run_code.py`
(SandboxFusion mapping), `errors.py` (input errors -> HTTP status).
"""
