"""`--protocol sft`: fine-tune on each task's train split (formatted by the task's own prompt),
then score the tuned checkpoint on its test split. The flow (flow.run_sft) is built from public
pieces of the harness (RunFolder, the backend stack, planning, execution) and trainers' own
IFT stage."""

from __future__ import annotations

from harness.registry import lazy_exports

# Heavy names (trl, torch) load lazily.
_EXPORTS = {
    "SFTRecipe": "trainers.task_sft.recipe",
    "LeakageGuard": "trainers.task_sft.recipe",
    "load_sft_recipe": "trainers.task_sft.recipe",
    "TrainExample": "trainers.task_sft.examples",
    "EXAMPLE_BUILDERS": "trainers.task_sft.examples",
    "build_examples": "trainers.task_sft.examples",
    "find_leaks": "trainers.task_sft.leakage",
    "run_sft": "trainers.task_sft.flow",
    "response_loss": "trainers.task_sft.train",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_exports('trainers.task_sft', _EXPORTS)
