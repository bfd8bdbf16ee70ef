"""Model backends: hf (transformers), vllm, openai (any OpenAI-compatible server); the wrappers
of the backend stack (retry, caching; stack assembles them); fingerprints of weights; where the
default model and encoders live (models). Entries are lazy so `harness --help` never imports
torch."""

from __future__ import annotations

from typing import Any

from harness.backends.caching import CachingBackend
from harness.registry import Registry
from harness.types import ModelBackend

BACKENDS: Registry[Any] = Registry("backend")
BACKENDS.add_lazy("hf", "harness.backends.hf:HFBackend")
BACKENDS.add_lazy("openai", "harness.backends.openai_api:OpenAIBackend")
BACKENDS.add_lazy("vllm", "harness.backends.vllm_backend:VLLMBackend")


def create_backend(name: str, model: str | None, **kwargs: Any) -> ModelBackend:
    factory = BACKENDS.get(name)
    backend: ModelBackend = factory(model, **kwargs)
    return backend


__all__ = ["BACKENDS", "CachingBackend", "create_backend"]
