"""Prompts longer than the model's context, found before inference.

Every backend says its context length and counts a request's tokens (ModelBackend.context_length,
count_tokens; None where it cannot). A request whose input does not fit (for generation: with room
for its `max_tokens`) is not sent: by default its sample is unscored with the reason
"prompt exceeds context: N tokens > M"; with `--truncate left|middle` its longest text (the
log-likelihood context, the prompt, or the longest chat message) is cut to fit, and the sample is
counted as truncated. Logs show a shortened display of the text, never the whole of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from harness.errors import CapabilityError
from harness.types import GenerationRequest, LoglikelihoodRequest, Message, ModelBackend, RequestFailure

log = logging.getLogger(__name__)

TRUNCATE_SIDES = ("left", "middle")
_MAX_TRIES = 5  # re-tokenising a cut text can change its count a little: cut again, a bounded number of times


def refuse_json_schema(backend: str, requests: Sequence[GenerationRequest]) -> None:
    """In-process backends do not constrain decoding to a schema: refuse rather than return free text
    that the caller believes was enforced."""
    if any(r.config.json_schema is not None for r in requests):
        raise CapabilityError(f"the {backend} backend cannot enforce a JSON schema on replies (structured output): "
                              "use a server that does, through --backend openai (vLLM, llama.cpp, OpenAI)")


def display(text: str, width: int = 80) -> str:
    """A shortened one-line display of a long text: its start and end, and its length."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return repr(flat)
    half = (width - 5) // 2
    return f"{flat[:half]!r} ... {flat[-half:]!r} ({len(text):,} chars)"


def prompt_budget(backend: ModelBackend, request: LoglikelihoodRequest | GenerationRequest) -> int | None:
    """Tokens the request's input may take: the context length, less the tokens a generation
    request may generate; None when the backend does not know its context length."""
    length = backend.context_length()
    if length is None:
        return None
    if isinstance(request, GenerationRequest):
        return max(1, length - request.config.max_tokens)
    return length


@dataclass(frozen=True)
class Fitted:
    """What fit_request decided: the request to send (None: do not send it), the tokens before,
    and whether it was cut."""

    request: LoglikelihoodRequest | GenerationRequest | None
    n_tokens: int | None = None
    limit: int | None = None
    truncated: bool = False

    def failure(self) -> RequestFailure:
        why = f"prompt exceeds context: {self.n_tokens} tokens > {self.limit}"
        return RequestFailure(why, retryable=False, context_exceeded=True)


def _text_of(request: LoglikelihoodRequest | GenerationRequest) -> str:
    if isinstance(request, LoglikelihoodRequest):
        return request.context
    if request.messages is not None:
        return max((m.content for m in request.messages), key=len, default="")
    return request.prompt or ""


def _with_text(request: LoglikelihoodRequest | GenerationRequest,
               text: str) -> LoglikelihoodRequest | GenerationRequest:
    if isinstance(request, LoglikelihoodRequest):
        return replace(request, context=text)
    if request.messages is not None:
        longest = max(range(len(request.messages)), key=lambda i: len(request.messages[i].content))  # type: ignore[index]
        messages = tuple(Message(m.role, text) if i == longest else m for i, m in enumerate(request.messages))
        return replace(request, messages=messages)
    return replace(request, prompt=text)


def _cut_chars(text: str, n_chars: int, side: str) -> str:
    """A tokenizer-free cut (a remote backend that can count tokens but not cut them)."""
    n_chars = min(len(text), max(1, n_chars))
    if side == "left":
        return text[n_chars:]
    keep = len(text) - n_chars
    return text[: keep // 2] + text[len(text) - (keep - keep // 2):]


_last_warned: list[int] = [0]


def _first_time(text: str) -> bool:
    """False for the same text as the last one warned about (the choices of one sample share it)."""
    key = hash(text)
    if _last_warned[0] == key:
        return False
    _last_warned[0] = key
    return True


def fit_request(backend: ModelBackend, request: LoglikelihoodRequest | GenerationRequest,
                truncate: str | None) -> Fitted:
    """Check the request against the backend's context before it is sent (see the module doc)."""
    limit = prompt_budget(backend, request)
    if limit is None:
        return Fitted(request)
    n = backend.count_tokens(request)
    if n is None or n <= limit:
        return Fitted(request, n, limit)
    first = n
    if truncate is None:
        if not _first_time(_text_of(request)):
            return Fitted(None, n, limit)
        log.warning("prompt exceeds context: %d tokens > %d; its sample is unscored (--truncate left|middle "
                    "cuts it instead): %s", n, limit, display(_text_of(request)))
        return Fitted(None, n, limit)
    current = request
    for _ in range(_MAX_TRIES):
        excess = n - limit
        text = _text_of(current)
        cut = backend.shorten(text, excess, truncate)
        if cut is None:
            cut = _cut_chars(text, int(len(text) * excess / max(n, 1) * 1.05) + 1, truncate)
        if cut == text:
            break
        current = _with_text(current, cut)
        counted = backend.count_tokens(current)
        if counted is None:
            break
        n = counted
        if n <= limit:
            log.info("prompt truncated (%s) from %d to %d tokens to fit %d: %s", truncate, first, n, limit,
                     display(text))
            return Fitted(current, first, limit, truncated=True)
    log.warning("prompt of %d tokens could not be truncated to %d; its sample is unscored: %s", first, limit,
                display(_text_of(request)))
    return Fitted(None, first, limit)
