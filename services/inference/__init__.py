"""Inference service: real vLLM servers that sample rollouts, and how to talk to them.

- :mod:`.model`: the default SmolLM2-135M-Instruct, prepared offline; ``resolve_model``.
- :mod:`.server`: start/stop vLLM replicas with the RL flags (``aspo inference serve``).
- :mod:`.client`: async token-in/token-out client (orchestrator) with per-token
  behaviour log-probs and policy versions, load-balanced over replicas.
- :mod:`.weights`: live weight updates (pause -> reload -> version -> resume)
  with roll-back on failure; :mod:`.nccl_sync`: the GPU NCCL path (unverified here).
- :mod:`.protocol`, :mod:`.settings`: the typed boundary and the settings.
"""
