"""A judge: a ModelBackend (wrapped in retries and the request cache) + a prompt file + a reply
parser. The three, with the generation settings, are hashed into the judge fingerprint that is
stored with every judgement.

A reply that does not parse is asked for once more (a new request: the conversation so far,
the failed reply, and the prompt's reminder); if that fails too the judgement is unscored and
both raw replies are kept. A request the backend could not serve (after the retry wrapper's
bounded attempts) is unscored with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.backends.stack import open_stack
from harness.errors import CapabilityError, ConfigError
from harness.types import (
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    Message,
    ModelBackend,
    RequestFailure,
    RequestKind,
    stable_hash,
)
from judges.parse import PARSERS, ReplyError, ReplyParser, parser_fingerprint
from judges.prompt import JudgePrompt, load_prompt

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


class JudgeConfig(BaseModel):
    """Everything that defines a judge model; the prompt is chosen per protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(default="hf", description="Registered backend: hf, openai or vllm.")
    model: str | None = Field(default=None, description="Judge model; None = the embedded default model.")
    model_args: dict[str, Any] = Field(default_factory=dict, description="Backend arguments (base_url, dtype, ...).")
    batch_size: int = Field(default=8, ge=1, description="Requests per forward pass (in-process backends).")
    max_tokens: int | None = Field(default=None, ge=1, description="Reply length limit; None = the prompt file's.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    seed: int | None = Field(default=None, description="Sampling seed (sent with every request).")
    cache: Path | None = Field(default=None, description="SQLite request cache; None disables.")
    max_attempts: int = Field(default=4, ge=1, description="Tries per request for transient backend failures.")
    chunk_size: int = Field(default=16, ge=1, description="Requests per backend call (progress granularity).")


@dataclass(frozen=True)
class Judgement:
    """One judge decision. `values` is None when unscored; `raw` holds every reply received."""

    values: dict[str, Any] | None
    raw: tuple[str, ...] = ()
    error: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # this request's share of its batch's wall time (about 0 from the cache)

    @property
    def scored(self) -> bool:
        return self.values is not None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "raw": list(self.raw)}


@dataclass
class JudgeUsage:
    """Counters over the judge's life. `fresh` requests were computed (not served by the
    request cache); `seconds` is the wall time of the backend calls, so seconds / fresh is
    the cost of one judgement even when some came from the cache."""

    requests: int = 0
    fresh: int = 0
    seconds: float = 0.0

    def since(self, before: JudgeUsage) -> JudgeUsage:
        return JudgeUsage(self.requests - before.requests, self.fresh - before.fresh, self.seconds - before.seconds)

    def seconds_per_fresh(self) -> float | None:
        return self.seconds / self.fresh if self.fresh else None


@dataclass
class _Pending:
    messages: tuple[Message, ...]
    raw: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


def model_label(config: JudgeConfig) -> str:
    """`backend:model` as tables show a judge; a file path (e.g. a server's GGUF id) by its name."""
    label = config.model or "default"
    if label.startswith("/") or label.count("/") > 1:
        label = Path(label).name
    return f"{config.backend}:{label}"


class Judge:
    """Asks a backend for judgements with one prompt file. Build with `Judge.create` (which
    owns and later closes the backend) or pass any ModelBackend (tests: a scripted one)."""

    def __init__(self, backend: ModelBackend, prompt: JudgePrompt, *, max_tokens: int | None = None,
                 temperature: float = 0.0, seed: int | None = None, chunk_size: int = 16,
                 model_label: str | None = None, closers: Sequence[Callable[[], None]] = ()):
        if RequestKind.GENERATE not in backend.capabilities:
            raise CapabilityError(f"backend {backend.name!r} cannot generate, so it cannot judge")
        self.backend = backend
        self.prompt = prompt
        self.parser: ReplyParser = PARSERS.get(prompt.parser)
        for k, ex in enumerate(prompt.examples):
            try:
                self.parser.parse(ex.reply, prompt)
            except ReplyError as exc:
                raise ConfigError(f"example reply does not pass the parser: {exc}", file=prompt.name,
                                  key=f"examples.{k}.reply") from None
        self.generation = GenerationConfig(max_tokens=max_tokens or prompt.max_tokens, temperature=temperature,
                                           seed=seed)
        self.chunk_size = chunk_size
        self.model_label = model_label or backend.name
        self._closers = list(closers)
        self.usage = JudgeUsage()

    @classmethod
    def create(cls, config: JudgeConfig, prompt: str | Path | JudgePrompt) -> Judge:
        p = prompt if isinstance(prompt, JudgePrompt) else load_prompt(prompt)
        stack = open_stack(config.backend, config.model, batch_size=config.batch_size, model_args=config.model_args,
                           max_attempts=config.max_attempts, cache=config.cache)
        backend, closers = stack.top, [stack.close]
        return cls(backend, p, max_tokens=config.max_tokens, temperature=config.temperature, seed=config.seed,
                   chunk_size=config.chunk_size, model_label=model_label(config), closers=closers)

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers = []

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- identity ---------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {
            "model": self.backend.fingerprint(),
            "prompt": {"name": self.prompt.name, "version": self.prompt.version, "sha256": self.prompt.content_hash},
            "parser": parser_fingerprint(self.parser, self.prompt),
            "generation": asdict(self.generation),
        }

    def fingerprint(self) -> str:
        return stable_hash(self.identity())

    def info(self) -> dict[str, Any]:
        """What records store about the judge (never secrets)."""
        return {"fingerprint": self.fingerprint(), "model_label": self.model_label,
                "backend": self.backend.info(), **self.identity()}

    # -- judging ----------------------------------------------------------------------------
    def judge(self, conversations: Sequence[tuple[Message, ...]], progress: Progress | None = None) -> list[Judgement]:
        """One judgement per conversation, in order."""
        pending = [_Pending(tuple(m)) for m in conversations]
        results: list[Judgement | None] = [None] * len(pending)
        todo = list(range(len(pending)))
        for attempt in (1, 2):
            if not todo:
                break
            requests = [GenerationRequest(messages=self._messages(pending[i], attempt), config=self.generation)
                        for i in todo]
            outcomes = self._generate(requests, progress if attempt == 1 else None)
            again = []
            for i, out in zip(todo, outcomes, strict=True):
                p = pending[i]
                if isinstance(out, RequestFailure):
                    results[i] = self._done(p, None, attempt, f"request failed: {out.reason}")
                    continue
                result, seconds = out
                p.raw.append(result.text)
                p.prompt_tokens += result.n_prompt_tokens
                p.completion_tokens += result.n_completion_tokens
                p.seconds += seconds
                try:
                    values = self.parser.parse(result.text, self.prompt).values
                except ReplyError as exc:
                    p.errors.append(str(exc))
                    if attempt == 1:
                        again.append(i)
                    else:
                        results[i] = self._done(p, None, attempt, "; ".join(p.errors))
                    continue
                results[i] = self._done(p, values, attempt, None)
            if again:
                log.info("judge: %d of %d replies did not parse; asking once more", len(again), len(todo))
            todo = again
        return [r for r in results if r is not None]

    def _messages(self, p: _Pending, attempt: int) -> tuple[Message, ...]:
        if attempt == 1:
            return p.messages
        return (*p.messages, Message("assistant", p.raw[-1]), Message("user", self.prompt.reminder_text()))

    @staticmethod
    def _done(p: _Pending, values: dict[str, Any] | None, attempts: int, error: str | None) -> Judgement:
        return Judgement(values, tuple(p.raw), error, attempts, p.prompt_tokens, p.completion_tokens,
                         round(p.seconds, 4))

    def _generate(self, requests: list[GenerationRequest],
                  progress: Progress | None) -> list[tuple[GenerationResult, float] | RequestFailure]:
        """Results with each request's share of its chunk's wall time."""
        out: list[tuple[GenerationResult, float] | RequestFailure] = []
        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start:start + self.chunk_size]
            misses = self.backend.stats().get("misses")  # a cache counts what it computed
            began = time.monotonic()
            results = self.backend.generate(chunk)
            elapsed = time.monotonic() - began
            share = elapsed / len(chunk)
            fresh = len(chunk) if misses is None else self.backend.stats().get("misses", 0) - misses
            self.usage = JudgeUsage(self.usage.requests + len(chunk), self.usage.fresh + fresh,
                                    self.usage.seconds + elapsed)
            out.extend(r if isinstance(r, RequestFailure) else (r, share) for r in results)
            if progress is not None:
                progress(len(chunk))
        return out
