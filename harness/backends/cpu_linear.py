"""Linear layers of a float32 model on a CPU, with weights reordered once for oneDNN.

Why: with 4 to 12 rows (a decode step of a batch) MKL's sgemm, which `F.linear` calls, repacks
the whole weight matrix at every call, so an 8-row decode step of the default model streams its
weights from memory several times over: 127 ms against 54 ms for one row on the 2-core machine.
oneDNN reads weights laid out for it once, at load, as torch.compile's CPU backend does when it
freezes a model (the same ops: `mkldnn._reorder_linear_weight`, `mkldnn._linear_pointwise`):
the 8-row step takes 89 ms (`python benchmarks/decode_step_cost.py`). No library
does this to an eager transformers model without compiling it, hence this module.

The results differ from `F.linear`'s in the last bits of float32 (as any other kernel's do), so
`packed_linear=false` keeps torch's own kernels for runs that must match another harness bit
for bit. The oneDNN weights replace the originals (same memory), except the LM head's, which is
usually tied to the input embedding and so is a copy.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

# The batch size the weights are laid out for: a decode step's rows (any size works; this one is
# the fastest for 4 to 16 rows and close to the fastest for prefill).
_LAYOUT_ROWS = 8


class PackedLinear(torch.nn.Module):
    """`nn.Linear` inference with oneDNN-reordered weights (CPU, float32)."""

    def __init__(self, linear: torch.nn.Linear, keep_weight: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, _LAYOUT_ROWS)
        self.bias = None if linear.bias is None else linear.bias.detach()
        # the LM head keeps `.weight` (the tied input embedding): transformers reads it
        self.weight = linear.weight if keep_weight else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).contiguous()
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
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
    """Replaces every plain float32 `nn.Linear` of `model` (not subclasses: quantised or LoRA
    layers stay as they are) by a PackedLinear, after checking once per weight shape that it
    computes what `F.linear` does; returns how many were replaced (0 when the check fails)."""
    head = getattr(model, "get_output_embeddings", lambda: None)()
    targets = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32]
    checked: set[tuple[int, ...]] = set()
    gen = torch.Generator().manual_seed(0)
    for parent, name in targets:
        lin = getattr(parent, name)
        shape = tuple(lin.weight.shape)
        if shape in checked:
            continue
        checked.add(shape)
        x = torch.randn(3, 5, lin.in_features, generator=gen)
        try:
            got = PackedLinear(lin)(x)
        except RuntimeError as exc:  # a private op: a torch release may change it
            log.warning("oneDNN linear unavailable (%s); torch's own kernels are used", exc)
            return 0
        want = torch.nn.functional.linear(x, lin.weight.detach(), lin.bias)
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
            log.warning("oneDNN linear disagrees with F.linear on %s; torch's own kernels are used", shape)
            return 0
    with torch.no_grad():
        for parent, name in targets:  # one at a time, so that only one weight is held twice
            lin = getattr(parent, name)
            setattr(parent, name, PackedLinear(lin, keep_weight=lin is head))
            del lin
        # the weights left (embedding, norms) may be views of the memory-mapped checkpoint, which
        # keep all of its pages resident: own copies let the mapping go
        for param in model.parameters():
            param.data = param.data.clone()
    return len(targets)
