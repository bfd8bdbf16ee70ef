"""Rubric graders over stored texts: one decision (criterion met or not) per (response, item).

`LLMRubricGrader` is a ModelBackend (retries, then the request cache, as judges.judge builds
them) + a grader prompt (harness.scoring.rubric_grading) + the strict reply parser; the three
and the generation settings (temperature 0 unless asked) are its fingerprint. A reply that does
not parse is asked for once more (the conversation so far, the failed reply, the reminder); if
that fails too, or the backend could not serve the request, the decision is ungraded (met None)
with the reason and every raw reply kept, never "not met". Scripted graders (always met, never
met, met iff the item's points are positive, seeded random) are baselines and test doubles.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.backends.stack import open_stack
from harness.errors import CapabilityError
from harness.scoring.rubric import RubricItem
from harness.scoring.rubric_grading import (
    GraderPrompt,
    grader_identity,
    grader_messages,
    parse_reply,
    retry_messages,
)
from harness.types import (
    GenerationConfig,
    GenerationRequest,
    Message,
    ModelBackend,
    RequestFailure,
    RequestKind,
    stable_hash,
)
from judges.judge import JudgeConfig, Progress, model_label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GradeQuery:
    """One decision to make: does `response` (the reply to `conversation`) meet `item`?"""

    key: str
    conversation: tuple[Message, ...]
    response: str
    item: RubricItem | str


@dataclass(frozen=True)
class GradeDecision:
    met: bool | None  # None: ungraded (error says why)
    explanation: str | None = None
    error: str | None = None
    raw: tuple[str, ...] = ()
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "raw": list(self.raw)}


@dataclass
class GraderUsage:
    requests: int = 0
    fresh: int = 0  # not served by the request cache
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RubricGrader(Protocol):
    name: str

    def fingerprint(self) -> str: ...

    def info(self) -> dict[str, Any]: ...

    def grade(self, queries: Sequence[GradeQuery], progress: Progress | None = None) -> list[GradeDecision]: ...


@dataclass
class FunctionRubricGrader:
    """A scripted grader: `decide(query)` -> met, or None for "could not grade"."""

    name: str
    decide: Callable[[GradeQuery], bool | None]
    baseline: bool = True
    usage: GraderUsage = field(default_factory=GraderUsage)

    def fingerprint(self) -> str:
        return stable_hash({"scripted_rubric_grader": self.name})

    def info(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint(), "model_label": self.name, "scripted": True}

    def grade(self, queries: Sequence[GradeQuery], progress: Progress | None = None) -> list[GradeDecision]:
        out = []
        for q in queries:
            met = self.decide(q)
            out.append(GradeDecision(met, None, None if met is not None else "scripted: no decision"))
        if progress is not None:
            progress(len(queries))
        return out


def _points(q: GradeQuery) -> float:
    if isinstance(q.item, str):
        raise ValueError("met_if_positive needs rubric items with points, not bare criterion texts")
    return q.item.points


def _coin(seed: int) -> Callable[[GradeQuery], bool]:
    def decide(q: GradeQuery) -> bool:
        digest = hashlib.sha256(f"{seed}:{q.key}".encode()).digest()
        return digest[0] % 2 == 0

    return decide


SCRIPTED: dict[str, Callable[[int], FunctionRubricGrader]] = {
    "always met": lambda seed: FunctionRubricGrader("always met", lambda q: True),
    "never met": lambda seed: FunctionRubricGrader("never met", lambda q: False),
    "random": lambda seed: FunctionRubricGrader(f"random (seed {seed})", _coin(seed)),
    "met if positive": lambda seed: FunctionRubricGrader("met if positive", lambda q: _points(q) > 0),
}
BASELINES = ("always met", "never met", "random")


BUILTIN_PROMPT = "rubric_grader"


def load_grader_prompt(name_or_path: str | Path | None = None) -> GraderPrompt:
    """The built-in grader prompt (None or "rubric_grader": tasks/prompts/rubric_grader.yaml, the
    one `harness run` uses) or a file: .yaml ours, anything else an upstream-style template."""
    from harness.data.sources import tasks_dir
    from harness.errors import ConfigError
    from harness.scoring.rubric_grading import parse_grader_prompt

    if name_or_path is None or str(name_or_path) == BUILTIN_PROMPT:
        path = tasks_dir() / "prompts" / f"{BUILTIN_PROMPT}.yaml"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"no such grader prompt file (built in: {BUILTIN_PROMPT})", file=str(path))
    return parse_grader_prompt(path.read_text(encoding="utf-8"), str(path))


class LLMRubricGrader:
    """A model grader. Build with `create` (which owns and later closes the backend) or pass
    any ModelBackend (tests: a scripted one)."""

    def __init__(self, backend: ModelBackend, prompt: GraderPrompt, *, max_tokens: int | None = None,
                 temperature: float = 0.0, seed: int | None = None, chunk_size: int = 16,
                 model_label: str | None = None, closers: Sequence[Callable[[], None]] = (), max_replies: int = 2):
        if RequestKind.GENERATE not in backend.capabilities:
            raise CapabilityError(f"backend {backend.name!r} cannot generate, so it cannot grade")
        self.backend = backend
        self.prompt = prompt
        self.generation = GenerationConfig(max_tokens=max_tokens or prompt.max_tokens, temperature=temperature,
                                           seed=seed)
        self.chunk_size = chunk_size
        self.model_label = model_label or backend.name
        self.name = self.model_label
        self.max_replies = max_replies
        self._closers = list(closers)
        self.usage = GraderUsage()

    @classmethod
    def create(cls, config: JudgeConfig, prompt: GraderPrompt) -> LLMRubricGrader:
        stack = open_stack(config.backend, config.model, batch_size=config.batch_size, model_args=config.model_args,
                           max_attempts=config.max_attempts, cache=config.cache)
        return cls(stack.top, prompt, max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed,
                   chunk_size=config.chunk_size, model_label=model_label(config), closers=[stack.close])

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers = []

    def __enter__(self) -> LLMRubricGrader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def identity(self) -> dict[str, Any]:
        return grader_identity(self.prompt, self.backend.fingerprint(), self.generation)

    def fingerprint(self) -> str:
        return stable_hash(self.identity())

    def info(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint(), "model_label": self.model_label, "backend": self.backend.info(),
                **self.identity()}

    def grade(self, queries: Sequence[GradeQuery], progress: Progress | None = None) -> list[GradeDecision]:
        first = [grader_messages(self.prompt, q.conversation, q.response, q.item) for q in queries]
        raw: list[list[str]] = [[] for _ in queries]
        errors: list[list[str]] = [[] for _ in queries]
        tokens = [[0, 0] for _ in queries]
        done: list[GradeDecision | None] = [None] * len(queries)
        todo = list(range(len(queries)))
        for attempt in range(1, self.max_replies + 1):
            if not todo:
                break
            messages = [first[k] if attempt == 1 else retry_messages(first[k], raw[k][-1], self.prompt) for k in todo]
            outcomes = self._generate(messages, progress if attempt == 1 else None)
            again = []
            for k, out in zip(todo, outcomes, strict=True):
                if isinstance(out, RequestFailure):
                    errors[k].append(f"request failed: {out.reason}")
                    done[k] = self._decision(None, None, raw[k], errors[k], attempt, tokens[k])
                    continue
                raw[k].append(out.text)
                tokens[k][0] += out.n_prompt_tokens
                tokens[k][1] += out.n_completion_tokens
                reply = parse_reply(out.text)
                if reply.met is None:
                    errors[k].append(reply.error or "unparseable")
                    if attempt < self.max_replies:
                        again.append(k)
                    else:
                        done[k] = self._decision(None, None, raw[k], errors[k], attempt, tokens[k])
                    continue
                done[k] = self._decision(reply.met, reply.explanation, raw[k], [], attempt, tokens[k])
            if again:
                log.info("rubric grader: %d of %d replies did not parse; asking again", len(again), len(todo))
            todo = again
        return [d for d in done if d is not None]

    @staticmethod
    def _decision(met: bool | None, explanation: str | None, raw: list[str], errors: list[str], attempts: int,
                  tokens: list[int]) -> GradeDecision:
        return GradeDecision(met, explanation, "; ".join(errors) or None, tuple(raw), attempts, tokens[0], tokens[1])

    def _generate(self, messages: list[tuple[Message, ...]], progress: Progress | None) -> list[Any]:
        requests = [GenerationRequest(messages=m, config=self.generation) for m in messages]
        out: list[Any] = []
        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start:start + self.chunk_size]
            misses = getattr(self.backend, "misses", None)
            results = self.backend.generate(chunk)
            fresh = len(chunk) if misses is None else getattr(self.backend, "misses", 0) - misses
            self.usage.requests += len(chunk)
            self.usage.fresh += fresh
            for r in results:
                if not isinstance(r, RequestFailure):
                    self.usage.prompt_tokens += r.n_prompt_tokens
                    self.usage.completion_tokens += r.n_completion_tokens
            out.extend(results)
            if progress is not None:
                progress(len(chunk))
        return out
