"""Typed stage configs: trl's config dataclasses extended with what our stages add (adapter
method and LoRA settings, CP block size, reward hold-out), plus defaults chosen from the
hardware and strict validation of a recipe's `train:` block."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from trl import DPOConfig, KTOConfig, RewardConfig, SFTConfig

from harness.errors import ConfigError

METHODS = ("full", "lora", "qlora")


@dataclass
class AdapterArguments:
    """How the weights are trained. A mixin: it must precede a trl config in the bases."""

    method: str = field(default="full", metadata={"help": "full (all weights), lora, or qlora (4-bit base "
                                                          "+ LoRA; needs a CUDA GPU and bitsandbytes)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha / r scales the update)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | str = field(
        default="all-linear", metadata={"help": "Modules that get adapters: names, or 'all-linear'."})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        super().__post_init__()  # type: ignore[misc]


@dataclass
class CPConfig(AdapterArguments, SFTConfig):
    """Continued pretraining: causal LM loss on every token of packed raw text."""

    block_size: int = field(default=512, metadata={"help": "Tokens per packed training block."})


@dataclass
class IFTConfig(AdapterArguments, SFTConfig):
    """Instruction fine-tuning: loss on the assistant replies only (labels built by
    trainers.data.formatting.chat_features)."""


@dataclass
class DPOStageConfig(AdapterArguments, DPOConfig):
    """Direct preference optimisation on (prompt, chosen, rejected)."""


@dataclass
class KTOStageConfig(AdapterArguments, KTOConfig):
    """Kahneman-Tversky optimisation on unpaired (prompt, completion, desirable?) rows."""


@dataclass
class RewardStageConfig(AdapterArguments, RewardConfig):
    """A reward model (sequence classifier with one score) trained on preference pairs."""

    heldout: int = field(default=16, metadata={"help": "Preference pairs held out to measure the reward "
                                                         "model's pairwise accuracy."})


STAGE_CONFIGS: dict[str, type] = {
    "cp": CPConfig, "ift": IFTConfig, "dpo": DPOStageConfig, "kto": KTOStageConfig, "reward": RewardStageConfig,
}

# Our defaults, below the recipe's values: log every step, keep one resumable checkpoint.
COMMON_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1, "save_strategy": "steps", "save_steps": 50, "save_total_limit": 1,
    "per_device_train_batch_size": 4, "max_steps": 30, "dataloader_num_workers": 0, "disable_tqdm": True,
}
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "cp": {"learning_rate": 5e-5, "max_length": None},
    "ift": {"learning_rate": 2e-5, "max_length": 1024},
    "dpo": {"learning_rate": 5e-6, "max_length": 1024},
    "kto": {"learning_rate": 5e-6, "max_length": 1024},
    "reward": {"learning_rate": 1e-5, "max_length": 1024},
}


def has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def hardware_defaults() -> dict[str, Any]:
    """trl 1.x defaults to bf16 and gradient checkpointing; on a CPU that makes a DPO step ~18x
    slower, so both go off there. On a GPU: bf16 where supported, else fp16. (transformers 5.x
    names gradient checkpointing `activation_checkpointing`; the old name is a deprecated alias.)"""
    if not has_cuda():
        return {"bf16": False, "fp16": False, "activation_checkpointing": False, "use_cpu": True, "report_to": []}
    import torch

    bf16 = bool(torch.cuda.is_bf16_supported())
    return {"bf16": bf16, "fp16": not bf16, "activation_checkpointing": True, "report_to": []}


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def validate_overrides(kind: str, overrides: dict[str, Any], *, file: str | None = None,
                       key: str = "train") -> dict[str, Any]:
    """Check a recipe's `train:` keys against the stage's config dataclass: unknown keys get a
    "did you mean", values are converted to the field's type (YAML reads 5e-5 as a string) or
    rejected quoting the value."""
    cls = STAGE_CONFIGS[kind]
    names = {f.name for f in fields(cls) if f.init}
    hints = _type_hints(cls)
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown {cls.__name__} option {name!r}{hint}", file=file, key=f"{key}.{name}")
        try:
            out[name] = TypeAdapter(hints[name]).validate_python(value)
        except ValidationError as err:
            msg = err.errors()[0]["msg"]
            raise ConfigError(f"{msg} (got {value!r})", file=file, key=f"{key}.{name}") from None
    return out


def build_config(kind: str, output_dir: Path, overrides: dict[str, Any], *, seed: int = 1234,
                 file: str | None = None, key: str = "train") -> Any:
    """The stage's config: trl's defaults < hardware defaults < ours < the recipe's `train:`."""
    if kind not in STAGE_CONFIGS:
        raise ConfigError(f"unknown stage kind {kind!r} (known: {', '.join(STAGE_CONFIGS)})", file=file)
    values = {**hardware_defaults(), **COMMON_DEFAULTS, **KIND_DEFAULTS[kind], "seed": seed,
              **validate_overrides(kind, overrides, file=file, key=key), "output_dir": str(output_dir)}
    try:
        return STAGE_CONFIGS[kind](**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc).splitlines()[0], file=file, key=key) from None
