"""The trainer: turns scored rollouts into policy updates and published weights.

It consumes ``RolloutGroup`` messages from ``services.bus`` (through a
``RolloutSource``), trains a transformers causal LM with one of the registered
policy losses (ASPO, arXiv 2510.06062, and its baselines), writes checkpoints
with exact resume, publishes each new policy as an HF safetensors directory
``<run>/policy/v<N>`` and announces it as a ``PolicyVersion`` message (through
a ``PolicyAnnouncer``). It is algorithm-blind apart from the loss: advantages
arrive in the messages. It never imports ``orchestrator/``.
"""
