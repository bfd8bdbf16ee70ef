"""medllm-harness: a unified evaluation harness for medical LLMs.

One folder per pipeline stage, each importing only those below it: cli (the composition root),
run (plan -> execute -> aggregate; the run folder), protocols (one module per task family), data
and scoring, backends; registry, schema, types and errors on the ground floor. The README's
Layout section maps them."""

from __future__ import annotations

from harness.registry import lazy_exports

__version__ = "0.1.0"

# Public names load lazily so `import harness` (and `harness --help`) stays fast.
_EXPORTS = {
    "RunConfig": "harness.run.config",
    "Runner": "harness.run.runner",
    "RunRecord": "harness.run.records",
    "read_record": "harness.run.records",
    "load_catalog": "harness.run.catalog",
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
    "EXTRACTORS": "harness.protocols.extract",
    "PROTOCOLS": "harness.protocols.base",
    "METRICS": "harness.scoring.metrics",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__ = lazy_exports('harness', _EXPORTS)
