"""Prompt formats: how a Sample becomes prompt text. MCQA formats reproduce lm-eval 0.4.13's
built-in tasks byte for byte (medqa_4options, medmcqa, pubmedqa, mmlu) so our numbers can be
checked against lm-eval's on the same model."""

from __future__ import annotations

from dataclasses import dataclass

from harness.data.adapters import LETTERS
from harness.registry import Registry
from harness.types import Sample


@dataclass(frozen=True)
class PromptFormat:
    """`text` renders the question; `labels` are what the model answers with (letters for
    lettered MCQA, the choice words otherwise); `description` is prepended once, before any
    few-shot exemplars."""

    name: str
    lettered: bool = True

    def text(self, sample: Sample) -> str:
        raise NotImplementedError

    def description(self, sample: Sample) -> str:
        return ""

    def labels(self, sample: Sample) -> tuple[str, ...]:
        if self.lettered:
            return tuple(LETTERS[: len(sample.choices)])
        return sample.choices

    def options_block(self, sample: Sample) -> str:
        return "".join(f"{LETTERS[i]}. {c}\n" for i, c in enumerate(sample.choices))


FORMATS: Registry[PromptFormat] = Registry("prompt format", families=True)


def _question(sample: Sample) -> str:
    if not isinstance(sample.input, str):
        raise TypeError(f"sample {sample.id}: MCQA formats need text input")
    return sample.input


class MedQAFormat(PromptFormat):
    def text(self, sample: Sample) -> str:
        return f"Question: {_question(sample)}\n{self.options_block(sample)}Answer:"


class MedMCQAFormat(PromptFormat):
    def text(self, sample: Sample) -> str:
        return f"Question: {_question(sample)}\nChoices:\n{self.options_block(sample)}Answer:"


class PubMedQAFormat(PromptFormat):
    def text(self, sample: Sample) -> str:
        contexts = "\n".join(sample.metadata["contexts"])
        return f"Abstract: {contexts}\nQuestion: {_question(sample)}\nAnswer:"


class MMLUFormat(PromptFormat):
    def text(self, sample: Sample) -> str:
        return f"{_question(sample).strip()}\n{self.options_block(sample)}Answer:"

    def description(self, sample: Sample) -> str:
        subject = str(sample.metadata["subject"]).replace("_", " ")
        return f"The following are multiple choice questions (with answers) about {subject}.\n\n"


for _fmt in (
    MedQAFormat("medqa"),
    MedMCQAFormat("medmcqa"),
    PubMedQAFormat("pubmedqa", lettered=False),
    MMLUFormat("mmlu"),
):
    FORMATS.add(_fmt.name, _fmt)
