"""Model backends: hf (transformers), vllm, openai (any OpenAI-compatible server); the wrappers
of the backend stack (retry, caching; stack assembles them); fingerprints of weights; where the
default model and encoders live (models). Entries are lazy so `harness --help` never imports
torch."""

from __future__ import annotations

from typing import Any

from harness.backends.caching import CachingBackend
from harness.errors import HarnessError
from harness.registry import Registry
from harness.types import ModelBackend

BACKENDS: Registry[Any] = Registry("backend")
BACKENDS.add_lazy("hf", "harness.backends.hf:HFBackend")
BACKENDS.add_lazy("openai", "harness.backends.openai_api:OpenAIBackend")
BACKENDS.add_lazy("vllm", "harness.backends.vllm_backend:VLLMBackend")


def create_backend(name: str, model: str | None, **kwargs: Any) -> ModelBackend:
    factory = BACKENDS.get(name)
    check_backend_args(name, factory, kwargs)
    backend: ModelBackend = factory(model, **kwargs)
    return backend


def check_backend_args(name: str, factory: Any, kwargs: dict[str, Any]) -> None:
    """Refuse an argument the backend does not take, in one line naming it and the accepted ones
    (instead of a TypeError from deep inside the constructor)."""
    import inspect

    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n != "model" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise HarnessError(f"unknown --model-args key {unknown[0]!r} for the {name} backend; "
                           f"accepted keys: {', '.join(accepted)}")


__all__ = ["BACKENDS", "CachingBackend", "create_backend"]
