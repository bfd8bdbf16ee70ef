"""The OpenAI-compatible backend against a local HTTP server that injects faults, and the
retry wrapper. (The real llama.cpp / vLLM servers are in test_openai_real_server.py.)"""

import logging
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.backends.openai_api import OpenAIBackend, _continuation_logprob
from harness.backends.retry import RetryingBackend
from harness.errors import CapabilityError, HarnessError
from harness.run.config import RunConfig
from harness.run.runner import Runner
from harness.types import GenerationConfig, GenerationRequest, Message, RequestFailure, RequestKind
from tests.conftest import ScriptedBackend
from tests.openai_server import FaultServer

SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("MEDLLM_TEST_KEY", SECRET)
    return "MEDLLM_TEST_KEY"


def run(tmp_path, server, api_key, *, max_attempts=3, protocol="generate", limit=10, **backend_kw):
    backend = OpenAIBackend("test-model", base_url=server.url, api_key_env=api_key, timeout=1.0,
                            concurrency=4, **backend_kw)
    config = RunConfig(tasks=("medqa",), protocol=protocol, data_source="bundled", limit=limit,
                       output=tmp_path / "run", cache=tmp_path / "cache.sqlite", max_attempts=max_attempts,
                       backend="openai", model="test-model")
    return Runner(config, backend=backend, retry_base_delay=0.05).run()


def files_contain(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_transient_faults_are_retried_within_bound(tmp_path, api_key, caplog):
    faults = {0: ("429", 0.2), 1: ("500",), 2: ("hang", 3), 3: ("truncated",)}
    caplog.set_level(logging.DEBUG)
    with FaultServer(faults=lambda n, body: faults.get(n)) as server:
        record = run(tmp_path, server, api_key)
    res = record.tasks["medqa|generate|0shot"]
    assert res.metrics["accuracy"]["n_scored"] == 10 and res.metrics["accuracy"]["n_unscored"] == 0
    assert len(server.requests) == 10 + 4  # one retry per injected fault, no more
    assert record.requests["retries"] == 4 and record.requests["failed_after_retries"] == 0
    assert record.requests["api_requests"] == 10 + 4
    assert record.requests["completion_tokens"] == 3 * 10  # usage from the successful replies
    # the key was sent to the server ...
    auth = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in server.headers]
    assert auth == [f"Bearer {SECRET}"] * len(server.headers)
    # ... and reached no file, no record, no log
    assert files_contain(tmp_path, SECRET) == []
    assert SECRET not in caplog.text and SECRET not in record.model_dump_json()
    assert record.model.args["api_key_env"] == "MEDLLM_TEST_KEY"


def test_persistent_failures_are_unscored_with_reason(tmp_path, api_key):
    def faults(n, body):
        return ("500",) if "Question: A 23-year-old" in body["messages"][0]["content"] else None

    with FaultServer(faults=faults) as server:
        record = run(tmp_path, server, api_key, limit=50)
    failing = [r for r in server.requests if "Question: A 23-year-old" in r["messages"][0]["content"]]
    acc = record.tasks["medqa|generate|0shot"].metrics["accuracy"]
    assert failing, "the fixture must hit at least one sample"
    n_failing_samples = len({r["messages"][0]["content"] for r in failing})
    assert len(failing) == 3 * n_failing_samples  # exactly max_attempts tries each
    assert acc["n_unscored"] == n_failing_samples and acc["n_scored"] == 50 - n_failing_samples
    import json

    lines = [json.loads(x) for x in (tmp_path / "run/samples.jsonl").read_text().splitlines()]
    reasons = {x["score"]["explanation"] for x in lines if x["score"]["value"] is None}
    assert reasons == {"request failed: HTTP 500: Error code: 500 - internal error"}


def test_auth_errors_are_not_retried_and_key_is_scrubbed(tmp_path, api_key):
    with FaultServer(faults=lambda n, body: None) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key_env=api_key)
        failure = backend._failure(_status_error(401, f"Incorrect API key provided: {SECRET}"))
    assert not failure.retryable and SECRET not in failure.reason and "***" in failure.reason


def _status_error(status, message):
    import importlib

    import openai

    # the HTTP library openai is built on (httpx, or httpx2 in openai 3.x)
    httpx = importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0])
    response = httpx.Response(status, request=httpx.Request("POST", "http://x/v1/chat/completions"))
    return openai.APIStatusError(message, response=response, body=None)


def test_retry_after_is_honoured_and_backoff_is_bounded():
    retry = RetryingBackend(ScriptedBackend(), base_delay=1.0, max_delay=8.0, rng=random.Random(1))
    assert retry.delay(0, [RequestFailure("429", True, retry_after=5.0)]) >= 5.0
    for attempt in range(6):
        assert 0 <= retry.delay(attempt, [RequestFailure("500")]) <= min(8.0, 2 ** attempt)


def test_retry_wrapper_gives_up_after_max_attempts():
    calls = []

    class AlwaysFails(ScriptedBackend):
        def generate(self, requests):
            calls.append(len(requests))
            return [RequestFailure("HTTP 503") for _ in requests]

    slept = []
    retry = RetryingBackend(AlwaysFails(), max_attempts=3, sleep=slept.append)
    req = GenerationRequest(messages=(Message("user", "hi"),), config=GenerationConfig())
    out = retry.generate([req, req])
    assert calls == [2, 2, 2] and len(slept) == 2
    assert all(isinstance(o, RequestFailure) for o in out) and retry.stats()["failed_after_retries"] == 2


def test_loglik_needs_opt_in_and_fails_up_front(tmp_path, api_key):
    with FaultServer() as server:
        with pytest.raises(CapabilityError, match=r"cannot serve loglikelihood requests needed by task 'medqa' "
                                                  r"\(protocol loglik\)"):
            run(tmp_path, server, api_key, protocol="loglik")
        assert server.requests == []
        # opting in against a server without prompt logprobs fails at start-up, clearly
        with pytest.raises(HarnessError, match="did not return prompt log-probabilities"):
            OpenAIBackend("m", base_url=server.url, prompt_logprobs=True)
        assert RequestKind.LOGLIKELIHOOD not in OpenAIBackend("m", base_url=server.url).capabilities


def test_continuation_logprob_from_echoed_tokens():
    prompt = "Answer: yes"
    lp = SimpleNamespace(tokens=["Answer", ":", " yes", "!"], text_offset=[0, 6, 7, 11],
                         token_logprobs=[None, -0.5, -1.25, -3.0],
                         top_logprobs=[None, {":": -0.5}, {" no": -0.9, " yes": -1.25}, {"!": -3.0}])
    res = _continuation_logprob(lp, len("Answer:"), len(prompt))
    assert (res.logprob, res.is_greedy, res.n_tokens) == (-1.25, False, 1)
    straddle = SimpleNamespace(tokens=["Answer", ": yes"], text_offset=[0, 6],
                               token_logprobs=[None, -1.0], top_logprobs=None)
    out = _continuation_logprob(straddle, len("Answer:"), len(prompt))
    assert isinstance(out, RequestFailure) and not out.retryable


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(HarnessError, match="environment variable NO_SUCH_KEY_VAR"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env="NO_SUCH_KEY_VAR")
