"""The transformers backend's generation loop (harness/backends/hf_generate.py) on the real
default model: batched greedy decoding equals unbatched decoding and transformers' own
`generate`; sequences leave the batch at their own end; sc@K chains share one prefill and each
chain's sample depends only on its seed; prompt-lookup drafts give the tokens of one-token steps,
greedy or sampled; the inverse-CDF sampler draws from the temperature / top-p distribution."""

from __future__ import annotations

import pytest
import torch

from harness.backends import kv_cache
from harness.backends.dtypes import resolve_dtype, slow_dtype_reason
from harness.backends.hf_generate import _cache_of, _cdf, _draw
from harness.backends.prompt_lookup import NgramIndex, draft_cap
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
    old = hf_backend.batch_size, hf_backend.prompt_lookup
    try:
        hf_backend.prompt_lookup = 0  # one token per step: the batching machinery alone
        hf_backend.batch_size = 4  # 6 prompts of 31..69 tokens: refills and left padding
        batched = hf_backend.generate(reqs)
        stats = hf_backend.last_generation_stats
        hf_backend.batch_size = 1
        single = hf_backend.generate(reqs)
    finally:
        hf_backend.batch_size, hf_backend.prompt_lookup = old
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


def test_chains_beyond_the_free_rows_wait_prefilled_and_keep_their_tokens(hf_backend):
    """Two prompts with 3 chains each at batch 4: the second prompt's chains do not wait for 3
    free rows; it is prefilled once, one chain joins at once and two wait, prefilled."""
    def chains(q: str) -> list[GenerationRequest]:
        return [GenerationRequest(messages=(Message("user", q),), config=GenerationConfig(
            max_tokens=12 + 4 * s, temperature=0.8, seed=s)) for s in range(3)]

    reqs = chains(QUESTIONS[3]) + chains(QUESTIONS[5])
    together = hf_backend.generate(reqs)
    stats = hf_backend.last_generation_stats
    assert stats["parked_rows"] >= 2 and stats["max_rows"] == 4
    # each prompt prefilled once (the head both share, once)
    assert stats["prefill_tokens"] <= together[0].n_prompt_tokens + together[3].n_prompt_tokens
    alone = [hf_backend.generate([r])[0] for r in reqs]
    assert [a.text for a in alone] == [t.text for t in together]


COPY_TEXT = ("Patient is a 67-year-old woman with type 2 diabetes, chronic kidney disease stage 3 and "
             "atrial fibrillation on apixaban, admitted with community-acquired pneumonia of the right "
             "lower lobe, treated with ceftriaxone and azithromycin, now afebrile and on room air.")


def _copy_requests(config: GenerationConfig) -> list[GenerationRequest]:
    asks = [f"Repeat this sentence word for word: {COPY_TEXT}",
            f"Summarise for the discharge letter: {COPY_TEXT}",
            "Count from one to forty in words, separated by commas.",
            QUESTIONS[3], QUESTIONS[5]]
    return [GenerationRequest(messages=(Message("user", a),), config=config) for a in asks]


def _generate_with(backend, reqs, prompt_lookup: int, batch_size: int = 4):
    old = backend.batch_size, backend.prompt_lookup
    try:
        backend.batch_size, backend.prompt_lookup = batch_size, prompt_lookup
        out = backend.generate(reqs)
        return out, backend.last_generation_stats
    finally:
        backend.batch_size, backend.prompt_lookup = old


def test_prompt_lookup_gives_the_tokens_of_one_token_steps(hf_backend):
    reqs = _copy_requests(GenerationConfig(max_tokens=60))
    plain, plain_stats = _generate_with(hf_backend, reqs, 0)
    drafted, stats = _generate_with(hf_backend, reqs, 10)
    assert [d.text for d in drafted] == [p.text for p in plain]
    assert [d.n_completion_tokens for d in drafted] == [p.n_completion_tokens for p in plain]
    assert [d.finish_reason for d in drafted] == [p.finish_reason for p in plain]
    # the copying prompts accept drafts, so the same tokens take fewer forward passes
    assert stats["accepted_tokens"] > 10 and stats["drafted_tokens"] >= stats["accepted_tokens"]
    assert stats["decode_steps"] < plain_stats["decode_steps"]
    # alone (one row, the longest drafts) the copied sentence is the same too
    (alone,), alone_stats = _generate_with(hf_backend, reqs[:1], 10, batch_size=1)
    assert alone.text == plain[0].text and alone_stats["accepted_tokens"] > 10
    assert alone_stats["decode_steps"] < alone.n_completion_tokens - 10


def test_prompt_lookup_stops_exactly_at_budget_and_stop_string(hf_backend):
    (free,), _ = _generate_with(hf_backend, _copy_requests(GenerationConfig(max_tokens=40))[:1], 0)
    word = free.text.split()[6]
    for max_tokens in (7, 13):
        cfg = GenerationConfig(max_tokens=max_tokens)
        (plain,), _ = _generate_with(hf_backend, _copy_requests(cfg)[:1], 0)
        (drafted,), _ = _generate_with(hf_backend, _copy_requests(cfg)[:1], 10)
        assert drafted.n_completion_tokens == plain.n_completion_tokens == max_tokens
        assert drafted.text == plain.text and drafted.finish_reason == "length"
    cfg = GenerationConfig(max_tokens=40, stop=(word,))
    (plain,), _ = _generate_with(hf_backend, _copy_requests(cfg)[:1], 0)
    (drafted,), _ = _generate_with(hf_backend, _copy_requests(cfg)[:1], 10)
    assert drafted.finish_reason == plain.finish_reason == "stop"
    assert (drafted.text, drafted.n_completion_tokens) == (plain.text, plain.n_completion_tokens)


def test_sampled_chains_with_drafts_write_the_tokens_of_one_token_steps(hf_backend):
    """A drafted token is kept when the sample at the chain's next uniform number equals it, so
    drafts change how many passes a sampled chain takes, never its tokens."""
    reqs = [GenerationRequest(messages=r.messages, config=GenerationConfig(
        max_tokens=60, temperature=0.5, top_p=0.95 if i % 2 else 1.0, seed=10 + i))
        for i, r in enumerate(_copy_requests(GenerationConfig()))]
    plain, plain_stats = _generate_with(hf_backend, reqs, 0)
    drafted, stats = _generate_with(hf_backend, reqs, 10)
    assert [d.text for d in drafted] == [p.text for p in plain]
    assert [d.n_completion_tokens for d in drafted] == [p.n_completion_tokens for p in plain]
    assert stats["accepted_tokens"] > 10 and stats["decode_steps"] < plain_stats["decode_steps"]
    (alone,), alone_stats = _generate_with(hf_backend, reqs[:1], 10, batch_size=1)
    assert alone.text == plain[0].text and alone_stats["accepted_tokens"] > 10


def test_inverse_cdf_sampler_follows_temperature_and_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -30.0, 1.0]])
    probs = torch.softmax(logits[0] / 0.5, dim=-1)
    gen = torch.Generator().manual_seed(0)
    n = 20000
    cdf = _cdf(logits, [GenerationConfig(temperature=0.5)])[0]
    counts = torch.bincount(torch.tensor([_draw(cdf, gen) for _ in range(n)]), minlength=5).double() / n
    assert torch.allclose(counts, probs.double(), atol=0.015)  # ~5 standard errors at the largest share
    assert counts[3] == 0  # p ~ 1e-27
    # top-p 0.9 keeps the smallest set of most likely tokens whose mass reaches 0.9: tokens 0, 1 and 4
    cdf = _cdf(logits, [GenerationConfig(temperature=0.5, top_p=0.9)])[0]
    drawn = {_draw(cdf, gen) for _ in range(2000)}
    assert drawn == {0, 1, 4}
    cdf = _cdf(logits, [GenerationConfig(temperature=0.5, top_p=0.1)])[0]
    assert {_draw(cdf, gen) for _ in range(200)} == {0}  # the top token is always kept
    # a chain's stream: the same seed draws the same tokens, one uniform number per token
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert [_draw(cdf, a) for _ in range(5)] == [_draw(cdf, b) for _ in range(5)]


def test_rejected_draft_columns_are_compacted_without_changing_tokens(hf_backend, monkeypatch):
    reqs = _copy_requests(GenerationConfig(max_tokens=48))
    plain, _ = _generate_with(hf_backend, reqs, 0)
    monkeypatch.setattr(kv_cache, "HOLE_SLACK", 0)
    monkeypatch.setattr(kv_cache, "HOLE_SHARE", 0.0)  # compact after every drafted step
    drafted, stats = _generate_with(hf_backend, reqs, 10)
    assert stats["compactions"] > 0
    assert [d.text for d in drafted] == [p.text for p in plain]


def test_shared_prefix_is_prefilled_once_with_the_same_tokens(hf_backend):
    from harness.backends.hf_generate import Decoder

    system = Message("system", "You are a careful clinician. Answer in two sentences, plainly, for a patient.")
    reqs = [GenerationRequest(messages=(system, Message("user", q)), config=GenerationConfig(max_tokens=24))
            for q in QUESTIONS]
    prompts = [list(hf_backend.tokenizer.encode(hf_backend._render(r), add_special_tokens=False)) for r in reqs]
    runs = {}
    for share in (False, True):
        decoder = Decoder(hf_backend.model, hf_backend.tokenizer, hf_backend.device, 4, hf_backend._cache_kw,
                          prompt_lookup=10, share_prefix=share)
        runs[share] = ([r.text for r in decoder.run(prompts, [r.config for r in reqs])], decoder.stats)
    assert runs[True][0] == runs[False][0]
    n_prefix = next(i for i in range(len(prompts[0])) if any(p[i] != prompts[0][i] for p in prompts))
    assert n_prefix > 20  # the chat template's system turn
    assert runs[False][1]["prefill_tokens"] - runs[True][1]["prefill_tokens"] == (len(prompts) - 1) * n_prefix


def test_ngram_index_drafts_what_followed_the_latest_occurrence():
    index = NgramIndex([5, 6, 7, 8, 9, 1, 5, 6, 7, 2, 3])
    assert index.draft(4) == []  # (2, 3) and (3,) never occurred before
    index.extend([5, 6, 7])
    assert index.draft(2) == [2, 3]  # the latest (5, 6, 7) was followed by 2, not by 8
    index.extend([4])
    assert index.draft(3) == []
    index.extend([9])  # no 3-gram (7, 4, 9) seen, nor (4, 9): nothing
    assert index.draft(3) == []
    index = NgramIndex([1, 2, 3, 4, 1, 2])
    assert index.draft(5) == [3, 4, 1, 2] and index.draft(0) == []
    assert draft_cap(1, 10) == 10 and draft_cap(4, 10) == 3 and draft_cap(8, 10) == 1
    assert draft_cap(16, 10) == 0 and draft_cap(1, 0) == 0
    assert draft_cap(8, 10, packed=True) == 3 and draft_cap(16, 10, packed=True) == 1


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


def test_cpu_gqa_attention_is_bit_identical_to_sdpa(hf_backend, monkeypatch):
    """The grouped-query attention the backend installs on a CPU gives sdpa's logits bit for bit,
    for a left-padded prefill and a step of several query tokens over a cache (masks, q > 1),
    without the key/value copies (`repeat_kv`) sdpa makes there."""
    from transformers.integrations import sdpa_attention

    from harness.backends import cpu_attention

    copies: dict[str, int] = {}
    repeat_kv = sdpa_attention.repeat_kv

    def counted(*args, **kwargs):
        copies[name] = copies.get(name, 0) + 1
        return repeat_kv(*args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "repeat_kv", counted)

    model = hf_backend.model
    assert hf_backend.info()["attention"] == cpu_attention.NAME == model.config._attn_implementation
    assert model.config.num_attention_heads > model.config.num_key_value_heads  # grouped heads
    ids = torch.randint(10, 1000, (3, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 40, dtype=torch.long)
    mask[1, :7], mask[2, :19] = 0, 0
    step = torch.randint(10, 1000, (3, 4), generator=torch.Generator().manual_seed(1))
    outs = {}
    try:
        for name in ("sdpa", cpu_attention.NAME):
            model.set_attn_implementation(name)
            with torch.inference_mode():
                first = model(input_ids=ids, attention_mask=mask, use_cache=True)
                full = torch.cat([mask, torch.ones(3, 4, dtype=torch.long)], dim=1)
                second = model(input_ids=step, attention_mask=full, use_cache=True,
                               **{hf_backend._cache_kw: _cache_of(first)})
            outs[name] = (first.logits, second.logits)
    finally:
        model.set_attn_implementation(cpu_attention.NAME)
    assert torch.equal(outs["sdpa"][0], outs[cpu_attention.NAME][0])
    assert torch.equal(outs["sdpa"][1], outs[cpu_attention.NAME][1])
    assert copies.get("sdpa", 0) > 0 and copies.get(cpu_attention.NAME, 0) == 0
