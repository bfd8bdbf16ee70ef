"""RunConfig: everything that defines a run, validated; unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AuxModel(BaseModel):
    """An auxiliary model of a run (the simulated patient, a turn judge): not the model under test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(default="hf", description="Registered backend name.")
    model: str | None = Field(
        default=None, description="Local folder, HF id or server model; None = the embedded default."
    )
    model_args: dict[str, Any] = Field(
        default_factory=dict, description="Backend arguments; the openai backend takes the NAME of the key's env var."
    )


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        default=None, description="Local folder or HF hub id; None = the embedded default model."
    )
    backend: str = Field(default="hf", description="Registered backend name.")
    model_args: dict[str, Any] = Field(
        default_factory=dict, description="Backend arguments (dtype, device, revision, ...)."
    )
    batch_size: int = Field(default=8, ge=1, description="Requests per forward pass.")
    suite: str | None = Field(default=None, description="Suite name (tasks/suites/*.yaml).")
    tasks: tuple[str, ...] = Field(default=(), description="Task ids, in addition to the suite.")
    protocol: str | None = Field(default=None, description="Protocol; None = each task's default.")
    num_fewshot: int = Field(default=0, ge=0, description="Few-shot exemplars per prompt.")
    seed: int = Field(default=1234, description="Seeds few-shot selection and sampling.")
    limit: int | None = Field(default=None, ge=1, description="Score only the first N samples.")
    data_source: Literal["auto", "bundled", "local", "hub"] = Field(
        default="auto", description="auto: the suite's choice, else local with --data-dir, else hub."
    )
    data_dir: Path | None = Field(default=None, description="Folder with the local data files.")
    output: Path = Field(description="Run folder (run.json, samples.jsonl).")
    cache: Path | None = Field(default=None, description="SQLite request cache; None disables.")
    shard: tuple[int, int] | None = Field(
        default=None, description="(I, N): score only shard I of N of every task (0-based)."
    )
    max_attempts: int = Field(default=4, ge=1, description="Tries per request before it is unscored.")
    lmeval_include: Path | None = Field(
        default=None, description="Extra folder of lm-eval task YAMLs for lm_eval:NAME tasks."
    )
    task_dirs: tuple[Path, ...] = Field(
        default=(), description="Extra folders of task YAMLs (and suites/) beside the bundled ones."
    )
    aux_models: dict[str, AuxModel] = Field(
        default_factory=dict,
        description="Auxiliary models by role: 'patient' (interactive tasks: an LLM patient instead of the "
        "retrieval patient), 'turn_judge' (pqa tasks: an LLM labels turns asking/advising).",
    )
    sft_recipe: dict[str, Any] | None = Field(
        default=None,
        description="--protocol sft: the fine-tuning recipe's contents (trainers.task_sft.SFTRecipe); None = the "
        "default recipe. Contents, not a path, so a resumed run refuses an edited recipe.",
    )

    @field_validator("shard", mode="before")
    @classmethod
    def _parse_shard(cls, value: object) -> object:
        if isinstance(value, str):
            left, sep, right = value.partition("/")
            if not sep or not left.strip().isdigit() or not right.strip().isdigit():
                raise ValueError(f"expected I/N, e.g. 0/4, got {value!r}")
            value = (int(left), int(right))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            index, count = int(value[0]), int(value[1])
            if not 0 <= index < count:
                raise ValueError(f"shard index must be in 0..N-1, got {index}/{count}")
        return value

    @field_validator("data_dir", "output", "cache", "lmeval_include")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the interrupted one."""
        exclude = {"output", "cache", "data_dir", "max_attempts"}
        if not self.aux_models:  # keeps the identity (and default run folder) of earlier runs
            exclude.add("aux_models")
        if self.sft_recipe is None:
            exclude.add("sft_recipe")
        return self.model_dump(mode="json", exclude=exclude)
