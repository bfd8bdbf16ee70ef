from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.types import (
    GenerationRequest,
    GenerationResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    ModelBackend,
    RequestKind,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _h(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class ScriptedBackend(ModelBackend):
    """A deterministic stand-in for unit tests of the runner (never for end-to-end tests):
    log-likelihoods are a hash of the request; generations come from a script function."""

    name = "scripted"

    def __init__(self, reply: Any = None, capabilities: Sequence[RequestKind] | None = None):
        self.capabilities = frozenset(capabilities or (RequestKind.LOGLIKELIHOOD, RequestKind.GENERATE))
        self.reply = reply or (lambda req: "The answer is (B).")
        self.loglik_calls: list[LoglikelihoodRequest] = []
        self.generate_calls: list[GenerationRequest] = []

    def fingerprint(self) -> str:
        return "scripted-v1"

    def info(self) -> dict[str, Any]:
        return {"backend": "scripted"}

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        self.loglik_calls.extend(requests)
        return [LoglikelihoodResult(-_h(r.context + "|" + r.continuation) * 5, False, 1) for r in requests]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.generate_calls.extend(requests)
        return [GenerationResult(self.reply(r), 10, 5, "stop") for r in requests]


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from harness.backends.models import default_model_dir as resolve

    return resolve()


@pytest.fixture(scope="session")
def hf_backend(default_model_dir: Path) -> Any:
    from harness.backends.hf import HFBackend

    return HFBackend(str(default_model_dir), batch_size=4)
