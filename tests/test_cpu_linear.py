"""oneDNN-packed linear layers on a CPU (harness/backends/cpu_linear.py): the hf backend packs a
float32 model's plain linear layers by default, computes what torch's kernels compute up to
float32 rounding, gives the same greedy texts, records it, and falls back when the check fails."""

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
    assert packed.weight is None  # the reordered copy replaces the original
    for shape in ((1, 1, 96), (8, 1, 96), (2, 300, 96)):
        x = torch.randn(*shape, generator=gen)
        got = packed(x)
        assert got.shape == (*shape[:-1], 40)
        torch.testing.assert_close(got, torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-4, atol=1e-4)


def test_pack_linears_leaves_subclasses_and_falls_back_when_the_check_fails(monkeypatch):
    class Lora(torch.nn.Linear):  # stands for peft / bitsandbytes layers, which subclass nn.Linear
        pass

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), Lora(8, 8), torch.nn.Linear(8, 4))
    assert pack_linears(model) == 2
    assert isinstance(model[0], PackedLinear) and type(model[1]) is Lora and isinstance(model[2], PackedLinear)

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


def test_hf_backend_packs_by_default_with_the_same_greedy_texts(default_model_dir, hf_backend):
    from harness.backends.hf import HFBackend

    plain = HFBackend(str(default_model_dir), batch_size=4, packed_linear=False)
    n_plain, _ = _kinds(plain.model)
    left, packed = _kinds(hf_backend.model)
    assert plain.packed_linear == 0 and plain.info()["packed_linear"] == 0
    assert left == 0 and packed == n_plain == hf_backend.packed_linear == hf_backend.info()["packed_linear"]
    # the LM head keeps the tied input embedding
    head = hf_backend.model.get_output_embeddings()
    assert isinstance(head, PackedLinear) and head.weight is hf_backend.model.get_input_embeddings().weight

    ids = plain.tokenizer("The patient has a fever and", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        a, b = plain.model(input_ids=ids).logits, hf_backend.model(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert not torch.equal(a, b)  # another kernel: the last bits differ, so this test sees the packing

    reqs = [GenerationRequest(messages=(Message("user", q),), config=GenerationConfig(max_tokens=24))
            for q in ("Name a vitamin.", "Explain hypertension to a patient in simple words.")]
    assert [r.text for r in plain.generate(reqs)] == [r.text for r in hf_backend.generate(reqs)]


def test_packed_linear_setting_is_checked(default_model_dir):
    from harness.backends.hf import HFBackend

    with pytest.raises(HarnessError, match="packed_linear must be auto, true or false"):
        HFBackend(str(default_model_dir), packed_linear="sometimes")
    with pytest.raises(HarnessError, match=r"packed_linear=true: not possible here \(dtype"):
        HFBackend(str(default_model_dir), dtype="bfloat16", packed_linear=True)
