"""The embedded demo (`vlm-agent train` with no model and no --config) makes no network call at all.

Run as a real subprocess in which every name lookup of a host other than this machine is recorded
and refused. CI's own switches (`CI`, `HF_HUB_OFFLINE`, which TRL and huggingface_hub honour) are
removed from its environment, so the test sees what a user on a laptop gets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

NETWORK_GUARD = '''
import os, socket

_log, _getaddrinfo = os.environ["NETWORK_LOG"], socket.getaddrinfo
_LOCAL = {"localhost", "127.0.0.1", "::1", "", None}


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL:
        with open(_log, "a") as log:
            log.write(f"{host}\\n")
        raise OSError(f"test: network call to {host} refused")
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _guarded_getaddrinfo
'''

# The demo's own config, shrunk to seconds: the same code path (local tiny model, alignment, SFT
# warm start through TRL's SFTTrainer, PPO, checkpoint, plot, held-out comparison), far fewer steps.
SHRINK = [
    "--num_envs", "2", "--num_steps", "2", "--total_timesteps", "4", "--max_new_tokens", "8",
    "--sft_num_demos", "4", "--sft_epochs", "1", "--ppo_epochs", "1", "--mini_batch_size", "2",
    "--align_projector_steps", "1", "--align_language_steps", "1", "--align_num_examples", "16",
    "--final_eval_episodes", "2", "--save_every", "1", "--no_progress_bar",
]  # fmt: skip


@pytest.mark.slow
def test_the_embedded_demo_never_tries_the_network(tmp_path: Path) -> None:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NETWORK_GUARD)
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                           "HF_HUB_DISABLE_TELEMETRY")}  # fmt: skip
    env.update(PYTHONPATH=os.pathsep.join([str(guard), str(REPO)]), NETWORK_LOG=str(log), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "vlm_agent.cli", "train", *SHRINK, "--output_dir", str(tmp_path / "run")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "policy").is_dir()
    assert not log.exists(), f"the demo tried the network: {log.read_text()}"
