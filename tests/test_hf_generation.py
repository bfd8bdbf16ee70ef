"""The transformers backend's generation loop (harness/backends/hf_generate.py) on the real
default model: batched greedy decoding equals unbatched decoding and transformers' own
`generate`; sequences leave the batch at their own end; sc@K chains share one prefill and each
chain's sample depends only on its seed."""

from __future__ import annotations

import pytest
import torch

from harness.backends.dtypes import resolve_dtype, slow_dtype_reason
from harness.run.threads import apply_threads, default_threads, thread_settings
from harness.types import GenerationConfig, GenerationRequest, Message

QUESTIONS = [
    "Hi",
    "Name a vitamin.",
    "What is the capital of France?",
    "Explain hypertension to a patient in simple words.",
    "List three symptoms of diabetes and explain each one briefly in a sentence.",
    "A 45-year-old man presents with chest pain radiating to the left arm, sweating and nausea "
    "for two hours. What is the most likely diagnosis and what should be done first?",
]


def _requests(config: GenerationConfig) -> list[GenerationRequest]:
    return [GenerationRequest(messages=(Message("user", q),), config=config) for q in QUESTIONS]


def _hf_generate(backend, req: GenerationRequest, max_tokens: int) -> str:
    ids = backend.tokenizer(backend._render(req), return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = backend.model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, pad_token_id=backend.tokenizer.pad_token_id)
    return str(backend.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))


def test_batched_greedy_equals_unbatched_and_transformers_generate(hf_backend):
    reqs = _requests(GenerationConfig(max_tokens=32))
    old = hf_backend.batch_size
    try:
        hf_backend.batch_size = 4  # 6 prompts of 31..69 tokens: refills and left padding
        batched = hf_backend.generate(reqs)
        stats = hf_backend.last_generation_stats
        hf_backend.batch_size = 1
        single = hf_backend.generate(reqs)
    finally:
        hf_backend.batch_size = old
    assert [b.text for b in batched] == [s.text for s in single]
    assert [b.n_completion_tokens for b in batched] == [s.n_completion_tokens for s in single]
    for req, b in zip(reqs, batched, strict=True):
        assert b.text == _hf_generate(hf_backend, req, 32)
    # finished rows leave the batch: fewer decoded rows than batch x steps, and some stopped early
    assert any(b.finish_reason == "stop" for b in batched)
    assert any(b.finish_reason == "length" and b.n_completion_tokens == 32 for b in batched)
    assert stats["decoded_rows"] == sum(b.n_completion_tokens - 1 for b in batched)


def test_stop_strings_end_a_sequence(hf_backend):
    (free,) = hf_backend.generate(_requests(GenerationConfig(max_tokens=24))[4:5])
    word = free.text.split()[2]
    (cut,) = hf_backend.generate(_requests(GenerationConfig(max_tokens=24, stop=(word,)))[4:5])
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.find(word)]
    assert cut.n_completion_tokens < free.n_completion_tokens


def test_sampled_chains_share_prefill_and_depend_only_on_their_seed(hf_backend):
    msgs = (Message("user", QUESTIONS[4]),)
    chains = [GenerationRequest(messages=msgs, config=GenerationConfig(max_tokens=16, temperature=0.7,
                                                                        top_p=0.95, seed=s))
              for s in range(5)]
    together = hf_backend.generate(chains)
    n_prompt = together[0].n_prompt_tokens
    assert hf_backend.last_generation_stats["prefill_tokens"] == n_prompt  # one prefill for 5 chains
    alone = [hf_backend.generate([c])[0] for c in (chains[3], chains[0])]
    mixed = hf_backend.generate([*_requests(GenerationConfig(max_tokens=8))[:2], chains[3], chains[0]])[2:]
    assert [a.text for a in alone] == [together[3].text, together[0].text] == [m.text for m in mixed]
    assert len({c.text for c in together}) > 1  # different seeds, different chains


def test_dtype_auto_and_slow_dtype_warning():
    assert resolve_dtype("auto", torch.device("cpu")) == (torch.float32, "float32")
    assert resolve_dtype("auto", torch.device("cuda")) == (torch.bfloat16, "bfloat16")
    assert slow_dtype_reason("bfloat16", torch.device("cpu"), frozenset({"avx2", "fma"}))
    assert slow_dtype_reason("bfloat16", torch.device("cpu"), frozenset({"avx2", "avx512_bf16"})) is None
    assert slow_dtype_reason("float32", torch.device("cpu"), frozenset({"avx2"})) is None
    assert slow_dtype_reason("bfloat16", torch.device("cuda"), frozenset({"avx2"})) is None


def test_threads_default_respects_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert default_threads() == (1, "OMP_NUM_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS")
        n, why = default_threads()
        assert 1 <= n and why.startswith("auto")
        assert apply_threads(1)["threads_source"] == "--threads"
        assert torch.get_num_threads() == 1 and thread_settings()["torch_threads"] == 1
        with pytest.raises(ValueError):
            apply_threads(0)
    finally:
        torch.set_num_threads(before)


def test_run_records_threads_and_resolved_dtype(tmp_path, default_model_dir):
    import json

    from harness.cli.app import main

    before = torch.get_num_threads()
    try:
        rc = main(["run", "--model", str(default_model_dir), "--tasks", "medqa", "--limit", "1",
                   "--data-source", "bundled", "--threads", "1", "--no-cache", "--quiet",
                   "--output", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    env = record["environment"]
    assert env["threads"] == 1 and env["threads_source"] == "--threads" and env["torch_threads"] == 1
    assert "dtype=float32" in json.dumps(record["model"])  # dtype=auto, resolved on a CPU
