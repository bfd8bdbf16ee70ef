"""Fine-tune one task's checkpoint with the trainers' machinery: the typed IFT config
(trainers.configs), trl's SFTTrainer with LoRA / full / QLoRA set up as the trainers' stages do,
and their `run_trainer` (resumes from its last trainer checkpoint, merges a LoRA adapter into its
base for scoring). The checkpoint folder is keyed by recipe, base model and training data; a
finished one (stage.json) is reused, never retrained."""

from __future__ import annotations

import gc
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from trainers.task_sft.recipe import SFTRecipe

# One line per logged training step: (step, max_steps, loss).
StepHook = Callable[[int, int, float], None]


def trl_overrides(recipe: SFTRecipe) -> dict[str, Any]:
    return {"method": recipe.method, "max_steps": recipe.max_steps, "learning_rate": recipe.learning_rate,
            "per_device_train_batch_size": recipe.batch_size, "max_length": recipe.max_length,
            "lora_r": recipe.lora_r, "lora_alpha": recipe.lora_alpha, "lora_dropout": recipe.lora_dropout,
            **recipe.train}


def _step_callback(hook: StepHook, max_steps: int) -> Any:
    from transformers import TrainerCallback

    class _Steps(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                hook(int(state.global_step), max_steps, float(logs["loss"]))

    return _Steps()


def train_checkpoint(base: Path, rows: Sequence[dict[str, list[int]]], recipe: SFTRecipe, out_dir: Path,
                     name: str, on_step: StepHook | None = None) -> dict[str, Any]:
    """Train on pre-tokenised rows (input_ids, labels) into `out_dir`; returns the trainers'
    StageResult as JSON, also written to out_dir/stage.json (the "finished" mark)."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    from trainers.configs import build_config
    from trainers.stages.common import StageInput, load_tokenizer, run_trainer
    from trainers.stages.sft import sft_trainer

    done = out_dir / "stage.json"
    if done.is_file():
        return dict(json.loads(done.read_text(encoding="utf-8")))
    out_dir.mkdir(parents=True, exist_ok=True)
    disable_progress_bar()  # trl's dataset passes; the run shows its own step bar
    config = build_config("ift", out_dir / "checkpoints", trl_overrides(recipe), seed=recipe.seed,
                          file=recipe.source_file or None, key="train")
    callbacks = (_step_callback(on_step, recipe.max_steps),) if on_step is not None else ()
    inp = StageInput(name=name, kind="ift", model_in=base, out_dir=out_dir, config=config, records=(),
                     callbacks=callbacks)
    trainer = sft_trainer(inp, Dataset.from_list(list(rows)), load_tokenizer(base))
    result = run_trainer(inp, trainer, len(rows)).to_json()
    del trainer
    gc.collect()  # the trainer's model and optimizer, before scoring loads the tuned model
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    tmp.replace(done)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return result


def response_loss(model_dir: Path, rows: Sequence[dict[str, list[int]]]) -> float:
    """Mean negative log-likelihood per response token (labels != -100) of `rows` under the model
    in `model_dir`: the same number for the base and the tuned model, so before / after compare."""
    import torch
    from transformers import AutoModelForCausalLM

    if not rows:
        raise HarnessError("no examples to measure the loss on")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]], device=device)
            labels = torch.tensor([row["labels"]], device=device)
            n = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
            if n:
                total += float(model(input_ids=ids, labels=labels).loss) * n
                tokens += n
    del model
    gc.collect()
    return total / tokens
