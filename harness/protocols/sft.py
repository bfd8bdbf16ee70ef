"""Naming of the sft protocol. `--protocol sft` fine-tunes on each task's train split and then
scores with the task's default protocol; `--protocol sft+NAME` scores with protocol NAME. Records
label the result `sft+<scoring protocol>` (e.g. `sft+loglik`, `sft+ner`), so a fine-tuned result
never shares a task key, a task fingerprint or a leaderboard column with a zero-/few-shot one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.errors import HarnessError
from harness.protocols.base import PROTOCOLS, PromptContext, Protocol
from harness.types import Request, Sample, Score

SFT = "sft"
PREFIX = "sft+"


def is_sft(protocol: str | None) -> bool:
    return protocol is not None and (protocol == SFT or protocol.startswith(PREFIX))


def scoring_protocol(protocol: str) -> str | None:
    """"sft" -> None (each task's default protocol); "sft+NAME" -> NAME."""
    if protocol == SFT:
        return None
    inner = protocol.removeprefix(PREFIX)
    if not inner or is_sft(inner):
        raise HarnessError(f"bad protocol {protocol!r}: expected sft or sft+NAME (e.g. sft+loglik)")
    return inner


class SFTProtocol(Protocol):
    """A fine-tuned model's scoring: the inner protocol's requests and scores, under its own label."""

    def __init__(self, inner: Protocol, identity: dict[str, Any] | None = None):
        self.inner = inner
        self.identity = dict(identity or {})  # recipe and training data hashes: in the task fingerprint
        self.name = f"{PREFIX}{inner.name}"
        self.kind = inner.kind
        self.metrics = inner.metrics

    @property
    def record_extra(self) -> dict[str, Any]:
        return dict(getattr(self.inner, "record_extra", {}))

    def label(self, ctx: PromptContext) -> str:
        return f"{PREFIX}{self.inner.label(ctx)}"

    def record_info(self, ctx: PromptContext) -> dict[str, Any]:
        return {**self.inner.record_info(ctx), **({"sft": self.identity} if self.identity else {})}

    def aux_roles(self, ctx: PromptContext) -> tuple[str, ...]:
        return self.inner.aux_roles(ctx)

    def prompt(self, sample: Sample, ctx: PromptContext) -> str:
        return self.inner.prompt(sample, ctx)

    def answer_text(self, sample: Sample, ctx: PromptContext) -> str:
        return self.inner.answer_text(sample, ctx)

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        return self.inner.requests(sample, ctx)

    def followup(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> list[Request]:
        return self.inner.followup(sample, results, ctx)

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        return self.inner.score(sample, results, ctx)


class SFTEntry(Protocol):
    """The registry's entry for `--protocol sft`: the name is known and listed like any other, but
    the protocol fine-tunes before it scores, so the run goes through trainers.task_sft."""

    name = SFT

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        raise HarnessError("--protocol sft fine-tunes on each task first: run it through `harness run` "
                           "(or trainers.task_sft.run_sft)")

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        raise HarnessError("--protocol sft scores through the protocol it wraps")


PROTOCOLS.add(SFT, SFTEntry())
