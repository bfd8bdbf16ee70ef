"""`--protocol sft`: fine-tune on each task's train split (formatted by the task's own prompt),
then score the tuned checkpoint on its test split; see harness.sft.runner."""

from __future__ import annotations

from harness.sft.protocol import SFTProtocol, is_sft, scoring_protocol

# Heavy names (trainers, torch) load lazily.
_EXPORTS = {
    "SFTRecipe": "harness.sft.recipe",
    "LeakageGuard": "harness.sft.recipe",
    "load_sft_recipe": "harness.sft.recipe",
    "TrainExample": "harness.sft.examples",
    "EXAMPLE_BUILDERS": "harness.sft.examples",
    "build_examples": "harness.sft.examples",
    "find_leaks": "harness.sft.leakage",
    "run_sft": "harness.sft.runner",
    "response_loss": "harness.sft.train",
}

__all__ = ["SFTProtocol", "is_sft", "scoring_protocol", *_EXPORTS]


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'harness.sft' has no attribute {name!r}")
