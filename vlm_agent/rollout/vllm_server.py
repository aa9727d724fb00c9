"""A vLLM server for the run: an OpenAI-compatible HTTP client, and a local server process to talk to.

vLLM pins an older ``transformers`` than this project needs, so it never shares our virtual
environment: it runs as a separate server process from its own (``.venv-vllm``, made by
``bash .ci/make-vllm-venv``) and is reached over HTTP. :class:`VLLMServer` starts one on
127.0.0.1 for the run's model with LoRA enabled, waits for ``/health`` and stops it (its whole
process group) at the end, on errors and on Ctrl-C; :class:`VLLMClient` speaks to a started or an
already running server: the chat endpoint, and ``/v1/load_lora_adapter`` / ``/v1/unload_lora_adapter``
for the adapter the trainer has just saved.

Only the standard library: no vLLM, torch or transformers in this process.

Example (needs the vLLM venv; ~1 minute to start on 2 CPU cores)::

    from vlm_agent.rollout.vllm_server import VLLMServer, VLLMServerSettings

    with VLLMServer(VLLMServerSettings(model="/tmp/tiny", max_lora_rank=8)) as server:
        print(server.client.served_models())
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

#: Where `--vllm_python` points by default: the venv `bash .ci/make-vllm-venv` makes at the repository root.
DEFAULT_VLLM_PYTHON = "./.venv-vllm/bin/python"
#: The environment variable that overrides it.
VLLM_PYTHON_ENV = "VLM_AGENT_VLLM_PYTHON"
#: The name the local server serves its base model under.
SERVED_BASE_NAME = "policy"
#: Model types whose vLLM processor wants a video processor next to the weights.
_QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")


#: LoRA ranks a vLLM server accepts for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Environment of a local server unless already set: a 1 GiB key/value cache on a CPU (ignored on a
#: GPU), no OpenMP thread pinning (the machine's cores are shared), no model hub.
DEFAULT_SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0", "HF_HUB_OFFLINE": "1"}


def max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds adapters of rank ``rank``."""
    return next((allowed for allowed in VLLM_LORA_RANKS if allowed >= rank), rank)


def server_env() -> dict[str, str]:
    """:data:`DEFAULT_SERVER_ENV`, each value overridden by this process's environment."""
    return {name: os.environ.get(name, value) for name, value in DEFAULT_SERVER_ENV.items()}


class VLLMError(RuntimeError):
    """The vLLM server is unreachable, serves another model, refused a request or answered nonsense.

    Its message is one line saying which and what to do.
    """


def vllm_python(given: str | None = None) -> str:
    """The vLLM venv's Python: ``given``, else ``$VLM_AGENT_VLLM_PYTHON``, else ``./.venv-vllm/bin/python``."""
    return given or os.environ.get(VLLM_PYTHON_ENV) or DEFAULT_VLLM_PYTHON


class VLLMClient:
    """JSON over HTTP to an OpenAI-compatible vLLM server at ``url`` (e.g. ``http://127.0.0.1:8000``).

    Every failure is a :class:`VLLMError` with one line: connection refused or timed out, an HTTP
    error status (with the server's own message), or a body that is not the JSON expected.
    """

    def __init__(self, url: str, *, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def request(self, path: str, body: dict[str, Any] | None = None, *, timeout: float | None = None,
                expect_json: bool = True) -> Any:
        """POST ``body`` (GET without one) to ``path``; the decoded JSON answer (the text with
        ``expect_json=False``: the adapter endpoints answer a sentence), or None for an empty 200."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace").strip().replace("\n", " ")[:300]
            raise VLLMError(f"vLLM server {self.url}{path} answered HTTP {error.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise VLLMError(f"vLLM server {self.url} is unreachable ({reason}); start it, or check --vllm_url") from None
        if not raw.strip():
            return None
        if not expect_json:
            return raw.decode(errors="replace")
        try:
            return json.loads(raw)
        except ValueError:
            raise VLLMError(f"vLLM server {self.url}{path} answered malformed JSON: {raw[:120]!r}") from None

    def healthy(self) -> bool:
        """True when ``/health`` answers 200."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def served_models(self) -> list[dict[str, Any]]:
        """``/v1/models``' entries (``id``, ``root``: the base path or the adapter's, ``parent``)."""
        answer = self.request("/v1/models")
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise VLLMError(f"vLLM server {self.url}/v1/models answered malformed JSON (no 'data' list)")
        return answer["data"]

    def base_model(self, expected: str, *, also: Sequence[str] = ()) -> str:
        """The served name of the base model, after checking that it is ``expected`` (a path or a hub id)
        or one of ``also`` (other names of it, e.g. the view a local server loads).

        Raises:
            VLLMError: The server serves another model (one line naming both).
        """
        bases = [entry for entry in self.served_models() if not entry.get("parent")]
        wanted = {_same_model_key(name) for name in (expected, *also) if name}
        for entry in bases:
            if wanted & {_same_model_key(str(entry.get("root", ""))), _same_model_key(str(entry.get("id", "")))}:
                return str(entry["id"])
        served = ", ".join(str(entry.get("root") or entry.get("id")) for entry in bases) or "nothing"
        raise VLLMError(f"vLLM server {self.url} serves {served}, not the run's model {expected}; "
                        f"start it with --model {expected}")

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the PEFT adapter saved at ``path`` under ``name`` (``/v1/load_lora_adapter``)."""
        try:
            self.request("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(path).resolve())},
                         expect_json=False)
        except VLLMError as error:
            raise VLLMError(f"vLLM refused the LoRA adapter {name} ({error}); start the server with --enable-lora, "
                            "--max-lora-rank >= the run's lora_r and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True") from None

    def unload_adapter(self, name: str) -> None:
        """Unload the adapter ``name`` (``/v1/unload_lora_adapter``)."""
        self.request("/v1/unload_lora_adapter", {"lora_name": name}, expect_json=False)


def _same_model_key(name: str) -> str:
    """A model path resolved (symlinks followed) when it exists here, else the name as given."""
    path = Path(name)
    return str(path.resolve()) if path.exists() else name.rstrip("/")


@dataclass
class VLLMServerSettings:
    """How to start a local vLLM server for a run.

    Attributes:
        model: The base model (a local folder or a hub id).
        python: The vLLM venv's Python (see :func:`vllm_python`).
        max_lora_rank: The largest LoRA rank the server accepts (the run's ``lora_r`` or more).
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        max_num_seqs: Requests the server batches together (the run's ``num_envs``).
        extra_args: More server flags, e.g. ``--enforce-eager --max-model-len 1024`` on a CPU.
        startup_timeout: Seconds to wait for ``/health``.
        env: Environment variables for the server (``VLLM_CPU_KVCACHE_SPACE=1`` on a CPU).
    """

    model: str
    python: str = field(default_factory=vllm_python)
    max_lora_rank: int = 8
    dtype: str = "auto"
    max_num_seqs: int = 16
    extra_args: str = ""
    startup_timeout: float = 600.0
    env: dict[str, str] = field(default_factory=dict)


class VLLMServer:
    """A ``vllm`` OpenAI-compatible server process on 127.0.0.1 for one run (a context manager).

    Started in a process group of its own with the parent's death signal set, so :meth:`stop`
    (called by ``__exit__``, at interpreter exit and by the caller's ``finally``) ends vLLM's
    engine processes too and a killed trainer leaves no server behind. Its output goes to a log
    file whose tail is quoted when it fails to start.

    Flags it always passes: ``--enable-lora`` (the trainer's adapter is loaded after each update),
    ``--logprobs-mode processed_logprobs`` (log-probs at the sampling temperature, what PPO
    stores), ``--generation-config vllm`` (the model's own defaults, e.g. a repetition penalty,
    would change the distribution), one image and no video per prompt, and
    ``--max-num-batched-tokens 32768``: vLLM's CPU build crashed on seeded sampling under chunked
    prefill, which a budget larger than any prompt avoids.
    """

    def __init__(self, settings: VLLMServerSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    @property
    def client(self) -> VLLMClient:
        if self.port is None:
            raise VLLMError("the local vLLM server is not started")
        return VLLMClient(f"http://127.0.0.1:{self.port}")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command(self, model_dir: str, port: int) -> list[str]:
        """The server's command line."""
        s = self.settings
        return [
            s.python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", SERVED_BASE_NAME, "--host", "127.0.0.1", "--port", str(port),
            "--dtype", s.dtype, "--enable-lora", "--max-lora-rank", str(s.max_lora_rank), "--max-loras", "2",
            "--logprobs-mode", "processed_logprobs", "--generation-config", "vllm",
            "--limit-mm-per-prompt", '{"image":1,"video":0}', "--max-num-seqs", str(s.max_num_seqs),
            "--max-num-batched-tokens", "32768", *shlex.split(s.extra_args),
        ]

    def start(self) -> VLLMClient:
        """Start the server and wait until ``/health`` answers; returns its client.

        Raises:
            VLLMError: No vLLM venv at ``settings.python``, or the server died or did not answer in time
                (one line with the tail of its log).
        """
        s = self.settings
        if not Path(s.python).is_file():
            raise VLLMError(f"no vLLM venv: {s.python} does not exist; make it with `bash .ci/make-vllm-venv` "
                            f"or point --vllm_python (or ${VLLM_PYTHON_ENV}) at one")
        self._workdir = tempfile.TemporaryDirectory(prefix="vlm_agent_vllm_")
        workdir = Path(self._workdir.name)
        model_dir = self._serving_folder(workdir)
        self.port = _free_port()
        self.log_path = workdir / "server.log"
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", **s.env}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(model_dir, self.port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # preexec_fn only calls prctl through a function looked up before the fork (no import, no lock).
                env=env, start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + s.startup_timeout
        client = self.client
        while not client.healthy():
            if self.process.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise VLLMError(f"the vLLM server exited with status {self.process.returncode} while starting: {tail}")
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                raise VLLMError(f"the vLLM server did not answer /health within {s.startup_timeout:.0f} s: {tail}")
            time.sleep(1.0)
        return client

    def stop(self) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL after 20 s); safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # vLLM's engine processes, if any outlived it
            except (ProcessLookupError, PermissionError):
                pass
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        atexit.unregister(self.stop)

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line]
        return (errors[-1] if errors else lines[-1] if lines else "(empty log)")[:300]

    def _serving_folder(self, workdir: Path) -> str:
        """The folder vLLM loads: the model's own, or for a Qwen2-VL folder without a video processor
        (the project's tiny models save an image-only processor) a view of it (links to its files)
        plus one, which vLLM's Qwen2-VL processor insists on although the server takes no video."""
        model = Path(self.settings.model)
        config = model / "config.json"
        if not config.is_file() or (model / "video_preprocessor_config.json").is_file():
            return str(model)
        if json.loads(config.read_text()).get("model_type") not in _QWEN_VL_TYPES:
            return str(model)
        view = workdir / "model"
        view.mkdir()
        for item in model.resolve().iterdir():
            (view / item.name).symlink_to(item)
        image = json.loads((model / "processor_config.json").read_text()).get("image_processor", {}) \
            if (model / "processor_config.json").is_file() else {}
        options = {key: image[key] for key in ("patch_size", "merge_size", "temporal_patch_size") if key in image}
        script = ("import sys, json; from transformers import Qwen2VLVideoProcessor; "
                  "Qwen2VLVideoProcessor(**json.loads(sys.argv[2])).save_pretrained(sys.argv[1])")
        done = subprocess.run([self.settings.python, "-c", script, str(view), json.dumps(options)],
                              check=False, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise VLLMError(f"could not write a video processor for vLLM with {self.settings.python}: {last}")
        return str(view)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load_prctl() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: stop() and atexit still stop the server


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
