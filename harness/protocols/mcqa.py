"""Multiple-choice protocols.

- `loglik`: each choice label (A/B/C/D, or the choice words) scored by log-likelihood.
- `loglik_text`: each full option text scored; also reports length-normalised accuracy.
- `generate`: free answer, then letter extraction; an extraction failure is unscored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.protocols import model_extract
from harness.protocols.base import PROTOCOLS, PromptContext, Protocol
from harness.protocols.extract import DEFAULT_EXTRACTOR
from harness.types import (
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Message,
    Request,
    RequestKind,
    Sample,
    Score,
)


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


class LoglikProtocol(Protocol):
    name = "loglik"

    def continuations(self, sample: Sample, ctx: PromptContext) -> tuple[str, ...]:
        return ctx.format.labels(sample)

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        context = self.prompt(sample, ctx)
        return [LoglikelihoodRequest(context, f" {c}") for c in self.continuations(sample, ctx)]

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        logprobs = [r.logprob for r in results if isinstance(r, LoglikelihoodResult)]
        pred = _argmax(logprobs)
        labels = ctx.format.labels(sample)
        return Score(
            value=float(pred == sample.target),
            answer=labels[pred],
            metadata={"logprobs": logprobs, "pred_index": pred},
        )


class LoglikTextProtocol(LoglikProtocol):
    name = "loglik_text"
    metrics = ("accuracy", "accuracy_norm")

    def continuations(self, sample: Sample, ctx: PromptContext) -> tuple[str, ...]:
        return sample.choices

    def answer_text(self, sample: Sample, ctx: PromptContext) -> str:
        assert isinstance(sample.target, int)
        return sample.choices[sample.target]

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        base = super().score(sample, results, ctx)
        logprobs = base.metadata["logprobs"]
        # lm-eval's acc_norm: log-likelihood per byte of the continuation.
        norm = [lp / len(f" {c}".encode()) for lp, c in zip(logprobs, sample.choices, strict=True)]
        pred_norm = _argmax(norm)
        return Score(
            value=base.value,
            answer=sample.choices[base.metadata["pred_index"]],
            metadata={
                **base.metadata,
                "values": {"accuracy_norm": float(pred_norm == sample.target)},
            },
        )


DEFAULT_INSTRUCTION = "Answer with the letter of the correct option only."


def _output(result: Any) -> str:
    assert isinstance(result, GenerationResult)
    return result.text


class GenerateProtocol(Protocol):
    name = "generate"
    kind = RequestKind.GENERATE

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        instruction = ctx.options.instruction or DEFAULT_INSTRUCTION
        content = f"{self.prompt(sample, ctx)}\n\n{instruction}"
        config = GenerationConfig(max_tokens=ctx.options.max_tokens, temperature=0.0)
        return [GenerationRequest(messages=(Message("user", content),), config=config)]

    def aux_roles(self, ctx: PromptContext) -> tuple[str, ...]:
        return (model_extract.ROLE,) if model_extract.uses_model(ctx) else ()

    def record_info(self, ctx: PromptContext) -> dict[str, Any]:
        return model_extract.record_info(ctx, DEFAULT_EXTRACTOR)

    def followup(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> list[Request]:
        # extractor: model asks the extractor model once, where the rule is unsure
        if not model_extract.uses_model(ctx) or len(results) != 1:
            return []
        rule = model_extract.rule_for(sample, ctx, DEFAULT_EXTRACTOR)
        return list(model_extract.requests_for([_output(results[0])], sample, ctx, rule))

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        text = _output(results[0])
        labels = ctx.format.labels(sample)
        rule = model_extract.rule_for(sample, ctx, DEFAULT_EXTRACTOR)
        (extraction,), asked = model_extract.decide([text], results[1:], sample, ctx, rule)
        meta: dict[str, Any] = {"output": text, "extraction": extraction.method,
                                **model_extract.model_meta(asked, [extraction])}
        if extraction.index is None:
            return Score(value=None, explanation=f"no answer extracted: {extraction.method}",
                         metadata=meta)
        return Score(
            value=float(extraction.index == sample.target),
            answer=labels[extraction.index],
            metadata=meta,
        )


for _p in (LoglikProtocol(), LoglikTextProtocol(), GenerateProtocol()):
    PROTOCOLS.add(_p.name, _p)
