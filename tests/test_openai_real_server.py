"""The openai backend against a real OpenAI-compatible server on 127.0.0.1: llama.cpp's server
(llama-cpp-python) serving the default model's GGUF. Marked `server`; skipped when
llama-cpp-python is not installed (scripts/install.sh --dev installs it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.backends.models import gguf_path
from harness.errors import HarnessError
from harness.run.config import RunConfig
from harness.run.runner import Runner
from tests.openai_server import FaultServer, llama_cpp_server

pytestmark = [pytest.mark.server, pytest.mark.slow]
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed")

TASKS = ("medqa", "medmcqa", "pubmedqa", "mmlu_anatomy")
LIMIT = 5


@pytest.fixture(scope="module")
def llama_server():
    with llama_cpp_server("--logits_all", "true", "--n_ctx", "4096") as server:
        yield server


def _answers(out: Path) -> dict[tuple[str, str], str | None]:
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return {(e["task_key"], e["sample_id"]): e["score"]["answer"] for e in lines}


def test_generative_answers_match_in_process_model(llama_server, tmp_path, default_model_dir):
    """Through the server, at temperature 0, the answers are those of the same engine run
    in-process (llama.cpp's own Python API): the client loses or alters nothing. Against
    transformers (the same weights, dequantised to fp32) most answers agree; they may part
    where Q4_1 kernels break a near tie, so that agreement is reported, with a floor far above
    the ~30 % two different models would reach."""
    url, model_id = llama_server
    greedy = {"repeat_penalty": 1.0}  # llama.cpp's server defaults to 1.1: plain greedy instead
    common = dict(tasks=TASKS, protocol="generate", data_source="bundled", limit=LIMIT, cache=None)
    Runner(RunConfig(**common, backend="openai", model=model_id,
                     model_args={"base_url": url, "concurrency": 4, "extra_body": greedy},
                     output=tmp_path / "remote")).run()
    remote = [json.loads(x) for x in (tmp_path / "remote/samples.jsonl").read_text().splitlines()]

    from harness.run.catalog import load_catalog

    catalog = load_catalog()
    llm = llama_cpp.Llama(model_path=str(gguf_path()), n_ctx=4096, seed=0, verbose=False)
    for entry in remote:
        budget = catalog.task(entry["task_key"].split("|")[0]).protocols["generate"].max_tokens
        out = llm.create_chat_completion(messages=entry["prompt"], max_tokens=budget, temperature=0.0,
                                         repeat_penalty=1.0)
        assert out["choices"][0]["message"]["content"] == entry["score"]["metadata"]["output"], entry["sample_id"]

    Runner(RunConfig(**common, model=str(default_model_dir), output=tmp_path / "local")).run()
    a, b = _answers(tmp_path / "remote"), _answers(tmp_path / "local")
    assert a.keys() == b.keys() and len(a) == LIMIT * len(TASKS)
    same = sum(a[k] == b[k] for k in a)
    print(f"llama.cpp server vs transformers, greedy: {same}/{len(a)} identical extracted answers")
    assert same / len(a) >= 0.6


def test_llama_cpp_shifted_prompt_logprobs_are_refused_up_front(llama_server):
    """llama.cpp's echoed prompt log-probs are shifted by one token (MODELS.md). A user who
    opts in to prompt_logprobs gets a clear error at start-up, not wrong loglik answers."""
    from harness.backends.openai_api import OpenAIBackend

    url, model_id = llama_server
    with pytest.raises(HarnessError, match=r"disagree with its own generation log-probabilities"
                                           r"|did not return prompt log-probabilities"):
        OpenAIBackend(model_id, base_url=url, prompt_logprobs=True)


def test_faults_in_front_of_the_real_server(llama_server, tmp_path, monkeypatch):
    url, model_id = llama_server
    secret = "sk-real-server-test-0123456789abcdef"
    monkeypatch.setenv("MEDLLM_TEST_KEY", secret)
    faults = {0: ("429", 0.3), 2: ("500",), 4: ("truncated",), 6: ("hang", 12)}
    upstream = url.removesuffix("/v1") + "/v1"
    with FaultServer(upstream=upstream, faults=lambda n, body: faults.get(n)) as proxy:
        config = RunConfig(tasks=("medqa",), protocol="generate", data_source="bundled", limit=8,
                           backend="openai", model=model_id, output=tmp_path / "run",
                           cache=tmp_path / "cache.sqlite", max_attempts=3,
                           model_args={"base_url": proxy.url, "api_key_env": "MEDLLM_TEST_KEY",
                                       "concurrency": 1, "timeout": 10.0})
        record = Runner(config, retry_base_delay=0.05).run()
    acc = record.tasks["medqa|generate|0shot"].metrics["accuracy"]
    assert acc["n_scored"] + acc["n_unscored"] == 8
    assert record.requests["failed_after_retries"] == 0
    assert record.requests["retries"] == len(faults)
    assert len(proxy.requests) == 8 + len(faults)
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
    assert os.environ["MEDLLM_TEST_KEY"] == secret


def test_structured_grader_output_through_llama_cpp(llama_server, tmp_path):
    """The default model as a HealthBench grader: free text, most of its replies never parse (the
    README's figure); with the reply's JSON Schema enforced by llama.cpp's server
    (`--grader-structured`, response_format json_object), every item is graded."""
    from harness.run.config import AuxModel, RubricOptions

    url, model_id = llama_server
    grader = AuxModel(backend="openai", model=model_id,
                      model_args={"base_url": url, "concurrency": 2, "response_format": "json_object"})
    record = Runner(RunConfig(tasks=("healthbench",), protocol="rubric_ideal", data_source="bundled", limit=1,
                              cache=None, aux_models={"grader": grader}, rubric=RubricOptions(structured=True),
                              output=tmp_path / "structured")).run()
    (res,) = record.tasks.values()
    assert res.metrics["rubric_ungraded_item_rate"]["value"] == 0.0
    assert res.metrics["rubric_score"]["n_scored"] == 1
    assert res.extra["grader_generation"]["structured_output"]["required"] == ["explanation", "criteria_met"]
    (entry,) = [json.loads(x) for x in (tmp_path / "structured/samples.jsonl").read_text().splitlines()]
    assert all(g["met"] in (True, False) for g in entry["score"]["metadata"]["grades"])
