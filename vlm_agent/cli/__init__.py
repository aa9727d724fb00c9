"""The ``vlm-agent`` command: ``train``, ``eval``, ``sft``, ``align``, ``make-tiny-model``, ``env``."""

from vlm_agent.cli.main import main

__all__ = ["main"]
