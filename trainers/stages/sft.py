"""CP and IFT: both run trl's SFTTrainer on pre-tokenised rows (input_ids, labels).

CP packs raw text into blocks with labels on every token; IFT renders chats in the base
model's template with labels on the assistant replies only. Building the labels ourselves
(trainers.data.formatting) keeps the mask testable and covers multi-turn chats, which trl's
`assistant_only_loss` cannot do for templates without `{% generation %}` markers (SmolLM2's).
"""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError
from trainers.data.formatting import chat_features, pack_texts
from trainers.data.records import ChatRecord, TextRecord
from trainers.stages.common import (
    StageInput,
    StageResult,
    load_tokenizer,
    lora_config,
    quantization_config,
    run_trainer,
)


def sft_trainer(inp: StageInput, dataset: Any, tokenizer: Any) -> Any:
    """The one SFTTrainer assembly (LoRA / full / QLoRA from the stage's config): CP, IFT and
    the task-specific fine-tuning of `--protocol sft` all train through it."""
    from trl import SFTTrainer

    return SFTTrainer(model=str(inp.model_in), args=inp.config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=lora_config(inp.config, "CAUSAL_LM"),
                      quantization_config=quantization_config(inp.config))


def cp_dataset(inp: StageInput, tokenizer: Any) -> Any:
    texts = [r.text for r in inp.records if isinstance(r, TextRecord)]
    if len(texts) != len(inp.records):
        raise HarnessError(f"stage {inp.name}: continued pretraining needs text records")
    return pack_texts(texts, tokenizer, inp.config.block_size)


def ift_dataset(inp: StageInput, tokenizer: Any) -> tuple[Any, int]:
    """Rows of (input_ids, labels); chats left without a reply token (all replies beyond
    max_length, or only an opening assistant turn) are dropped, and counted."""
    from datasets import Dataset

    rows = []
    for rec in inp.records:
        if not isinstance(rec, ChatRecord):
            raise HarnessError(f"stage {inp.name}: instruction tuning needs chat records")
        features = chat_features(rec.messages, tokenizer, inp.config.max_length)
        if features is not None:
            rows.append(features)
    if not rows:
        raise HarnessError(f"stage {inp.name}: no chat keeps a reply token within max_length "
                           f"{inp.config.max_length}")
    return Dataset.from_list(rows), len(inp.records) - len(rows)


def run_cp(inp: StageInput) -> StageResult:
    tokenizer = load_tokenizer(inp.model_in)
    dataset = cp_dataset(inp, tokenizer)
    result = run_trainer(inp, sft_trainer(inp, dataset, tokenizer), len(dataset))
    result.metrics["blocks"] = float(len(dataset))
    return result


def run_ift(inp: StageInput) -> StageResult:
    tokenizer = load_tokenizer(inp.model_in)
    dataset, too_long = ift_dataset(inp, tokenizer)
    result = run_trainer(inp, sft_trainer(inp, dataset, tokenizer), len(dataset))
    result.metrics["dropped_no_reply_tokens"] = float(too_long)
    return result
