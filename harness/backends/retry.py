"""Bounded retries around any backend.

A backend returns RequestFailure in place of a result it could not get. This wrapper sends
the retryable ones again, with exponential backoff and full jitter, waiting at least the
server's Retry-After; after `max_attempts` the failure stays, and the runner records the
sample as unscored with the reason. Nothing is fabricated.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from harness.types import (
    GenerationOutcome,
    GenerationRequest,
    LoglikelihoodOutcome,
    LoglikelihoodRequest,
    ModelBackend,
    RequestFailure,
)

log = logging.getLogger(__name__)

Q = TypeVar("Q", LoglikelihoodRequest, GenerationRequest)
Out = TypeVar("Out")


class RetryingBackend(ModelBackend):
    def __init__(
        self, inner: ModelBackend, *, max_attempts: int = 4, base_delay: float = 1.0,
        max_delay: float = 60.0, sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random(0)
        self.retries = 0
        self.gave_up = 0

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def usage(self) -> dict[str, int]:
        return self.inner.usage()

    def stats(self) -> dict[str, int]:
        return {"retries": self.retries, "failed_after_retries": self.gave_up}

    def delay(self, attempt: int, failures: Sequence[RequestFailure]) -> float:
        backoff = min(self.max_delay, self.base_delay * 2 ** attempt)
        wait = self._rng.uniform(0, backoff)  # full jitter
        hinted = [f.retry_after for f in failures if f.retry_after is not None]
        return min(self.max_delay, max([wait, *hinted]))

    def _run(self, requests: Sequence[Q], call: Callable[[list[Q]], list[Out]]) -> list[Out]:
        outcomes: list[Out] = call(list(requests))
        for attempt in range(1, self.max_attempts):
            todo = [i for i, o in enumerate(outcomes) if isinstance(o, RequestFailure) and o.retryable]
            if not todo:
                break
            failures = [o for o in outcomes if isinstance(o, RequestFailure) and o.retryable]
            wait = self.delay(attempt - 1, failures)
            log.warning("retrying %d of %d requests (attempt %d/%d) in %.1f s: %s", len(todo),
                        len(outcomes), attempt + 1, self.max_attempts, wait, failures[0].reason)
            self._sleep(wait)
            self.retries += len(todo)
            again = call([requests[i] for i in todo])
            for i, o in zip(todo, again, strict=True):
                outcomes[i] = o
        self.gave_up += sum(isinstance(o, RequestFailure) for o in outcomes)
        return outcomes

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutcome]:
        return self._run(requests, self.inner.loglikelihood)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutcome]:
        return self._run(requests, self.inner.generate)
