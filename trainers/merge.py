"""Merging, all through peft:
- a LoRA adapter into its base for scoring, optionally reshaped first by peft's
  `add_weighted_adapter` (linear, TIES, DARE, magnitude pruning);
- a fully fine-tuned (medical) checkpoint with its base: the task vector (tuned - base) of
  every weight goes through peft's merge_utils (task arithmetic, TIES, DARE) and is added back
  to the base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.errors import HarnessError

MergeMethod = Literal["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"]


class MergeSpec(BaseModel):
    """Merge a stage's result with the checkpoint it started from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: MergeMethod = Field(description="linear (task arithmetic), ties, dare_linear, dare_ties, magnitude_prune.")
    weight: float = Field(default=1.0, ge=0.0, le=2.0,
                          description="Scale of the stage's change: 0 keeps the start checkpoint, 1 the tuned one.")
    density: float | None = Field(default=None, gt=0.0, le=1.0,
                                  description="Fraction of the change kept (ties, dare_*, magnitude_prune).")
    seed: int = Field(default=0, description="Seeds DARE's random pruning.")

    @model_validator(mode="after")
    def _density(self) -> MergeSpec:
        if self.method != "linear" and self.density is None:
            raise ValueError(f"merge method {self.method!r} needs a density (fraction of the change kept)")
        return self


def fix_saved_config(folder: Path) -> None:
    """transformers 5.x writes rope_parameters only; 4.x readers (lm-eval's pinned stacks) would
    silently fall back to rope_theta=10000. Same fix as harness.backends.models."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    if "rope_parameters" in cfg and "rope_theta" not in cfg and isinstance(cfg["rope_parameters"], dict):
        theta = cfg["rope_parameters"].get("rope_theta")
        if theta is not None:
            cfg["rope_theta"] = theta
            path.write_text(json.dumps(cfg, indent=2))


def _auto_class(kind: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if kind == "reward" else AutoModelForCausalLM


def merge_adapter(base: Path, adapter: Path, out: Path, *, kind: str = "cp", spec: MergeSpec | None = None) -> Path:
    """Load `base` at full precision (also after QLoRA, whose 4-bit base must not be merged into),
    apply the adapter, merge it, save to `out`. With a linear MergeSpec the adapter is first
    reweighted by peft's add_weighted_adapter; peft runs TIES / DARE only across several adapters
    (one adapter falls back to linear), so for those the merged task vector goes through
    merge_task_vector instead."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    extra: dict[str, Any] = {"num_labels": 1} if kind == "reward" else {}
    model = _auto_class(kind).from_pretrained(str(base), dtype=torch.float32, **extra)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter if (adapter / "tokenizer_config.json").exists() else base))
    if kind == "reward" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    if spec is not None and spec.method == "linear":
        peft_model.add_weighted_adapter(["default"], [spec.weight], "merged", combination_type="linear")
        peft_model.set_adapter("merged")
    merged = peft_model.merge_and_unload()
    if spec is not None and spec.method != "linear":
        start = _auto_class(kind).from_pretrained(str(base), dtype=torch.float32, **extra)
        merged = merge_task_vector(start, merged, spec)
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    fix_saved_config(out)
    return out


def _merge_fn(spec: MergeSpec) -> Any:
    from peft.utils import merge_utils

    functions = {"linear": merge_utils.task_arithmetic, "ties": merge_utils.ties,
                 "dare_linear": merge_utils.dare_linear, "dare_ties": merge_utils.dare_ties,
                 "magnitude_prune": merge_utils.magnitude_prune}
    return functions[spec.method]


def merge_task_vector(base: Any, tuned: Any, spec: MergeSpec) -> Any:
    """`tuned` with each floating-point weight replaced by base + merge(tuned - base) (in place).
    Parameters come from named_parameters(), so tied weights are merged once."""
    import torch

    fn = _merge_fn(spec)
    weights = torch.tensor([spec.weight])
    base_params = dict(base.named_parameters())
    torch.manual_seed(spec.seed)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if name not in base_params:
                raise HarnessError(f"merge: {name} is not a weight of the base model")
            start = base_params[name].detach().to(param.dtype)
            if start.shape != param.shape:
                raise HarnessError(f"merge: {name} has shape {tuple(param.shape)}, base {tuple(start.shape)}")
            if not param.is_floating_point():
                continue
            delta = param.detach() - start
            kwargs = {} if spec.method == "linear" else {"density": spec.density}
            param.copy_(start + fn([delta], weights, **kwargs))
    return tuned


def merge_checkpoints(base: Path, tuned: Path, out: Path, spec: MergeSpec, *, kind: str = "cp") -> Path:
    """Merge a full fine-tuned checkpoint folder with its base folder into `out`."""
    import torch
    from transformers import AutoTokenizer

    cls = _auto_class(kind)
    extra: dict[str, Any] = {"num_labels": 1} if kind == "reward" else {}
    base_model = cls.from_pretrained(str(base), dtype=torch.float32, **extra)
    tuned_model = cls.from_pretrained(str(tuned), dtype=torch.float32, **extra)
    merged = merge_task_vector(base_model, tuned_model, spec)
    merged.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tuned)).save_pretrained(str(out))
    fix_saved_config(out)
    return out
