"""HA stages on preference pairs: DPO, KTO (unpaired) and a reward model, all trl trainers.

The prompt and answers stay conversational ({"role", "content"} lists): trl renders them with
the base model's chat template, as IFT did. With LoRA the reference policy is the base with the
adapter switched off; with full training trl loads a frozen copy of the start checkpoint.
"""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError
from trainers.data.formatting import preference_row, unpaired_rows
from trainers.data.records import PreferenceRecord
from trainers.stages.common import (
    StageInput,
    StageResult,
    load_tokenizer,
    lora_config,
    quantization_config,
    quiet,
    run_trainer,
)


def _pairs(inp: StageInput) -> list[PreferenceRecord]:
    pairs = [r for r in inp.records if isinstance(r, PreferenceRecord)]
    if len(pairs) != len(inp.records):
        raise HarnessError(f"stage {inp.name}: a {inp.kind} stage needs preference records")
    return pairs


def run_dpo(inp: StageInput) -> StageResult:
    from datasets import Dataset
    from trl import DPOTrainer

    tokenizer = load_tokenizer(inp.model_in)
    dataset = Dataset.from_list([preference_row(r) for r in _pairs(inp)])
    trainer = DPOTrainer(model=str(inp.model_in), args=inp.config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(inp.config, "CAUSAL_LM"),
                         quantization_config=quantization_config(inp.config))
    return run_trainer(inp, trainer, len(dataset))


def run_kto(inp: StageInput) -> StageResult:
    from datasets import Dataset
    from trl import KTOTrainer

    tokenizer = load_tokenizer(inp.model_in)
    dataset = Dataset.from_list(unpaired_rows(_pairs(inp)))
    trainer = KTOTrainer(model=str(inp.model_in), args=inp.config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(inp.config, "CAUSAL_LM"),
                         quantization_config=quantization_config(inp.config))
    return run_trainer(inp, trainer, len(dataset))


def run_reward(inp: StageInput) -> StageResult:
    """A reward model from the current checkpoint (a one-score head on top); the last
    `heldout` pairs are kept out of training and its pairwise accuracy on them is reported."""
    from datasets import Dataset
    from trl import RewardTrainer

    tokenizer = load_tokenizer(inp.model_in)
    rows = [preference_row(r) for r in _pairs(inp)]
    heldout = min(inp.config.heldout, len(rows) // 2)
    train_rows, eval_rows = (rows[:-heldout], rows[-heldout:]) if heldout else (rows, [])
    trainer = RewardTrainer(model=str(inp.model_in), args=inp.config, train_dataset=Dataset.from_list(train_rows),
                            eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                            processing_class=tokenizer, peft_config=lora_config(inp.config, "SEQ_CLS"),
                            quantization_config=quantization_config(inp.config))
    # trl drops pairs longer than max_length: count what is really used
    kept: Any = trainer
    n_train = len(kept.train_dataset) if kept.train_dataset is not None else 0
    n_eval = len(kept.eval_dataset) if eval_rows and kept.eval_dataset is not None else 0
    # trl averages accuracy per eval batch; one batch makes it the share of held-out pairs
    trainer.args.per_device_eval_batch_size = max(1, n_eval)
    before = quiet(trainer).evaluate() if n_eval else {}
    result = run_trainer(inp, trainer, n_train)
    result.metrics["pairs_over_max_length"] = float(len(rows) - n_train - n_eval)
    if n_eval:
        after = trainer.evaluate()
        result.metrics.update({"heldout_pairs": float(n_eval),
                               "heldout_accuracy_before": float(before.get("eval_accuracy", float("nan"))),
                               "heldout_accuracy": float(after.get("eval_accuracy", float("nan")))})
    return result
