"""Training stages, one registered runner per kind: cp, ift, dpo, kto, reward."""

from __future__ import annotations

from collections.abc import Callable

from harness.registry import Registry
from trainers.stages.common import StageInput, StageResult

StageRunner = Callable[[StageInput], StageResult]
STAGES: Registry[StageRunner] = Registry("stage kind")
STAGES.add_lazy("cp", "trainers.stages.sft:run_cp")
STAGES.add_lazy("ift", "trainers.stages.sft:run_ift")
STAGES.add_lazy("dpo", "trainers.stages.preference:run_dpo")
STAGES.add_lazy("kto", "trainers.stages.preference:run_kto")
STAGES.add_lazy("reward", "trainers.stages.preference:run_reward")

__all__ = ["STAGES", "StageInput", "StageResult", "StageRunner"]
