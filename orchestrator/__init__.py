"""The orchestrator: the asynchronous RL loop users run.

It draws prompts from task sources, asks the inference service for groups of
samples (token ids, behaviour log-probs, per-token policy versions), scores
them through the reward service over HTTP, computes group-normalised
advantages, and publishes `RolloutGroup` messages for the trainer on the bus.
Admission control keeps every sample's policy lag within
`max_off_policy_steps`. It never imports `trainer/`: the two meet through
`services.bus` messages.
"""
