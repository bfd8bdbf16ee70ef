"""What every stage shares: model and adapter setup, resumable training, saving (LoRA merged
for scoring), and the stage's result."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from trainers.configs import has_cuda
from trainers.data.records import TrainRecord
from trainers.merge import MergeSpec, fix_saved_config, merge_adapter, merge_checkpoints

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class StageInput:
    name: str
    kind: str
    model_in: Path  # the checkpoint this stage starts from
    out_dir: Path  # the stage folder: checkpoints/, model/, adapter/
    config: Any  # the stage's trl config dataclass (trainers.configs)
    records: Sequence[TrainRecord]
    merge: MergeSpec | None = None
    callbacks: Sequence[Any] = ()
    progress: Progress | None = None

    @property
    def checkpoints(self) -> Path:
        return Path(self.config.output_dir)


@dataclass
class StageResult:
    name: str
    kind: str
    method: str
    model_dir: str
    adapter_dir: str | None
    steps: int
    examples: int
    wall_s: float
    losses: list[tuple[int, float]]
    train_loss: float | None
    resumed_from: str | None
    trainable_params: int
    total_params: int
    merged: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "finished"

    @property
    def loss_fell(self) -> bool | None:
        """Mean of the last quarter of logged losses below the mean of the first quarter."""
        values = [v for _, v in self.losses]
        if len(values) < 2:
            return None
        k = max(1, len(values) // 4)
        return sum(values[-k:]) / k < sum(values[:k]) / k

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["losses"] = [list(x) for x in self.losses]
        out["loss_fell"] = self.loss_fell
        out["first_loss"] = self.losses[0][1] if self.losses else None
        out["last_loss"] = self.losses[-1][1] if self.losses else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageResult:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names}
        values["losses"] = [(int(s), float(v)) for s, v in values.get("losses", [])]
        return cls(**values)


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def lora_config(config: Any, task_type: str) -> Any:
    if config.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_target_modules, task_type=task_type)


def quantization_config(config: Any) -> Any:
    """QLoRA's 4-bit NF4 base. It needs a CUDA GPU and bitsandbytes; refuse clearly otherwise."""
    if config.method != "qlora":
        return None
    if not has_cuda():
        raise HarnessError("method: qlora needs a CUDA GPU (bitsandbytes 4-bit kernels); none is visible. "
                           "Use method: lora on this machine.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise HarnessError("method: qlora needs the bitsandbytes package: pip install bitsandbytes") from None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _progress_callback(name: str, progress: Progress, max_steps: int) -> Any:
    from transformers import TrainerCallback

    class _Lines(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                progress(f"[{name}] step {state.global_step}/{max_steps} loss {logs['loss']:.4f}")

    return _Lines()


def quiet(trainer: Any) -> Any:
    """Drop transformers' PrinterCallback (it prints every log dict; progress goes through the
    stage's `progress` function instead)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _count_params(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def run_trainer(inp: StageInput, trainer: Any, n_examples: int) -> StageResult:
    """Train (resuming from the last checkpoint in the stage folder), then save the final model:
    full weights as they are; an adapter merged into its full-precision base (optionally
    through MergeSpec), so the harness can score a plain checkpoint."""
    quiet(trainer)
    if inp.progress is not None:
        trainer.add_callback(_progress_callback(inp.name, inp.progress, inp.config.max_steps))
    for cb in inp.callbacks:
        trainer.add_callback(cb)
    trainable, total = _count_params(trainer.model)
    resume = last_checkpoint(inp.checkpoints)
    if resume is not None and inp.progress is not None:
        inp.progress(f"[{inp.name}] resuming from {Path(resume).name}")
    started = time.monotonic()
    output = trainer.train(resume_from_checkpoint=resume)
    wall = time.monotonic() - started
    losses = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e and "step" in e]
    metrics = {k: float(v) for k, v in (getattr(output, "metrics", None) or {}).items()
               if isinstance(v, (int, float))}

    model_dir = inp.out_dir / "model"
    adapter_dir: Path | None = None
    merged: dict[str, Any] | None = None
    if model_dir.exists():
        shutil.rmtree(model_dir)
    if inp.config.method == "full":
        if inp.merge is None:
            trainer.save_model(str(model_dir))
            fix_saved_config(model_dir)
        else:
            tuned = inp.out_dir / "model-unmerged"
            trainer.save_model(str(tuned))
            merge_checkpoints(inp.model_in, tuned, model_dir, inp.merge, kind=inp.kind)
            shutil.rmtree(tuned)
            merged = inp.merge.model_dump()
    else:
        adapter_dir = inp.out_dir / "adapter"
        trainer.save_model(str(adapter_dir))
        merge_adapter(inp.model_in, adapter_dir, model_dir, kind=inp.kind, spec=inp.merge)
        merged = inp.merge.model_dump() if inp.merge is not None else None
    return StageResult(
        name=inp.name, kind=inp.kind, method=inp.config.method, model_dir=str(model_dir),
        adapter_dir=str(adapter_dir) if adapter_dir else None, steps=int(trainer.state.global_step),
        examples=n_examples, wall_s=round(wall, 2), losses=losses,
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        resumed_from=Path(resume).name if resume else None, trainable_params=trainable, total_params=total,
        merged=merged, metrics=metrics,
    )
