"""medllm-harness: a unified evaluation harness for medical LLMs."""

from __future__ import annotations

__version__ = "0.1.0"

# Public names load lazily so `import harness` (and `harness --help`) stays fast.
_EXPORTS = {
    "RunConfig": "harness.config",
    "Runner": "harness.runner",
    "RunRecord": "harness.records",
    "read_record": "harness.records",
    "load_catalog": "harness.catalog",
    "HarnessError": "harness.errors",
    "ConfigError": "harness.errors",
    "Sample": "harness.types",
    "Score": "harness.types",
    "Message": "harness.types",
    "GenerationConfig": "harness.types",
    "LoglikelihoodRequest": "harness.types",
    "GenerationRequest": "harness.types",
    "ModelBackend": "harness.types",
    "create_backend": "harness.backends",
    "EXTRACTORS": "harness.extract",
    "PROTOCOLS": "harness.protocols",
    "METRICS": "harness.metrics",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
