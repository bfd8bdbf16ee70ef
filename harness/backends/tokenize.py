"""Context/continuation tokenisation shared by the in-process backends, identical to
lm-eval's `_encode_pair` so that log-likelihoods (and answers) match lm-eval's."""

from __future__ import annotations

from typing import Any

from harness.types import GenerationRequest, LoglikelihoodRequest


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Trailing context spaces move to the continuation; the continuation's tokens are the tail
    of the whole string's encoding. An empty context is replaced by the BOS (else EOS) token."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not context:
        prefix = tokenizer.bos_token_id
        if prefix is None:
            prefix = tokenizer.eos_token_id
        return [prefix], list(tokenizer.encode(continuation))
    whole = list(tokenizer.encode(context + continuation))
    ctx = list(tokenizer.encode(context))
    return ctx, whole[len(ctx):]


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's chat template when it has one, else a plain "role: content" transcript."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def count_request_tokens(tokenizer: Any, request: LoglikelihoodRequest | GenerationRequest, *,
                         special_tokens_for_prompt: bool = False) -> int:
    """Tokens the request's input takes, tokenised as the in-process backends tokenise it: the
    pair for log-likelihood; the chat-templated text (its special tokens already in it) or the
    plain prompt (with the tokenizer's special tokens when `special_tokens_for_prompt`)."""
    if isinstance(request, LoglikelihoodRequest):
        ctx, cont = encode_pair(tokenizer, request.context, request.continuation)
        return len(ctx) + len(cont)
    if request.messages is not None:
        text = render_chat(tokenizer, [{"role": m.role, "content": m.content} for m in request.messages])
        return len(tokenizer.encode(text, add_special_tokens=False))
    return len(tokenizer.encode(request.prompt or "", add_special_tokens=special_tokens_for_prompt))


def shorten_text(tokenizer: Any, text: str, n_tokens: int, side: str) -> str:
    """`text` less `n_tokens` of its tokens: its start (side "left") or its middle ("middle")."""
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    keep = max(0, len(ids) - n_tokens)
    if side == "left":
        kept = ids[len(ids) - keep:] if keep else []
    elif side == "middle":
        head = keep // 2
        kept = ids[:head] + (ids[len(ids) - (keep - head):] if keep - head else [])
    else:
        raise ValueError(f"truncation side must be 'left' or 'middle', got {side!r}")
    return str(tokenizer.decode(kept, skip_special_tokens=False))
