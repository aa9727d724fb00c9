"""The vLLM rollout engine without vLLM: its refusals, its one-line errors against real HTTP servers on
127.0.0.1 that answer wrongly (malformed JSON, another model, a refused adapter, nobody listening),
and the mismatch / truncated-importance formulas. The engine against a real vLLM server is tested in
tests/test_vllm_slow.py (slow suite)."""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from model_helpers import run_cli, tiny_train_flags

from vlm_agent.algorithms.engine_mismatch import mismatch_stats, truncated_importance_weights
from vlm_agent.rollout.vllm_server import VLLMClient, VLLMError, VLLMServer, VLLMServerSettings

LANGUAGE_LORA = ["--lora_target_modules", "q_proj,k_proj,v_proj,o_proj"]


# ---------------------------------------------------------------- formulas
def test_mismatch_stats_by_hand() -> None:
    engine = torch.tensor([-1.0, -2.0, -0.5])
    trainer = torch.tensor([-1.5, -2.0, -0.25])
    mean_abs, kl = mismatch_stats(engine, trainer)
    assert mean_abs == pytest.approx((0.5 + 0.0 + 0.25) / 3)
    assert kl == pytest.approx((0.5 + 0.0 - 0.25) / 3)
    assert mismatch_stats(torch.zeros(0), torch.zeros(0)) == (0.0, 0.0)
    with pytest.raises(ValueError, match="differ"):
        mismatch_stats(torch.zeros(2), torch.zeros(3))


def test_truncated_importance_weights_by_hand() -> None:
    trainer = torch.tensor([-1.0, -1.0, -3.0])
    engine = torch.tensor([-1.0, -2.0, -1.0])
    weights = truncated_importance_weights(trainer, engine, cap=2.0)
    assert weights.tolist() == pytest.approx([1.0, 2.0, math.exp(-2.0)])  # e^1 = 2.72 capped at 2
    with pytest.raises(ValueError, match="positive"):
        truncated_importance_weights(trainer, engine, cap=0.0)


# ---------------------------------------------------------------- refusals before anything is built
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--use_lora", "False"], "full-parameter weight sync is out of scope"),
        ([], "also puts LoRA on the vision tower"),
        (["--old_log_probs", "engine_tis", "--rollout_engine", "hf"], "needs an engine outside the trainer"),
        ([*LANGUAGE_LORA, "--tis_cap", "0"], "tis_cap=0.0 must be a positive finite number"),
        ([*LANGUAGE_LORA, "--rollout_engine", "sglang"], "rollout_engine='sglang' is not an engine"),
    ],
)
def test_refused_configurations_are_one_line(extra, message, tiny_model_dir, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    argv = [*tiny_train_flags(tiny_model_dir("qwen2_vl"), run_dir, 4), "--rollout_engine", "vllm", *extra]
    capsys.readouterr()
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vlm-agent train: error: ") and message in lines[0], lines[0]
    assert not run_dir.exists()


def test_no_vllm_venv_is_one_line() -> None:
    server = VLLMServer(VLLMServerSettings(model="/nonexistent", python="/nonexistent/python"))
    with pytest.raises(VLLMError, match=r"no vLLM venv: /nonexistent/python does not exist; make it with"):
        server.start()
    assert server.process is None


# ---------------------------------------------------------------- servers that answer wrongly
class _Scripted(BaseHTTPRequestHandler):
    """Answers each path with the (status, body) in the server's `script`."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.requests.append((self.path, self.rfile.read(length)))  # type: ignore[attr-defined]
        status, body = self.server.script.get(self.path, (404, b'{"error": "no such path"}'))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    server.script, server.requests = {}, []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _models(root: str) -> tuple[int, bytes]:
    return 200, json.dumps({"data": [{"id": "served", "root": root, "parent": None}]}).encode()


def test_malformed_json_is_one_line(scripted_server) -> None:
    scripted_server.script["/v1/models"] = (200, b"<html>not json</html>")
    with pytest.raises(VLLMError, match=r"/v1/models answered malformed JSON: b'<html>not json</html>'"):
        VLLMClient(_url(scripted_server)).served_models()
    scripted_server.script["/v1/models"] = (200, b'{"object": "list"}')
    with pytest.raises(VLLMError, match=r"malformed JSON \(no 'data' list\)"):
        VLLMClient(_url(scripted_server)).served_models()


def test_wrong_model_served_is_one_line(scripted_server, tmp_path) -> None:
    scripted_server.script["/v1/models"] = _models("/models/other")
    client = VLLMClient(_url(scripted_server))
    with pytest.raises(VLLMError, match=f"serves /models/other, not the run's model {tmp_path}; start it with --model"):
        client.base_model(str(tmp_path))
    scripted_server.script["/v1/models"] = _models(str(tmp_path))
    assert client.base_model(str(tmp_path)) == "served"


def test_refused_adapter_is_one_line(scripted_server, tmp_path) -> None:
    scripted_server.script["/v1/load_lora_adapter"] = (400, b'{"error": {"message": "LoRA rank 64 is greater than\n max_lora_rank 8"}}')
    with pytest.raises(VLLMError) as raised:
        VLLMClient(_url(scripted_server)).load_adapter("a1", tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert "refused the LoRA adapter a1" in message and "HTTP 400" in message and "max_lora_rank 8" in message
    _, body = scripted_server.requests[-1]
    assert json.loads(body) == {"lora_name": "a1", "lora_path": str(tmp_path.resolve())}


def test_unreachable_server_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens once closed
    with pytest.raises(VLLMError, match=rf"vLLM server http://127.0.0.1:{port} is unreachable .*check --vllm_url"):
        VLLMClient(f"http://127.0.0.1:{port}").served_models()


def test_train_against_a_wrong_server_stops_with_one_line(scripted_server, tiny_model_dir, tmp_path, monkeypatch,
                                                          capsys) -> None:
    """`vlm-agent train --rollout_engine vllm --vllm_url URL` where URL serves another model: one line, status 1."""
    monkeypatch.chdir(tmp_path)
    scripted_server.script["/v1/models"] = _models("/models/other")
    run_dir = tmp_path / "run"
    argv = [*tiny_train_flags(tiny_model_dir("qwen2_vl"), run_dir, 4), "--rollout_engine", "vllm",
            "--vllm_url", _url(scripted_server), *LANGUAGE_LORA]
    capsys.readouterr()
    assert run_cli(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert "serves /models/other, not the run's model" in lines[0]
    assert "the run stopped before its first checkpoint" in lines[0]


def test_engine_refuses_full_parameter_policy(tiny_model_dir) -> None:
    from vlm_agent.models.loading import ModelSettings
    from vlm_agent.models.policy import VLMPolicy
    from vlm_agent.rollout.vllm_engine import VLLMEngine

    path = str(tiny_model_dir("qwen2_vl"))
    full = VLMPolicy.from_model(ModelSettings(path, use_lora=False))
    with pytest.raises(VLLMError, match="full-parameter weight sync is not supported"):
        VLLMEngine(full, np.random.default_rng(0), adapter_dir="unused", model=path, url="http://127.0.0.1:1")
    tower = VLMPolicy.from_model(ModelSettings(path, lora_r=4, lora_alpha=8))  # all-linear: the vision tower too
    with pytest.raises(VLLMError, match="vLLM applies LoRA to the language model only, but the adapter also covers"):
        VLLMEngine(tower, np.random.default_rng(0), adapter_dir="unused", model=path, url="http://127.0.0.1:1")


def test_rollout_engines_benchmark_writes_its_table_for_hf(tmp_path, torch_single_thread) -> None:
    """benchmarks/rollout_engines.py at tiny size with the in-process engine (the vLLM row needs the
    vLLM venv: tests/test_vllm_slow.py covers the engine), so the script cannot rot."""
    from benchmarks.rollout_engines import main

    assert main(["--engines", "hf", "--num-envs", "2", "--steps", "1", "--new-tokens", "4", "--out-dir",
                 str(tmp_path)]) == 0
    table = (tmp_path / "rollout_engines.md").read_text()
    assert "| hf | 2 |" in table and "| - | - |" in table  # no mismatch columns for the trainer's own engine
    rows = (tmp_path / "rollout_engines.csv").read_text().splitlines()
    assert rows[0].startswith("engine,num_envs,steps,env_steps,seconds,env_steps_per_s") and len(rows) == 2


def test_eval_refuses_an_unknown_engine_in_one_line(tmp_path, capsys) -> None:
    assert run_cli(["eval", "--methods", "expert", "--rollout_engine", "sglang", "--out_dir", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("vlm-agent eval: error: ") and "rollout_engine='sglang' is not an engine" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


def test_engine_metrics_and_tis_weights_from_samples() -> None:
    """`engine/*` metrics over every sampled token of the update, TIS weights per answer."""
    from vlm_agent.models.batching import PolicySample
    from vlm_agent.training.ppo_config import VLMPPOConfig
    from vlm_agent.training.rollout_engines import advantage_weights, engine_metrics

    def sample(trainer_tokens, engine_tokens, log_prob, engine_log_prob):
        return PolicySample(
            prompt_ids=torch.zeros(1), prompt_token_inputs={}, image_inputs={}, completion_ids=torch.zeros(len(trainer_tokens)),
            thought_mask=torch.zeros(len(trainer_tokens), dtype=torch.bool),
            action_mask=torch.ones(len(trainer_tokens), dtype=torch.bool), log_prob=log_prob, value=0.0,
            engine_log_prob=engine_log_prob, engine_token_log_probs=torch.tensor(engine_tokens),
            trainer_token_log_probs=torch.tensor(trainer_tokens))

    samples = [sample([-1.0, -2.0], [-1.5, -2.0], -3.0, -3.5), sample([-0.5], [-0.25], -0.5, -0.25)]
    tis = VLMPPOConfig(model_name_or_path="m", rollout_engine="vllm", lora_target_modules="q_proj",
                       old_log_probs="engine_tis", tis_cap=1.5)
    metrics = engine_metrics(samples, tis)
    assert metrics["engine/mean_abs_delta_logp"] == pytest.approx((0.5 + 0 + 0.25) / 3)
    assert metrics["engine/kl"] == pytest.approx((-0.5 + 0 + 0.25) / 3)
    assert advantage_weights(samples, tis).tolist() == pytest.approx([1.5, math.exp(-0.25)])  # e^0.5 capped
    assert metrics["engine/tis_weight_mean"] == pytest.approx((1.5 + math.exp(-0.25)) / 2)
    assert metrics["engine/tis_capped_share"] == 0.5
    trainer = dataclasses.replace(tis, old_log_probs="trainer")
    assert advantage_weights(samples, trainer) is None and "engine/tis_weight_mean" not in engine_metrics(samples, trainer)
    hf = [dataclasses.replace(s, engine_token_log_probs=None) for s in samples]
    assert engine_metrics(hf, trainer) == {}
