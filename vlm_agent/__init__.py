"""vlm_agent: PPO fine-tuning of vision-language models as decision-making agents (after RL4VLM)."""

__version__ = "0.1.0.dev0"
