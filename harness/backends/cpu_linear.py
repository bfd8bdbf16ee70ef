"""Decode steps of a float32 model on a CPU, with linear weights reordered once for oneDNN.

Why: with 4 to 12 rows (a decode step of a batch) MKL's sgemm, which `F.linear` calls, repacks
the whole weight matrix at every call, so an 8-row decode step of the default model streams its
weights from memory several times over: 117 ms against 52 ms for one row on the 2-core machine.
oneDNN reads weights laid out for it once, as torch.compile's CPU backend does when it freezes a
model (the same ops: `mkldnn._reorder_linear_weight`, `mkldnn._linear_pointwise`): the 8-row
step takes 82 ms (`python benchmarks/decode_step_cost.py`). No library does this to an eager
transformers model without compiling it, hence this module.

Only calls of 4 to 32 rows (2 to 32 on a CPU without AVX-512) use the packed copy: for fewer
rows MKL's vector path is faster, and prefill and log-likelihood scoring (many rows, where both
kernels run at the core's peak) keep torch's kernels, so their numbers stay those of
`F.linear` (and of lm-eval). The packed results differ from `F.linear`'s in the last bits of
float32, as any other kernel's do; `packed_linear=false` keeps torch's kernels everywhere. The
copy costs the weights' size again, so the hf backend packs at its first generation request,
not for log-likelihood runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger(__name__)

# The batch size the weights are laid out for: a decode step's rows (any size works; this one is
# the fastest for 4 to 16 rows and close to the fastest for prefill).
_LAYOUT_ROWS = 8
# Modules whose linear children are read by their parent's own code (peft's LoRA layers read
# `base_layer.weight`, `lora_A[...].weight`): left alone.
_WRAPPERS = ("peft.", "bitsandbytes.")


def packed_rows(capability: str) -> range:
    """Rows per call that take the packed copy, by torch's CPU capability (measured with
    benchmarks/decode_step_cost.py, one thread, 250-token context). With AVX-512 (Xeon) MKL's
    vector path is faster for 1-3 rows; with AVX2 only (EPYC) MKL repacks the weights for 2-3
    rows as well: a one-row 2-token step took 95.7 ms, 69.0 ms packed."""
    return range(4, 33) if capability.upper().startswith("AVX512") else range(2, 33)


PACKED_ROWS = packed_rows(torch.backends.cpu.get_cpu_capability())


class PackedLinear(torch.nn.Module):
    """`nn.Linear` inference that runs calls of PACKED_ROWS rows with oneDNN-reordered weights
    (CPU, float32) and the others, or all while `plain` is set, with `F.linear`."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), _LAYOUT_ROWS)
        self.plain = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if self.plain or rows not in PACKED_ROWS:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).contiguous()
        bias = None if self.bias is None else self.bias.detach()
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, bias, "none", [], "")
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, onednn"


def available(model: Any, device: torch.device) -> str | None:
    """None when the layers can be packed, else why not."""
    if device.type != "cpu":
        return f"device {device.type}"
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this torch build has no oneDNN linear"
    if getattr(model, "dtype", None) != torch.float32:
        return f"dtype {getattr(model, 'dtype', None)} (only float32 is packed)"
    return None


def pack_linears(model: torch.nn.Module) -> int:
    """Replaces every plain float32 `nn.Linear` of `model` by a PackedLinear, after checking once
    per weight shape that it computes what `F.linear` does; returns how many were replaced (0
    when the check fails). Subclasses (quantised layers) and the layers inside peft's or
    bitsandbytes' wrappers (a LoRA layer's base and A/B matrices, whose weights peft reads) stay."""
    targets = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32
               and not type(parent).__module__.startswith(_WRAPPERS)]
    checked: set[tuple[int, ...]] = set()
    gen = torch.Generator().manual_seed(0)
    packed: list[PackedLinear] = []
    with torch.no_grad():
        for parent, name in targets:
            lin = getattr(parent, name)
            try:
                layer = PackedLinear(lin)
            except RuntimeError as exc:  # a private op: a torch release may change it
                log.warning("oneDNN linear unavailable (%s); torch's own kernels are used", exc)
                return 0
            shape = tuple(lin.weight.shape)
            if shape not in checked:  # once per weight shape
                checked.add(shape)
                x = torch.randn(2, 4, lin.in_features, generator=gen)  # 8 rows: the packed path
                if not torch.allclose(layer(x), torch.nn.functional.linear(x, lin.weight, lin.bias),
                                      rtol=1e-4, atol=1e-4):
                    log.warning("oneDNN linear disagrees with F.linear on %s; torch's own kernels are used", shape)
                    return 0
            packed.append(layer)
        for (parent, name), layer in zip(targets, packed, strict=True):
            setattr(parent, name, layer)
    return len(targets)


@contextlib.contextmanager
def plain_kernels(model: torch.nn.Module) -> Iterator[None]:
    """torch's own kernels for every PackedLinear of `model` inside the block (log-likelihood
    scoring: its numbers must not depend on whether a generation task ran before it)."""
    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    for layer in layers:
        layer.plain = True
    try:
        yield
    finally:
        for layer in layers:
            layer.plain = False
