"""Training for medical LLMs: data processing (trainers.data), CP / IFT / HA stages on
transformers + peft + trl (trainers.stages), paradigm recipes (trainers/recipes/*.yaml), and
`run_recipe`, which scores every stage's checkpoint with the harness."""

from __future__ import annotations

from harness.registry import lazy_exports

# Public names load lazily: `import trainers` stays light, torch and trl load on use.
_EXPORTS = {
    "Recipe": "trainers.recipe",
    "StageSpec": "trainers.recipe",
    "EvalSpec": "trainers.recipe",
    "load_recipe": "trainers.recipe",
    "TrainOptions": "trainers.pipeline",
    "run_recipe": "trainers.pipeline",
    "format_report": "trainers.pipeline",
    "MergeSpec": "trainers.merge",
    "merge_adapter": "trainers.merge",
    "merge_checkpoints": "trainers.merge",
    "build_config": "trainers.configs",
    "hardware_defaults": "trainers.configs",
    "CPConfig": "trainers.configs",
    "IFTConfig": "trainers.configs",
    "DPOStageConfig": "trainers.configs",
    "KTOStageConfig": "trainers.configs",
    "RewardStageConfig": "trainers.configs",
    "STAGES": "trainers.stages",
    "StageInput": "trainers.stages",
    "StageResult": "trainers.stages",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_exports('trainers', _EXPORTS)
