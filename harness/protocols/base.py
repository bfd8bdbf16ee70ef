"""The protocol base: how a Sample becomes requests, and how the results become a Score.

Each family module beside this one (mcqa, reasoning, textgen, ner, interactive, pqa, lmeval,
sft) defines its protocols and registers them in PROTOCOLS. Few-shot exemplars are chosen
per sample from a non-eval split, seeded by (seed, sample id),
so a sample's prompt does not depend on which other samples run (resume-safe).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.spec import FewshotSpec, ProtocolSpec
from harness.protocols.formats import PromptFormat
from harness.registry import Registry
from harness.types import (
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
    # run-level settings of a task family, by family (e.g. "rubric": RunConfig.rubric as a dict)
    family_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


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

    def finish_extra(self, extra: dict[str, Any], candidate: str | None) -> dict[str, Any]:
        """The task record's `extra` block once the task is scored, now that the candidate model
        is known (e.g. a jury flags graders of the candidate's family). Default: unchanged."""
        return extra

    def absorbs_failure(self, request: Request, ctx: PromptContext) -> bool:
        """Whether this protocol handles a failure of `request` itself (a RequestFailure left after
        the backend's bounded retries, or a request too long for its model): the failure reaches
        `followup` and `score` as that request's result, instead of leaving the whole sample
        unscored (e.g. a rubric grader's request: only its item is ungraded). The runner still
        marks such a sample request_failed (unless the request was not sent: too long), so it
        counts for the exit status and is asked again on resume. Default: none (any failed
        request leaves the sample unscored)."""
        return False

    def followup(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> list[Request]:
        """Requests of the next stage, given every result so far (empty when done). Multi-stage
        protocols (voc, dialogue simulations) override this; `score` sees all results in order."""
        return []

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        raise NotImplementedError


PROTOCOLS: Registry[Protocol] = Registry("protocol", families=True)


@dataclass(frozen=True)
class ExternalOptions:
    """The run settings a provider of another harness's tasks receives."""

    include: Path | None = None  # a folder of that harness's task configs
    num_fewshot: int = 0
    seed: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class ExternalTask:
    spec: Any  # harness.data.spec.TaskSpec
    protocol: Protocol
    samples: list[Sample]


# `PREFIX:NAME` tasks of other harnesses, planned by that harness's own machinery (lmeval.py).
EXTERNAL_TASKS: Registry[Callable[[str, ExternalOptions], ExternalTask]] = Registry("task provider",
                                                                                      families=True)
