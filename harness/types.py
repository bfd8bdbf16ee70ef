"""Core value types passed between stages. Plain, frozen, JSON-friendly."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON form of `obj` (sorted keys, no whitespace)."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Sample:
    """One evaluation item. `target` is a choice index for MCQA, else free text."""

    id: str
    input: str | tuple[Message, ...]
    choices: tuple[str, ...] = ()
    target: int | str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["choices"] = list(self.choices)
        data["metadata"] = dict(self.metadata)
        if not isinstance(self.input, str):
            data["input"] = [asdict(m) for m in self.input]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sample:
        raw_input = data["input"]
        inp: str | tuple[Message, ...] = (
            raw_input if isinstance(raw_input, str) else tuple(Message(**m) for m in raw_input)
        )
        return cls(
            id=str(data["id"]),
            input=inp,
            choices=tuple(data.get("choices") or ()),
            target=data.get("target"),
            metadata=dict(data.get("metadata") or {}),
        )


class RequestKind(enum.StrEnum):
    LOGLIKELIHOOD = "loglikelihood"
    GENERATE = "generate"


@dataclass(frozen=True)
class GenerationConfig:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # JSON text of a JSON Schema the reply must follow (structured output, enforced by the server);
    # None = free text. Part of the request key only when set.
    json_schema: str | None = None


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """log P(continuation | context). Trailing spaces of the context move to the
    continuation before tokenising, as lm-eval does."""

    context: str
    continuation: str

    kind = RequestKind.LOGLIKELIHOOD

    def key(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "context": self.context, "continuation": self.continuation}


# Version of the in-process sampling procedure (2: harness.backends.hf_generate's per-chain
# generators, temperature then top-p, no hidden top-k). Part of a sampled request's key.
SAMPLING_VERSION = 2


@dataclass(frozen=True)
class GenerationRequest:
    """A completion of `prompt`, or a chat reply to `messages` (exactly one is set)."""

    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    config: GenerationConfig = field(default_factory=GenerationConfig)

    kind = RequestKind.GENERATE

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("GenerationRequest needs exactly one of prompt or messages")

    def key(self) -> dict[str, Any]:
        key: dict[str, Any] = {
            "kind": self.kind.value,
            "prompt": self.prompt,
            "messages": [asdict(m) for m in self.messages] if self.messages else None,
            "config": {k: v for k, v in asdict(self.config).items() if k != "json_schema" or v is not None},
        }
        if self.config.temperature > 0:  # sampled results of an older sampling procedure are never reused
            key["sampling"] = SAMPLING_VERSION
        return key


@dataclass(frozen=True)
class RoutedRequest:
    """A generation request for an auxiliary model of the run (e.g. the simulated patient of
    the interactive protocol, a turn judge), named by its role; the runner sends it to the
    backend configured for that role (`RunConfig.aux_models`), never to the model under test."""

    role: str
    request: GenerationRequest

    kind = RequestKind.GENERATE

    def key(self) -> dict[str, Any]:
        return {"role": self.role, **self.request.key()}


Request = LoglikelihoodRequest | GenerationRequest | RoutedRequest


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float
    is_greedy: bool
    n_tokens: int


@dataclass(frozen=True)
class GenerationResult:
    text: str
    n_prompt_tokens: int = 0
    n_completion_tokens: int = 0
    finish_reason: str | None = None


@dataclass(frozen=True)
class RequestFailure:
    """A request a remote backend could not answer, in place of its result. `retryable`
    failures (429, 5xx, timeouts, malformed responses) go back to the retry wrapper; what is
    left after its bound is recorded as an unscored sample with this reason."""

    reason: str
    retryable: bool = True
    retry_after: float | None = None
    # an error no other request can escape (authentication, unknown model): the run stops
    fatal: bool = False
    # the request was not sent: its input does not fit the model's context (harness.backends.context)
    context_exceeded: bool = False


LoglikelihoodOutcome = LoglikelihoodResult | RequestFailure
GenerationOutcome = GenerationResult | RequestFailure


@dataclass(frozen=True)
class Score:
    """A per-sample score. value None means unscored (parse failure, refusal): counted and
    reported apart, never folded into a mean."""

    value: float | None
    answer: str | None = None
    explanation: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


class ModelBackend:
    """Batch-first model interface. Results are returned in request order.

    Backends (and the wrappers of the backend stack: retries, cache) subclass this and implement
    fingerprint, info, loglikelihood and generate; close, usage and stats have defaults."""

    name: str = ""
    capabilities: frozenset[RequestKind] = frozenset()

    def fingerprint(self) -> str:
        """Identifies the weights and every argument that changes outputs."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """What the record stores about the model (never secrets)."""
        raise NotImplementedError

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutcome]:
        """One outcome per request; in-process backends never return RequestFailure."""
        raise NotImplementedError

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutcome]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what this object holds (weights, connections, files); a wrapper does not close
        the backend it wraps: whoever opened a backend closes it (harness.backends.stack)."""

    def usage(self) -> dict[str, int]:
        """Tokens and calls the model spent (e.g. prompt_tokens); wrappers report their inner model's."""
        return {}

    def stats(self) -> dict[str, int]:
        """Counters of this layer (retries, cache hits)."""
        return {}

    # -- the model's context (used before inference: harness.backends.context) ---------------
    # Defaults: unknown. A wrapper of the backend stack (which keeps the model it wraps as `inner`)
    # answers with its inner model's answer.

    def context_length(self) -> int | None:
        """The most tokens the model attends to (prompt plus what it generates); None = unknown."""
        inner = getattr(self, "inner", None)
        return inner.context_length() if isinstance(inner, ModelBackend) else None

    def count_tokens(self, request: LoglikelihoodRequest | GenerationRequest) -> int | None:
        """Tokens the request's input takes in the context: context + continuation for
        log-likelihood, the prompt (chat template applied) for generation; None = cannot count."""
        inner = getattr(self, "inner", None)
        return inner.count_tokens(request) if isinstance(inner, ModelBackend) else None

    def shorten(self, text: str, n_tokens: int, side: str) -> str | None:
        """`text` less about `n_tokens` of its tokens, cut at its start (side "left") or in its middle
        ("middle"); None = this backend cannot (it has no tokenizer)."""
        inner = getattr(self, "inner", None)
        return inner.shorten(text, n_tokens, side) if isinstance(inner, ModelBackend) else None


@dataclass(frozen=True)
class TaskKey:
    """A task's key in a run: `task|protocol label|N` + `shot`, e.g. `medqa|loglik|0shot`."""

    task: str
    protocol: str
    n_shot: int

    def __str__(self) -> str:
        return f"{self.task}|{self.protocol}|{self.n_shot}shot"

    @classmethod
    def parse(cls, key: str) -> TaskKey:
        parts = key.split("|")
        if len(parts) != 3 or not parts[2].endswith("shot") or not parts[2][:-4].isdigit():
            raise ValueError(f"not a task key (task|protocol|Nshot): {key!r}")
        return cls(parts[0], parts[1], int(parts[2][:-4]))
