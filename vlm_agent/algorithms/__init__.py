"""The RL algorithms: PPO (:mod:`.ppo`) and the critic-free GRPO, Dr. GRPO, RLOO and GiGPO (:mod:`.group`).

This package's ``__init__`` imports nothing, so the torch-free configs can read its names.
"""

LOSS_AGGREGATIONS = ("step", "episode")
"""How a critic-free loss weighs a round's steps: each step alike, or each episode alike
(:func:`vlm_agent.algorithms.group.episode_mean_weights`)."""
