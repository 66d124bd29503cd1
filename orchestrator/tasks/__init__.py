"""Task sources: what the orchestrator asks the policy to solve.

Every source yields `Task` records (a chat prompt, a kind, and what the reward
service needs to score it). Held-out evaluation splits are kept apart from
training splits by construction (disjoint seeds or disjoint records).
"""
