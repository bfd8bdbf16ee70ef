"""The transformers backend on the real default model (SmolLM2-135M-Instruct)."""

import torch

from harness.backends import CachingBackend
from harness.types import GenerationConfig, GenerationRequest, LoglikelihoodRequest, Message

REQUESTS = [
    LoglikelihoodRequest("Question: Is aspirin an NSAID?\nAnswer:", " yes"),
    LoglikelihoodRequest("Question: Is aspirin an NSAID?\nAnswer:", " no"),
    LoglikelihoodRequest("Question: Is aspirin an NSAID?\nAnswer:", " maybe, in some dosages"),
    LoglikelihoodRequest("The most common cause of community-acquired pneumonia is", " Streptococcus pneumoniae"),
    LoglikelihoodRequest("Hi", " there"),
    LoglikelihoodRequest("Question: Is aspirin an NSAID?\nAnswer: ", "yes"),
]


def naive(backend, req):
    """Reference: one full forward over context + continuation, as lm-eval computes it."""
    ctx, cont = backend._encode_pair(req.context, req.continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(backend.model(ids).logits[0, :-1].float(), -1)
    rows = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
    lp = sum(float(logp[r, t]) for r, t in zip(rows, cont, strict=True))
    greedy = all(int(logp[r].argmax()) == t for r, t in zip(rows, cont, strict=True))
    return lp, greedy, len(cont)


def test_shared_context_loglikelihood_equals_full_forward(hf_backend):
    results = hf_backend.loglikelihood(REQUESTS)
    assert len(results) == len(REQUESTS)
    for req, res in zip(REQUESTS, results, strict=True):
        lp, greedy, n = naive(hf_backend, req)
        assert abs(res.logprob - lp) < 1e-3, (req, res.logprob, lp)
        assert (res.is_greedy, res.n_tokens) == (greedy, n)
    # multi-token continuations really took the cached path
    assert any(r.n_tokens > 1 for r in results)
    # trailing context space moves into the continuation, as in lm-eval
    assert abs(results[5].logprob - results[0].logprob) < 1e-4


def test_order_and_batching_do_not_change_results(hf_backend):
    forward = hf_backend.loglikelihood(REQUESTS)
    backward = hf_backend.loglikelihood(REQUESTS[::-1])[::-1]
    for a, b in zip(forward, backward, strict=True):
        assert abs(a.logprob - b.logprob) < 1e-4


def test_greedy_generation_with_chat_template_is_deterministic(hf_backend):
    req = GenerationRequest(messages=(Message("user", "Name one symptom of influenza."),),
                            config=GenerationConfig(max_tokens=12))
    a, b = hf_backend.generate([req, req])
    assert a.text == b.text and a.text.strip()
    assert a.n_completion_tokens <= 12 and a.n_prompt_tokens > 5
    assert "<|im_start|>" in hf_backend._render(req)  # ChatML template from the model
    stop = GenerationRequest(messages=req.messages, config=GenerationConfig(max_tokens=12, stop=(" ",)))
    (cut,) = hf_backend.generate([stop])
    assert " " not in cut.text.strip()


def test_fingerprint_is_content_based(hf_backend, default_model_dir):
    from harness.backends.fingerprint import folder_fingerprint

    assert hf_backend.fingerprint().startswith(folder_fingerprint(default_model_dir))
    assert "dtype=float32" in hf_backend.fingerprint()


def test_cache_returns_identical_results(hf_backend, tmp_path):
    cached = CachingBackend(hf_backend, tmp_path / "c.sqlite")
    first = cached.loglikelihood(REQUESTS)
    assert cached.stats() == {"hits": 0, "misses": len(REQUESTS)}
    again = CachingBackend(hf_backend, tmp_path / "c.sqlite")
    assert again.loglikelihood(REQUESTS) == first
    assert again.stats() == {"hits": len(REQUESTS), "misses": 0}


def test_cache_keys_sampled_generations_by_the_backends_sampler(scripted, tmp_path):
    """A seed names a sample only for one sampler: another sampler misses sampled entries and
    still hits greedy ones."""
    greedy = GenerationRequest(prompt="Hi", config=GenerationConfig(max_tokens=4))
    sampled = GenerationRequest(prompt="Hi", config=GenerationConfig(max_tokens=4, temperature=0.7, seed=1))
    scripted.info = lambda: {"backend": "scripted", "sampler": "old"}  # type: ignore[method-assign]
    CachingBackend(scripted, tmp_path / "c.sqlite").generate([greedy, sampled])
    same = CachingBackend(scripted, tmp_path / "c.sqlite")
    same.generate([greedy, sampled])
    assert same.stats() == {"hits": 2, "misses": 0}
    scripted.info = lambda: {"backend": "scripted", "sampler": "new"}  # type: ignore[method-assign]
    other = CachingBackend(scripted, tmp_path / "c.sqlite")
    other.generate([greedy, sampled])
    assert other.stats() == {"hits": 1, "misses": 1}
    assert scripted.generate_calls[-1] == sampled
