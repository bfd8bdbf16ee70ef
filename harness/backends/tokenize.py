"""Context/continuation tokenisation shared by the in-process backends, identical to
lm-eval's `_encode_pair` so that log-likelihoods (and answers) match lm-eval's."""

from __future__ import annotations

from typing import Any


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
