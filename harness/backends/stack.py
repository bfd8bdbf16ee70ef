"""The backend stack every run puts around a model: bounded retries around the model, the
request cache around those. One place assembles it, and it closes what it opened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends.caching import CachingBackend
from harness.backends.retry import RetryingBackend
from harness.types import ModelBackend


@dataclass
class BackendStack:
    """model -> retries -> cache. `top` is what requests go to. `owned`: the stack opened the
    model, so closing the stack closes it too."""

    model: ModelBackend
    retrying: RetryingBackend
    cached: CachingBackend | None
    owned: bool

    @property
    def top(self) -> ModelBackend:
        return self.cached if self.cached is not None else self.retrying

    def cache_stats(self) -> dict[str, int]:
        return self.cached.stats() if self.cached is not None else {}

    def request_stats(self) -> dict[str, Any]:
        """Retries, failures and the model's token usage, as run.json records them."""
        return {**self.retrying.stats(), **self.model.usage()}

    def close(self) -> None:
        try:
            if self.cached is not None:
                self.cached.close()
        finally:
            if self.owned:
                self.model.close()

    def __enter__(self) -> BackendStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wrap(model: ModelBackend, *, max_attempts: int, base_delay: float = 1.0, cache: Path | None,
         owned: bool) -> BackendStack:
    """Put the stack around a model; on failure, a model the stack owns is closed."""
    try:
        retrying = RetryingBackend(model, max_attempts=max_attempts, base_delay=base_delay)
        cached = CachingBackend(retrying, cache) if cache is not None else None
    except BaseException:
        if owned:
            model.close()
        raise
    return BackendStack(model, retrying, cached, owned)


def open_stack(backend: str, model: str | None, *, batch_size: int, model_args: dict[str, Any],
               max_attempts: int, base_delay: float = 1.0, cache: Path | None) -> BackendStack:
    """Create a registered backend and put the stack around it (the stack owns it)."""
    from harness.backends import create_backend

    inner = create_backend(backend, model, batch_size=batch_size, **model_args)
    return wrap(inner, max_attempts=max_attempts, base_delay=base_delay, cache=cache, owned=True)
