"""Training examples of `--protocol sft`, formatted by the task's own prompt: each train sample
goes through the scoring protocol's `requests` exactly as a test sample does, and its gold answer
becomes the response, so train and test prompts match byte for byte.

- loglik, loglik_text: the gold choice's request: its context, and its continuation (" B") as the
  response; tokenised as the backends tokenise a log-likelihood request (`encode_pair`), with the
  loss on the scored continuation tokens only.
- generate, ner, generate_text: the request's chat messages, then the gold reply as the assistant
  turn; rendered with the model's chat template, the loss on the reply and its end-of-turn token
  (the trainers' `chat_features`).

Reasoning protocols (cot, sc, voc) have no builder: no task ships worked rationales to train on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.protocols.base import PromptContext, Protocol
from harness.registry import Registry
from harness.types import GenerationRequest, LoglikelihoodRequest, Message, Sample, stable_hash

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainExample:
    """A completion (`context` -> `continuation`) or a chat whose last message is the reply."""

    id: str
    context: str | None = None
    continuation: str | None = None
    messages: tuple[Message, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.messages:
            return {"id": self.id, "messages": [{"role": m.role, "content": m.content} for m in self.messages]}
        return {"id": self.id, "context": self.context, "continuation": self.continuation}

    def text(self) -> str:
        """Everything the model reads and learns, for the leakage check."""
        if self.messages:
            return "\n".join(m.content for m in self.messages)
        return f"{self.context}{self.continuation}"


ExampleBuilder = Callable[[Protocol, Sample, PromptContext], TrainExample]
EXAMPLE_BUILDERS: Registry[ExampleBuilder] = Registry("fine-tunable protocol")


def completion_example(protocol: Protocol, sample: Sample, ctx: PromptContext) -> TrainExample:
    """The request of the gold choice (one log-likelihood request per choice, in choice order)."""
    requests = protocol.requests(sample, ctx)
    if not isinstance(sample.target, int) or not 0 <= sample.target < len(requests):
        raise HarnessError(f"sample {sample.id}: target {sample.target!r} is not a choice index")
    gold = requests[sample.target]
    if not isinstance(gold, LoglikelihoodRequest):
        raise HarnessError(f"protocol {protocol.name!r} does not score choices by log-likelihood")
    return TrainExample(sample.id, context=gold.context, continuation=gold.continuation)


def reply_example(protocol: Protocol, sample: Sample, ctx: PromptContext) -> TrainExample:
    """The generation request, answered with the gold text (a text target as it is, else the
    choice's label, which the protocol's extractor reads back)."""
    requests = protocol.requests(sample, ctx)
    if len(requests) != 1 or not isinstance(requests[0], GenerationRequest):
        raise HarnessError(f"protocol {protocol.name!r} does not make one generation request per sample")
    request = requests[0]
    reply = sample.target if isinstance(sample.target, str) else protocol.answer_text(sample, ctx)
    if request.messages is None:
        return TrainExample(sample.id, context=request.prompt, continuation=reply)
    return TrainExample(sample.id, messages=(*request.messages, Message("assistant", reply)))


for _name in ("loglik", "loglik_text"):
    EXAMPLE_BUILDERS.add(_name, completion_example)
for _name in ("generate", "ner", "generate_text"):
    EXAMPLE_BUILDERS.add(_name, reply_example)


def example_builder(protocol: Protocol, task: str) -> ExampleBuilder:
    if protocol.name not in EXAMPLE_BUILDERS:
        raise HarnessError(
            f"task {task!r}: protocol {protocol.name!r} cannot be fine-tuned on (no task ships worked "
            f"rationales); fine-tunable: {', '.join(EXAMPLE_BUILDERS.names())}")
    return EXAMPLE_BUILDERS.get(protocol.name)


def build_examples(protocol: Protocol, samples: Sequence[Sample], ctx: PromptContext,
                   task: str) -> list[TrainExample]:
    builder = example_builder(protocol, task)
    out = []
    for s in samples:
        try:
            out.append(builder(protocol, s, ctx))
        except (KeyError, TypeError, ValueError) as exc:
            raise HarnessError(f"task {task!r}, train sample {s.id}: cannot build its example: {exc}") from None
    return out


def examples_fingerprint(examples: Sequence[TrainExample]) -> str:
    """The training data fingerprint: a hash of the formatted examples, in training order."""
    return stable_hash([e.to_json() for e in examples])


def tokenize_example(example: TrainExample, tokenizer: Any) -> dict[str, list[int]] | None:
    """input_ids and labels (-100 but on the response); None when no response token is left."""
    if example.messages:
        from trainers.data.formatting import chat_features

        return chat_features(example.messages, tokenizer, None)
    from harness.backends.tokenize import encode_pair

    assert example.context is not None and example.continuation is not None
    context, continuation = encode_pair(tokenizer, example.context, example.continuation)
    if not continuation:
        return None
    return {"input_ids": [*context, *continuation], "labels": [IGNORE_INDEX] * len(context) + continuation}
