"""API baselines against real HTTP servers on 127.0.0.1, through the real SDKs.

:class:`ScriptedModelServer` is a stdlib ``ThreadingHTTPServer`` that speaks the OpenAI
chat-completions protocol (``POST /v1/chat/completions``) and the Gemini ``generateContent``
protocol (``POST /v1beta/models/<model>:generateContent``). What it answers comes from a script of
steps (answer text, HTTP error, hang); every request is recorded with its headers and body. The
``openai`` and ``google-genai`` clients talk to it over real sockets.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import random
import re
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vlm_agent.evaluation.eval_config import EvalConfig as AgentOptions
from vlm_agent.evaluation.method_spec import build_agent
from vlm_agent.agents.gemini import GeminiAgent
from vlm_agent.agents.openai_chat import OpenAIChatAgent
from vlm_agent.agents.remote import ModelRequestError
from vlm_agent.agents.retry import RetryPolicy, backoff_delay
from vlm_agent.rollout.agent import Agent, AgentInput, TokenUsage

OPENAI_KEY = "sk-test-0123456789abcdefSECRET"
GEMINI_KEY = "AIzaTest-0123456789abcdefSECRET"


# --------------------------------------------------------------------------------------------
# The scripted server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Answer with this text (and these token counts)."""

    text: str
    prompt_tokens: int = 11
    completion_tokens: int = 7


@dataclass(frozen=True)
class Fail:
    """Answer with an HTTP error; ``echo_key`` puts the received key in the body (hostile server).

    ``echo_times`` repeats the echo (numbered, after ``padding``) so that some copy straddles any
    cut of the message; ``retry_after`` is sent as the ``Retry-After`` header.
    """

    status: int
    echo_key: bool = False
    echo_times: int = 1
    padding: str = ""
    retry_after: str | None = None


@dataclass(frozen=True)
class Hang:
    """Hold the request this long before answering (longer than the client's timeout)."""

    seconds: float


@dataclass(frozen=True)
class RawBody:
    """Answer 200 with this JSON body as is (malformed protocol responses)."""

    body: dict[str, Any]


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedModelServer:
    """A real OpenAI + Gemini protocol server whose answers follow a script."""

    def __init__(self) -> None:
        self.script: deque[Any] = deque()
        self.responder: Callable[[RecordedRequest], Any] | None = None
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.barrier: threading.Barrier | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                request = RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()},
                                          body)
                with server._lock:
                    server.requests.append(request)
                    step = server.script.popleft() if server.script else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.barrier is not None:
                        server.barrier.wait()
                    if step is None:
                        assert server.responder is not None, "script ran out and no responder set"
                        step = server.responder(request)
                    server._answer(self, request, step)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._http.server_address[1]

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def gemini_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, step: Any) -> None:
        gemini = ":generateContent" in request.path
        if isinstance(step, Hang):
            time.sleep(step.seconds)
            step = Reply('{"action": "late"}')
        if isinstance(step, RawBody):
            self._send(handler, 200, step.body)
        elif isinstance(step, Fail):
            key = request.headers.get("authorization", request.headers.get("x-goog-api-key", ""))
            message = f"scripted failure {step.status}"
            if step.echo_key:
                message += "; you sent " + step.padding + "".join(
                    f"{index:03d}{key}" for index in range(step.echo_times))
            body = ({"error": {"code": step.status, "message": message, "status": "UNAVAILABLE"}}
                    if gemini else {"error": {"message": message, "type": "server_error",
                                              "code": step.status}})
            headers = {"Retry-After": step.retry_after} if step.retry_after is not None else {}
            self._send(handler, step.status, body, headers)
        elif gemini:
            self._send(handler, 200, {
                "candidates": [{"content": {"role": "model", "parts": [{"text": step.text}]},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": step.prompt_tokens,
                                  "candidatesTokenCount": step.completion_tokens,
                                  "totalTokenCount": step.prompt_tokens + step.completion_tokens},
                "modelVersion": request.path.split("/models/")[1].split(":")[0],
            })
        else:
            self._send(handler, 200, {
                "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
                "created": 0, "model": request.body.get("model", ""),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": step.text}}],
                "usage": {"prompt_tokens": step.prompt_tokens,
                          "completion_tokens": step.completion_tokens,
                          "total_tokens": step.prompt_tokens + step.completion_tokens},
            })

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        try:
            handler.send_response(status)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    model_server = ScriptedModelServer()
    yield model_server
    model_server.close()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("GEMINI_API_KEY", GEMINI_KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)


class RecordedSleeps:
    """Stands in for time.sleep in RetryPolicy: records the waits, waits not at all."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_agent(provider: str, server: ScriptedModelServer, **overrides: Any) -> Any:
    sleeps = overrides.pop("sleeps", RecordedSleeps())
    settings: dict[str, Any] = {
        "concurrency": 2, "timeout_s": 5.0, "temperature": 0.2, "max_new_tokens": 64,
        "retry": RetryPolicy(max_retries=3, base_delay_s=0.5, max_delay_s=4.0, jitter=0.5,
                             seed=7, sleep=sleeps),
    }
    settings.update(overrides)
    if provider == "openai":
        return OpenAIChatAgent("test-vlm", base_url=server.openai_url, **settings)
    return GeminiAgent("gemini-test", base_url=server.gemini_url, **settings)


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def agent_input(prompt: str = "Target 3, current 1. Answer in JSON.", seed: int = 0) -> AgentInput:
    return AgentInput(image=image(seed), prompt=prompt, legal_actions=["-", "+"], expert_action=1)


def sent_image_and_prompt(request: RecordedRequest) -> tuple[np.ndarray, str]:
    """Decode the PNG and the prompt text a client sent, in either protocol."""
    if ":generateContent" in request.path:
        parts = request.body["contents"][0]["parts"]
        inline = parts[0]["inlineData"] if "inlineData" in parts[0] else parts[0]["inline_data"]
        assert inline.get("mimeType", inline.get("mime_type")) == "image/png"
        data = inline["data"]
        # The SDK may send URL-safe base64 without padding; the API accepts both alphabets.
        png = base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_")
        prompt = parts[1]["text"]
    else:
        content = request.body["messages"][0]["content"]
        url = content[0]["image_url"]["url"]
        prefix = "data:image/png;base64,"
        assert url.startswith(prefix)
        png = base64.b64decode(url[len(prefix):])
        prompt = content[1]["text"]
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), prompt


PROVIDERS = ["openai", "gemini"]


# --------------------------------------------------------------------------------------------
# Success, protocol details, usage
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_success_sends_image_prompt_and_settings_and_counts_tokens(
        provider: str, server: ScriptedModelServer, keys: None) -> None:
    server.script.extend([Reply('{"thoughts": "go right", "action": "+"}', 100, 20),
                          Reply('{"action": "-"}', 50, 5)])
    agent = make_agent(provider, server, concurrency=1)
    inputs = [agent_input("first prompt", seed=1), agent_input("second prompt", seed=2)]
    answers = agent.respond(inputs)
    agent.close()

    assert answers == ['{"thoughts": "go right", "action": "+"}', '{"action": "-"}']
    assert len(server.requests) == 2
    for request, sent in zip(server.requests, inputs):
        pixels, prompt = sent_image_and_prompt(request)
        np.testing.assert_array_equal(pixels, sent.image)
        assert prompt == sent.prompt
    first = server.requests[0]
    if provider == "openai":
        assert first.path == "/v1/chat/completions"
        assert first.body["model"] == "test-vlm"
        assert first.body["temperature"] == 0.2 and first.body["max_tokens"] == 64
        assert first.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    else:
        # google-genai 3 calls /v1, older releases /v1beta: the server accepts both.
        assert re.fullmatch(r"/v1(beta)?/models/gemini-test:generateContent", first.path)
        config = first.body["generationConfig"]
        assert config["temperature"] == 0.2 and config["maxOutputTokens"] == 64
        assert first.headers["x-goog-api-key"] == GEMINI_KEY
    assert agent.usage() == TokenUsage(prompt_tokens=150, completion_tokens=25, requests=2)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batch_answers_keep_input_order_and_respect_concurrency(
        provider: str, server: ScriptedModelServer, keys: None) -> None:
    # Each request waits at a barrier for two others: with fewer than 3 concurrent requests the
    # barrier times out (BrokenBarrierError -> 500s -> the test fails); more than 3 is recorded.
    server.barrier = threading.Barrier(3, timeout=10)
    server.responder = lambda request: Reply(
        json.dumps({"action": sent_image_and_prompt(request)[1]}))
    agent = make_agent(provider, server, concurrency=3)
    prompts = [f"prompt {index}" for index in range(6)]
    answers = agent.respond([agent_input(prompt, seed=index) for index, prompt in
                             enumerate(prompts)])
    agent.close()
    assert [json.loads(answer)["action"] for answer in answers] == prompts
    assert server.max_in_flight == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_answer_text_is_returned_for_the_parser(
        provider: str, server: ScriptedModelServer, keys: None) -> None:
    from vlm_agent.prompting.parsing import parse_action

    junk = "I think the best move is probably to go... {action: "
    server.script.append(Reply(junk))
    agent = make_agent(provider, server)
    [answer] = agent.respond([agent_input()])
    agent.close()
    assert answer == junk
    assert parse_action(answer, ["-", "+"]).index is None


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_protocol_response_is_a_clear_error(
        provider: str, server: ScriptedModelServer, keys: None) -> None:
    body = {"candidates": []} if provider == "gemini" else {
        "id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
    server.script.append(RawBody(body))
    agent = make_agent(provider, server)
    with pytest.raises(ModelRequestError, match="no (choices|candidates)"):
        agent.respond([agent_input()])
    agent.close()
    assert len(server.requests) == 1  # not retried: a malformed answer will not fix itself


def test_gemini_blocked_prompt_is_an_empty_answer(server: ScriptedModelServer, keys: None) -> None:
    server.script.append(RawBody({"promptFeedback": {"blockReason": "SAFETY"},
                                  "usageMetadata": {"promptTokenCount": 3}}))
    agent = make_agent("gemini", server)
    assert agent.respond([agent_input()]) == [""]
    agent.close()


# --------------------------------------------------------------------------------------------
# Retries, give-up, timeouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rate_limit_then_success_retries_with_seeded_backoff(
        provider: str, server: ScriptedModelServer, keys: None) -> None:
    server.script.extend([Fail(429), Fail(429), Fail(503), Reply('{"action": "+"}')])
    sleeps = RecordedSleeps()
    agent = make_agent(provider, server, sleeps=sleeps)
    assert agent.respond([agent_input()]) == ['{"action": "+"}']
    agent.close()

    assert len(server.requests) == 4
    assert agent.usage().retries == 3 and agent.usage().requests == 1
    # The same seed gives the same jittered waits: 0.5 * 2**k, capped at 4, times 1 - 0.5 + 0.5 u.
    rng = random.Random(7)
    expected = [backoff_delay(attempt, 0.5, 4.0, 0.5, rng.random()) for attempt in range(3)]
    assert sleeps.waits == pytest.approx(expected)
    assert 0.25 <= sleeps.waits[0] <= 0.5 and 0.5 <= sleeps.waits[1] <= 1.0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_server_errors_until_give_up(provider: str, server: ScriptedModelServer,
                                     keys: None) -> None:
    server.responder = lambda request: Fail(500)
    sleeps = RecordedSleeps()
    agent = make_agent(provider, server, sleeps=sleeps)
    with pytest.raises(ModelRequestError, match="gave up after 4 attempts") as raised:
        agent.respond([agent_input()])
    agent.close()
    assert len(server.requests) == 4  # 1 attempt + max_retries=3
    assert len(sleeps.waits) == 3
    assert "500" in str(raised.value)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_client_error_is_not_retried(provider: str, server: ScriptedModelServer,
                                     keys: None) -> None:
    server.script.append(Fail(404))
    agent = make_agent(provider, server)
    with pytest.raises(ModelRequestError, match="not retried"):
        agent.respond([agent_input()])
    agent.close()
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeout_is_retried(provider: str, server: ScriptedModelServer, keys: None) -> None:
    server.script.extend([Hang(3.0), Reply('{"action": "-"}')])
    agent = make_agent(provider, server, timeout_s=0.3)
    assert agent.respond([agent_input()]) == ['{"action": "-"}']
    agent.close()
    assert agent.usage().retries == 1
    assert len(server.requests) == 2


# --------------------------------------------------------------------------------------------
# The response cache
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rerun_is_served_from_the_cache(provider: str, server: ScriptedModelServer, keys: None,
                                        tmp_path: Path) -> None:
    # Answer by prompt, not by arrival order: two requests run concurrently.
    server.responder = lambda request: Reply(
        '{"action": "+"}' if sent_image_and_prompt(request)[1] == "up" else '{"action": "-"}', 30, 4)
    first = make_agent(provider, server, cache_dir=str(tmp_path))
    inputs = [agent_input("up", seed=1), agent_input("down", seed=2)]
    assert first.respond(inputs) == ['{"action": "+"}', '{"action": "-"}']
    first.close()
    assert first.usage() == TokenUsage(prompt_tokens=60, completion_tokens=8, requests=2)
    assert len(list(tmp_path.glob("*/*.json"))) == 2

    rerun = make_agent(provider, server, cache_dir=str(tmp_path))
    again = rerun.respond(inputs[::-1])
    rerun.close()
    assert len(server.requests) == 2  # the server saw no second request
    assert again == ['{"action": "-"}', '{"action": "+"}']
    assert rerun.usage() == TokenUsage(cache_hits=2)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cache_key_covers_image_prompt_model_and_sampling(
        provider: str, server: ScriptedModelServer, keys: None, tmp_path: Path) -> None:
    server.responder = lambda request: Reply('{"action": "+"}')
    agent = make_agent(provider, server, cache_dir=str(tmp_path))
    agent.respond([agent_input("p", seed=1)])
    agent.respond([agent_input("p", seed=2)])  # another image
    agent.respond([agent_input("q", seed=1)])  # another prompt
    agent.close()
    hotter = make_agent(provider, server, cache_dir=str(tmp_path), temperature=0.9)
    hotter.respond([agent_input("p", seed=1)])  # another temperature
    hotter.close()
    assert len(server.requests) == 4
    same = make_agent(provider, server, cache_dir=str(tmp_path))
    same.respond([agent_input("p", seed=1)])
    same.close()
    assert len(server.requests) == 4


@pytest.mark.parametrize(("temperature", "requests_first_run"), [(0.7, 3), (0.0, 1)])
def test_repeated_questions_are_separate_samples_unless_greedy(
        server: ScriptedModelServer, keys: None, tmp_path: Path, temperature: float,
        requests_first_run: int) -> None:
    answers = iter(['{"action": "+"}', '{"action": "-"}', '{"action": "+"}'])
    server.responder = lambda request: Reply(next(answers))
    # The same state three times in a run (NumberLine revisits positions all the time).
    first = make_agent("openai", server, cache_dir=str(tmp_path), temperature=temperature,
                       concurrency=1)
    first_answers = first.respond([agent_input()] * 2) + first.respond([agent_input()])
    first.close()
    assert len(server.requests) == requests_first_run
    rerun = make_agent("openai", server, cache_dir=str(tmp_path), temperature=temperature,
                       concurrency=1)
    assert rerun.respond([agent_input()] * 3) == first_answers  # replayed in the same order
    rerun.close()
    assert len(server.requests) == requests_first_run
    assert rerun.usage().cache_hits == 3


def test_corrupt_cache_entry_warns_and_is_refetched(server: ScriptedModelServer, keys: None,
                                                    tmp_path: Path) -> None:
    server.script.extend([Reply('{"action": "+"}'), Reply('{"action": "-"}')])
    agent = make_agent("openai", server, cache_dir=str(tmp_path))
    agent.respond([agent_input()])
    agent.close()
    [entry] = tmp_path.glob("*/*.json")
    entry.write_text('{"text": "half-writ', encoding="utf-8")
    rerun = make_agent("openai", server, cache_dir=str(tmp_path))
    with pytest.warns(RuntimeWarning, match="corrupt response-cache entry"):
        assert rerun.respond([agent_input()]) == ['{"action": "-"}']
    rerun.close()
    assert len(server.requests) == 2
    assert json.loads(entry.read_text())["text"] == '{"action": "-"}'  # rewritten
    assert not list(tmp_path.glob("*/*.tmp"))  # atomic writes leave no temporary files


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_api_key_never_leaks_into_logs_errors_cache_or_results(
        provider: str, server: ScriptedModelServer, keys: None, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    key = OPENAI_KEY if provider == "openai" else GEMINI_KEY
    caplog.set_level(logging.DEBUG)  # every library's debug logging, SDKs and httpx included
    # A hostile server echoes the key in its error bodies: once retried (500), then fatal (401).
    server.script.extend([Fail(500, echo_key=True), Reply('{"action": "+"}'),
                          Fail(401, echo_key=True)])
    agent = make_agent(provider, server, cache_dir=str(tmp_path / "cache"))
    agent.respond([agent_input("a")])
    with pytest.raises(ModelRequestError) as raised:
        agent.respond([agent_input("b")])
    agent.close()
    # The server really received the key and echoed it: the checks below can fail.
    assert any(key in value for request in server.requests for value in request.headers.values())

    error_text = "".join(traceback.format_exception(raised.value))
    assert "401" in error_text and "[REDACTED]" in error_text
    assert key not in error_text
    assert key not in repr(agent)
    assert key not in caplog.text
    assert "[REDACTED]" in caplog.text  # the retry warning quoted the echoed body, redacted
    captured = capsys.readouterr()
    assert key not in captured.out and key not in captured.err
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert key not in path.read_text(encoding="utf-8")


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        build_agent("openai:gpt-4o")
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        build_agent("gemini:gemini-2.5-flash")


def test_self_hosted_openai_server_needs_no_key(server: ScriptedModelServer,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script.append(Reply('{"action": "+"}'))
    agent = build_agent("openai:local-model", AgentOptions(base_url=server.openai_url))
    assert isinstance(agent, Agent)
    assert agent.respond([agent_input()]) == ['{"action": "+"}']
    agent.close()
    assert server.requests[0].body["model"] == "local-model"


def test_gemini_key_falls_back_to_google_api_key(server: ScriptedModelServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", GEMINI_KEY)
    server.script.append(Reply('{"action": "+"}'))
    agent = build_agent("gemini:gemini-test", AgentOptions(base_url=server.gemini_url))
    assert isinstance(agent, Agent)
    agent.respond([agent_input()])
    agent.close()
    assert server.requests[0].headers["x-goog-api-key"] == GEMINI_KEY


# --------------------------------------------------------------------------------------------
# Through the evaluation loop and the benchmark script
# --------------------------------------------------------------------------------------------


def test_interrupted_evaluation_resumes_from_the_cache(server: ScriptedModelServer, keys: None,
                                                       tmp_path: Path) -> None:
    from vlm_agent.evaluation.evaluate import evaluate_agent

    cache = str(tmp_path / "cache")
    server.responder = lambda request: Reply('{"thoughts": "right", "action": "+"}')
    complete = make_agent("openai", server, cache_dir=str(tmp_path / "reference"), concurrency=1)
    reference = evaluate_agent(complete, "gym_cards/NumberLine-v0", episodes=4, seed=0,
                               progress=False)
    complete.close()
    total_requests = len(server.requests)

    # The same run, killed by a dead server after 3 answers.
    server.requests.clear()
    answered = iter(range(10**6))
    server.responder = lambda request: (Reply('{"thoughts": "right", "action": "+"}')
                                        if next(answered) < 3 else Fail(500))
    interrupted = make_agent("openai", server, cache_dir=cache, concurrency=1)
    with pytest.raises(ModelRequestError, match="gave up"):
        evaluate_agent(interrupted, "gym_cards/NumberLine-v0", episodes=4, seed=0, progress=False)
    interrupted.close()

    server.requests.clear()
    server.responder = lambda request: Reply('{"thoughts": "right", "action": "+"}')
    resumed = make_agent("openai", server, cache_dir=cache, concurrency=1)
    result = evaluate_agent(resumed, "gym_cards/NumberLine-v0", episodes=4, seed=0,
                            progress=False)
    resumed.close()
    assert result.records == reference.records
    assert result.usage.cache_hits == 3  # the 3 paid answers were not asked again
    assert len(server.requests) == total_requests - 3
    assert result.usage.requests == total_requests - 3


def test_benchmark_script_runs_an_openai_compatible_server_end_to_end(
        server: ScriptedModelServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    script = Path(__file__).parent.parent / "benchmarks" / "prompting_baselines.py"
    spec = importlib.util.spec_from_file_location("prompting_baselines", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    # A "model" that always says "+": it wins NumberLine exactly when the target is to the right.
    server.responder = lambda request: Reply('{"thoughts": "go right", "action": "+"}', 40, 9)
    code = module.main([
        "--methods", "openai:scripted-vlm", "expert", "--env_ids", "gym_cards/NumberLine-v0",
        "--episodes", "6", "--base-url", server.openai_url, "--num-envs", "3",
        "--concurrency", "3", "--cache-dir", str(tmp_path / "cache"),
        "--out-dir", str(tmp_path / "out"), "--no-progress",
    ])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "out" / "prompting_baselines.csv").open()))
    assert [row["method"] for row in rows] == ["openai:scripted-vlm", "expert"]
    model_row = rows[0]
    # One request per step: repeated states are separate samples at temperature 0.2.
    assert int(model_row["requests"]) == len(server.requests) == int(model_row["steps"])
    assert int(model_row["cache_hits"]) == 0
    assert int(model_row["prompt_tokens"]) == 40 * len(server.requests)
    assert float(model_row["invalid_rate"]) == 0.0
    assert "openai:scripted-vlm" in (tmp_path / "out" / "prompting_baselines.md").read_text()
    assert (tmp_path / "out" / "prompting_baselines.png").stat().st_size > 0
    assert "| openai:scripted-vlm |" in capsys.readouterr().out

    # A bad method is one clear error, not a traceback.
    assert module.main(["--methods", "gemini:", "--out-dir", str(tmp_path / "bad"),
                        "--no-progress"]) == 2
    assert "unknown method" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Hostile servers: keys echoed past the cut and in answers, Retry-After, odd content
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("padding", ["", "x" * 16])
def test_a_key_echoed_across_the_detail_cut_is_redacted_whole(
        provider: str, padding: str, server: ScriptedModelServer, keys: None) -> None:
    key = OPENAI_KEY if provider == "openai" else GEMINI_KEY
    # 30 numbered copies of the key from about character 40 to 1000: the 500-character cut of
    # the error detail falls inside one of them for at least one of the two paddings.
    server.script.append(Fail(401, echo_key=True, echo_times=30, padding=padding))
    agent = make_agent(provider, server)
    with pytest.raises(ModelRequestError) as raised:
        agent.respond([agent_input()])
    agent.close()
    text = "".join(traceback.format_exception(raised.value))
    assert "[REDACTED]" in text and "401" in text
    assert key[:10] not in text  # not even the start of a cut-off copy


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_that_echoes_the_key_is_redacted_before_the_cache(
        provider: str, server: ScriptedModelServer, keys: None, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    key = OPENAI_KEY if provider == "openai" else GEMINI_KEY
    caplog.set_level(logging.DEBUG)
    server.script.append(Reply(f'{{"thoughts": "your key is {key}", "action": "+"}}'))
    agent = make_agent(provider, server, cache_dir=str(tmp_path))
    [answer] = agent.respond([agent_input()])
    agent.close()
    assert answer == '{"thoughts": "your key is [REDACTED]", "action": "+"}'
    [entry] = tmp_path.glob("*/*.json")
    assert key not in entry.read_text() and "[REDACTED]" in entry.read_text()
    rerun = make_agent(provider, server, cache_dir=str(tmp_path))
    assert rerun.respond([agent_input()]) == [answer]  # the cached answer is the redacted one
    rerun.close()
    assert key not in caplog.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_seconds_and_http_dates_are_honoured_and_capped(
        provider: str, server: ScriptedModelServer, keys: None) -> None:
    import email.utils

    in_five_seconds = email.utils.formatdate(time.time() + 5, usegmt=True)
    server.script.extend([Fail(429, retry_after="3"), Fail(503, retry_after=in_five_seconds),
                          Fail(429, retry_after="86400"), Reply('{"action": "+"}')])
    sleeps = RecordedSleeps()
    retry = RetryPolicy(max_retries=3, base_delay_s=0.5, max_delay_s=4.0, max_retry_after_s=30.0,
                        jitter=0.5, seed=7, sleep=sleeps)
    agent = make_agent(provider, server, retry=retry)
    assert agent.respond([agent_input()]) == ['{"action": "+"}']
    agent.close()
    assert sleeps.waits[0] == 3.0  # not the 0.25-0.5 s of the backoff schedule
    assert 3.0 <= sleeps.waits[1] <= 5.0  # an HTTP date has whole seconds
    assert sleeps.waits[2] == 30.0  # a day, capped
    assert agent.usage().retries == 3 and agent.usage().requests == 1


def openai_body(content: Any) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def test_openai_content_parts_are_joined_and_other_content_is_an_unusable_answer(
        server: ScriptedModelServer, keys: None, caplog: pytest.LogCaptureFixture) -> None:
    server.script.extend([
        RawBody(openai_body([{"type": "text", "text": '{"action":'},
                             {"type": "image_url", "image_url": {"url": "data:,"}},
                             {"type": "text", "text": ' "+"}'}])),
        RawBody(openai_body(42)),
        RawBody(openai_body([{"type": "image_url", "image_url": {"url": "data:,"}}])),
        RawBody(openai_body({"text": "+"})),
    ])
    agent = make_agent("openai", server, concurrency=1)
    answers = agent.respond([agent_input(seed=index) for index in range(4)])
    agent.close()
    assert answers == ['{"action": "+"}', "", "", ""]
    assert "the message content is int '42', not text" in caplog.text
    assert "a list of 1 parts without text" in caplog.text
    assert agent.usage().requests == 4  # answers, if unusable ones: not failures, not retried
