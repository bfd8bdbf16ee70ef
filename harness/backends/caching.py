"""A request cache wrapped around any backend.

Keyed by sha256(model fingerprint + canonical request), and for sampled generation also by the
backend's `sampler` (its info): a seed names a sample only for one way of drawing tokens, so a
new sampler gets new samples while greedy and log-likelihood entries stay. SQLite in WAL mode so
parallel runs can share one file. Each batch commits before it returns, so a killed run loses at most the
batch in flight.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from harness.types import (
    GenerationOutcome,
    GenerationRequest,
    GenerationResult,
    LoglikelihoodOutcome,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ModelBackend,
    RequestFailure,
    stable_hash,
)

R = TypeVar("R")
Q = TypeVar("Q", LoglikelihoodRequest, GenerationRequest)


class CachingBackend(ModelBackend):
    def __init__(self, inner: ModelBackend, path: Path):
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, kind TEXT NOT NULL, "
            "value TEXT NOT NULL)"
        )
        self._db.commit()
        self.hits = 0
        self.misses = 0
        self._model_fp = inner.fingerprint()
        self._sampler = str(inner.info().get("sampler") or "")

    def fingerprint(self) -> str:
        return self._model_fp

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def usage(self) -> dict[str, int]:
        return self.inner.usage()

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}

    def close(self) -> None:
        self._db.close()

    def _key(self, request: LoglikelihoodRequest | GenerationRequest) -> str:
        if self._sampler and isinstance(request, GenerationRequest) and request.config.temperature > 0:
            return stable_hash({"model": self._model_fp, "sampler": self._sampler, "request": request.key()})
        return stable_hash({"model": self._model_fp, "request": request.key()})

    def _cached(
        self, requests: Sequence[Q], compute: Callable[[list[Q]], list[R]],
        decode: Callable[[dict[str, Any]], R], kind: str,
    ) -> list[R]:
        """Serve cached results; compute the rest through `compute` and store them."""
        keys = [self._key(r) for r in requests]
        found: dict[str, R] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, value FROM responses WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, value in rows:
                found[key] = decode(json.loads(value))
        todo: dict[str, Q] = {}
        for key, req in zip(keys, requests, strict=True):
            if key not in found and key not in todo:
                todo[key] = req
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = compute(list(todo.values()))
            # failures are returned to the caller but never cached
            good = [(k, v) for k, v in zip(todo, fresh, strict=True) if not isinstance(v, RequestFailure)]
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO responses (key, kind, value) VALUES (?, ?, ?)",
                    [(k, kind, json.dumps(asdict(v))) for k, v in good],  # type: ignore[call-overload]
                )
            found.update(zip(todo, fresh, strict=True))
        return [found[k] for k in keys]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodOutcome]:
        return self._cached(requests, self.inner.loglikelihood,
                            lambda d: LoglikelihoodResult(**d), "loglikelihood")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutcome]:
        return self._cached(requests, self.inner.generate,
                            lambda d: GenerationResult(**d), "generate")
