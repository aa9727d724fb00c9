"""Agents other than our trained policy, for the comparison of Table 1 of the RL4VLM paper.

- :mod:`~vlm_agent.baselines.simple`: random and expert players (floor and ceiling).
- :mod:`~vlm_agent.baselines.openai_chat`: any OpenAI-compatible chat-completions server.
- :mod:`~vlm_agent.baselines.gemini`: Gemini through ``google-genai``.
- :mod:`~vlm_agent.baselines.local_hf`: a local Hugging Face model through
  :class:`vlm_agent.policy.VLMPolicy`.
- :mod:`~vlm_agent.baselines.remote_agent`, :mod:`~vlm_agent.baselines.retry`,
  :mod:`~vlm_agent.baselines.response_cache`, :mod:`~vlm_agent.baselines.api_keys`: what API agents
  share (thread pool, backoff, on-disk answers, keys from the environment only).
- :mod:`~vlm_agent.baselines.method_spec`: ``"openai:gpt-4o"`` -> agent, for command lines.

The agents implement :class:`vlm_agent.agents.Agent`; nothing here imports
:mod:`vlm_agent.evaluation` (the loop imports the agents, not the other way round). Importing this
package imports neither torch nor an API SDK.
"""

from vlm_agent.baselines.method_spec import METHOD_SPEC_HELP, build_agent
from vlm_agent.eval_config import EvalConfig

AgentOptions = EvalConfig
"""Former name of the agent options, kept so that existing code runs: the same type as
:class:`vlm_agent.eval_config.EvalConfig` (one options type for evaluation)."""

__all__ = ["METHOD_SPEC_HELP", "AgentOptions", "build_agent"]
