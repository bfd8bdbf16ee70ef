"""Protocols: how a Sample becomes requests, and how the results become a Score.

- `loglik`: each choice label (A/B/C/D, or the choice words) scored by log-likelihood.
- `loglik_text`: each full option text scored; also reports length-normalised accuracy.
- `generate`: free answer, then letter extraction; an extraction failure is unscored.
Few-shot exemplars are chosen per sample from a non-eval split, seeded by (seed, sample id),
so a sample's prompt does not depend on which other samples run (resume-safe).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.extract import get_extractor
from harness.formats import PromptFormat
from harness.registry import Registry
from harness.taskspec import FewshotSpec, ProtocolSpec
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


@dataclass(frozen=True)
class PromptContext:
    """Everything a protocol needs besides the sample itself."""

    format: PromptFormat
    options: ProtocolSpec
    n_shot: int = 0
    fewshot_pool: tuple[Sample, ...] = ()
    fewshot: FewshotSpec | None = None
    language: str = "en"
    seed: int = 0
    # roles of the auxiliary models the run configures (RunConfig.aux_models), e.g. "patient"
    aux_roles: frozenset[str] = frozenset()


def select_fewshot(sample: Sample, ctx: PromptContext) -> list[Sample]:
    if ctx.n_shot <= 0:
        return []
    pool = [s for s in ctx.fewshot_pool if s.id != sample.id]
    if len(pool) < ctx.n_shot:
        raise ValueError(f"few-shot pool has {len(pool)} samples, {ctx.n_shot} requested")
    spec = ctx.fewshot
    if spec is not None and spec.sampler == "first_n":
        return pool[: ctx.n_shot]
    seed = spec.seed if spec is not None else 0
    digest = hashlib.sha256(f"{seed}:{sample.id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).sample(pool, ctx.n_shot)


class Protocol:
    name: str = ""
    kind: RequestKind = RequestKind.LOGLIKELIHOOD
    metrics: tuple[str, ...] = ("accuracy",)

    def prompt(self, sample: Sample, ctx: PromptContext) -> str:
        fmt = ctx.format
        parts = [fmt.description(sample)]
        for shot in select_fewshot(sample, ctx):
            parts.append(f"{fmt.text(shot)} {self.answer_text(shot, ctx)}\n\n")
        parts.append(fmt.text(sample))
        return "".join(parts)

    def answer_text(self, sample: Sample, ctx: PromptContext) -> str:
        assert isinstance(sample.target, int)
        return ctx.format.labels(sample)[sample.target]

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        raise NotImplementedError

    def label(self, ctx: PromptContext) -> str:
        """The protocol as records show it (e.g. sc@5)."""
        return self.name

    def record_info(self, ctx: PromptContext) -> dict[str, Any]:
        """Settings that change scores but not the first-stage prompts (e.g. a simulator's); the
        record stores them and they enter the task fingerprint."""
        return {}

    def aux_roles(self, ctx: PromptContext) -> tuple[str, ...]:
        """Roles of the auxiliary models this protocol sends RoutedRequests to, in this run."""
        return ()

    def followup(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> list[Request]:
        """Requests of the next stage, given every result so far (empty when done). Multi-stage
        protocols (voc, dialogue simulations) override this; `score` sees all results in order."""
        return []

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        raise NotImplementedError


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


class GenerateProtocol(Protocol):
    name = "generate"
    kind = RequestKind.GENERATE

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        instruction = ctx.options.instruction or DEFAULT_INSTRUCTION
        content = f"{self.prompt(sample, ctx)}\n\n{instruction}"
        config = GenerationConfig(max_tokens=ctx.options.max_tokens, temperature=0.0)
        return [GenerationRequest(messages=(Message("user", content),), config=config)]

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        (result,) = results
        assert isinstance(result, GenerationResult)
        labels = ctx.format.labels(sample)
        extraction = get_extractor(ctx.options.extractor)(result.text, labels, sample.choices)
        meta: dict[str, Any] = {"output": result.text, "extraction": extraction.method}
        if extraction.index is None:
            return Score(value=None, explanation=f"no answer extracted: {extraction.method}",
                         metadata=meta)
        return Score(
            value=float(extraction.index == sample.target),
            answer=labels[extraction.index],
            metadata=meta,
        )


PROTOCOLS: Registry[Protocol] = Registry("protocol")
for _p in (LoglikProtocol(), LoglikTextProtocol(), GenerateProtocol()):
    PROTOCOLS.add(_p.name, _p)
PROTOCOLS.add_lazy("ner", "harness.ner:NER_PROTOCOL")
PROTOCOLS.add_lazy("cot", "harness.reasoning:COT")
PROTOCOLS.add_lazy("sc", "harness.reasoning:SC")
PROTOCOLS.add_lazy("voc", "harness.reasoning:VOC")
PROTOCOLS.add_lazy("generate_text", "harness.textgen:GENERATE_TEXT")
PROTOCOLS.add_lazy("interactive", "harness.consult:INTERACTIVE")
PROTOCOLS.add_lazy("pqa", "harness.pqa:PQA")
