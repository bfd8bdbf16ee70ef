"""oneDNN-packed linear layers on a CPU (harness/backends/cpu_linear.py): the hf backend packs a
float32 model's plain linear layers at its first generation request, runs decode-sized calls
(cpu_linear.PACKED_ROWS) packed (what torch's kernels compute up to float32 rounding) and the
others with torch's kernels, gives the same greedy texts, keeps log-likelihoods bit for bit,
records the policy, and falls back when the check fails."""

from __future__ import annotations

import pytest
import torch

from harness.backends import cpu_linear
from harness.backends.cpu_linear import PackedLinear, pack_linears
from harness.errors import HarnessError
from harness.types import GenerationConfig, GenerationRequest, Message

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")


def _kinds(model: torch.nn.Module) -> tuple[int, int]:
    mods = list(model.modules())
    return sum(type(m) is torch.nn.Linear for m in mods), sum(isinstance(m, PackedLinear) for m in mods)


def test_packed_linear_matches_f_linear_for_decode_and_prefill_shapes():
    gen = torch.Generator().manual_seed(1)
    lin = torch.nn.Linear(96, 40, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(40, 96, generator=gen))
        lin.bias.copy_(torch.randn(40, generator=gen))
    packed = PackedLinear(lin)
    for shape in ((1, 1, 96), (8, 1, 96), (2, 16, 96), (2, 300, 96)):
        x = torch.randn(*shape, generator=gen)
        got, want = packed(x), torch.nn.functional.linear(x, lin.weight, lin.bias)
        assert got.shape == (*shape[:-1], 40)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        if x.numel() // 96 not in cpu_linear.PACKED_ROWS:
            assert torch.equal(got, want)  # torch's kernels outside the packed rows
        packed.plain = True
        assert torch.equal(packed(x), want)
        packed.plain = False


def test_packed_rows_follow_the_cpu_capability(monkeypatch):
    # AVX-512: MKL's vector path wins for 1-3 rows; AVX2 only: MKL repacks from 2 rows, so pack from 2
    assert cpu_linear.packed_rows("AVX512") == range(4, 33)
    assert cpu_linear.packed_rows("AVX2") == range(2, 33)
    assert cpu_linear.PACKED_ROWS == cpu_linear.packed_rows(torch.backends.cpu.get_cpu_capability())
    lin = PackedLinear(torch.nn.Linear(16, 8))
    real, calls = torch.ops.mkldnn, []

    class Spy:
        def __getattr__(self, name):
            if name == "_linear_pointwise":
                return lambda *a: calls.append(a) or real._linear_pointwise(*a)
            return getattr(real, name)

    monkeypatch.setattr(cpu_linear.torch.ops, "mkldnn", Spy(), raising=False)
    lin(torch.randn(1, 2, 16))  # a 2-row call: packed on AVX2, torch's kernels on AVX-512
    assert bool(calls) == (2 in cpu_linear.PACKED_ROWS)


def test_pack_linears_leaves_subclasses_and_falls_back_when_the_check_fails(monkeypatch):
    class Lora(torch.nn.Linear):  # stands for peft / bitsandbytes layers, which subclass nn.Linear
        pass

    class Wrapper(torch.nn.Module):  # stands for peft's LoRA layer, which reads its children's weights
        def __init__(self) -> None:
            super().__init__()
            self.base_layer, self.lora_a = torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)

    Wrapper.__module__ = "peft.tuners.lora.layer"
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), Lora(8, 8), Wrapper(), torch.nn.Linear(8, 4))
    assert pack_linears(model) == 2
    assert isinstance(model[0], PackedLinear) and type(model[1]) is Lora and isinstance(model[3], PackedLinear)
    assert type(model[2].base_layer) is torch.nn.Linear and type(model[2].lora_a) is torch.nn.Linear

    untouched = torch.nn.Sequential(torch.nn.Linear(8, 8))
    real = torch.ops.mkldnn._linear_pointwise

    class Wrong:
        def __getattr__(self, name):
            if name == "_linear_pointwise":
                return lambda *a: real(*a) + 1.0  # a kernel that disagrees with F.linear
            return getattr(torch.ops.mkldnn, name)

    monkeypatch.setattr(cpu_linear.torch.ops, "mkldnn", Wrong(), raising=False)
    assert pack_linears(untouched) == 0
    assert type(untouched[0]) is torch.nn.Linear


def test_hf_backend_packs_at_first_generation_with_the_same_texts_and_loglik(default_model_dir):
    from harness.backends.hf import HFBackend
    from harness.types import LoglikelihoodRequest

    plain = HFBackend(str(default_model_dir), batch_size=4, packed_linear=False)
    backend = HFBackend(str(default_model_dir), batch_size=4)
    assert plain.info()["packed_linear"] == "off: packed_linear=false"
    rows = cpu_linear.PACKED_ROWS
    assert backend.info()["packed_linear"].startswith(f"on: decode calls of {rows.start}-{rows.stop - 1} rows")
    pairs = [LoglikelihoodRequest(context="Question: Which vitamin prevents scurvy?\nAnswer:", continuation=c)
             for c in (" Vitamin C", " Vitamin D and calcium")]
    before = [r.logprob for r in backend.loglikelihood(pairs)]
    assert _kinds(backend.model)[1] == 0  # log-likelihood alone packs nothing

    reqs = [GenerationRequest(messages=(Message("user", q),), config=GenerationConfig(max_tokens=24))
            for q in ("Name a vitamin.", "Explain hypertension to a patient in simple words.", "Hi",
                      "What is the capital of France?")]
    assert [r.text for r in plain.generate(reqs)] == [r.text for r in backend.generate(reqs)]
    n_plain, _ = _kinds(plain.model)
    left, packed = _kinds(backend.model)
    assert left == 0 and packed == n_plain == backend.packed_linear and plain.packed_linear == 0
    # 4 rows decode through the packed copy: the last bits differ from torch's kernels
    ids = backend.tokenizer(["The patient has a fever and"] * 4, return_tensors="pt")["input_ids"][:, :1]
    with torch.inference_mode():
        a, b = plain.model(input_ids=ids).logits, backend.model(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert not torch.equal(a, b)
    # log-likelihoods keep torch's kernels, bit for bit, after packing too
    after = [r.logprob for r in backend.loglikelihood(pairs)]
    assert after == before == [r.logprob for r in plain.loglikelihood(pairs)]


def test_packed_linear_setting_is_checked(default_model_dir):
    from harness.backends.hf import HFBackend

    with pytest.raises(HarnessError, match="packed_linear must be auto, true or false"):
        HFBackend(str(default_model_dir), packed_linear="sometimes")
    with pytest.raises(HarnessError, match=r"packed_linear=true: not possible here \(dtype"):
        HFBackend(str(default_model_dir), dtype="bfloat16", packed_linear=True)
