"""Recipes: a YAML file naming a base model, the stages to run in order (each with its data,
filters and trl settings) and how every stage's checkpoint is scored. Validated by pydantic
models that forbid unknown keys; errors name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from harness.errors import ConfigError
from harness.schema import StrictModel, config_error, read_yaml
from trainers.data.config import DataSourceSpec, FilterSpec
from trainers.merge import MergeSpec

RECIPES_DIR = Path(__file__).with_name("recipes")
StageKind = Literal["cp", "ift", "dpo", "kto", "reward"]


class EvalSpec(StrictModel):
    """How each checkpoint is scored (a harness run) and compared with the one before it
    (paired tests, as `harness compare`)."""

    suite: str | None = Field(default="quick", description="Harness suite; None with `tasks` only.")
    tasks: list[str] = Field(default_factory=list, description="Task ids, in addition to the suite.")
    limit: int | None = Field(default=20, ge=1, description="Samples per task (None = all).")
    data_source: Literal["auto", "bundled", "local", "hub"] = "auto"
    protocol: str | None = Field(default=None, description="Protocol for every task; None = each task's default.")
    batch_size: int = Field(default=8, ge=1)
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0, description="Significance level of the comparisons.")
    max_drop: float = Field(default=0.0, ge=0.0, description="Tolerated absolute drop of a task's main metric.")
    seed: int = Field(default=0, description="Seed of the permutation / bootstrap tests.")
    baseline: bool = Field(default=True, description="Score the base model first, so stage 1 has a comparison.")

    @model_validator(mode="after")
    def _something(self) -> EvalSpec:
        if self.suite is None and not self.tasks:
            raise ValueError("eval needs a suite or tasks")
        return self


class StageSpec(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Folder name of the stage's outputs.")
    kind: StageKind = Field(description="cp, ift, dpo, kto or reward.")
    data: list[DataSourceSpec] = Field(min_length=1, description="Inputs, read in order.")
    filters: FilterSpec = Field(default_factory=FilterSpec)
    train: dict[str, Any] = Field(default_factory=dict,
                                  description="Fields of the stage's trl config (trainers.configs).")
    merge: MergeSpec | None = Field(default=None, description="Merge the result with the stage's start checkpoint.")
    evaluate: bool = Field(default=True, description="Score the stage's checkpoint (not for reward models).")
    keep_checkpoints: bool = Field(default=False,
                                   description="Keep the resumable trainer checkpoints once the stage is done.")

    @model_validator(mode="after")
    def _reward(self) -> StageSpec:
        if self.kind == "reward" and self.merge is not None:
            raise ValueError("a reward model has no causal-LM base to merge with")
        return self


class Recipe(StrictModel):
    recipe: str = Field(description="Recipe name.")
    version: int = Field(default=1, ge=0, description="Bump when the recipe's meaning changes.")
    description: str = ""
    base_model: str = Field(default="default", description="Local folder, hub id, or default (SmolLM2-135M).")
    data_dir: str | None = Field(default=None, description="Data folder (relative paths: to the working dir).")
    output: str | None = Field(default=None, description="Output folder; default runs/train/<recipe>.")
    seed: int = 1234
    eval: EvalSpec | None = Field(default_factory=EvalSpec, description="None: no scoring.")
    stages: list[StageSpec] = Field(min_length=1)

    source_file: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> Recipe:
        names = [s.name for s in self.stages]
        dup = {n for n in names if names.count(n) > 1}
        if dup or "base" in names:
            raise ValueError(f"stage names must be unique and not 'base' (got {sorted(dup) or ['base']})")
        return self


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A file path, or the name of a shipped recipe (ift, cp-ift, ift-ha, cp-ift-ha)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise ConfigError(f"recipe not found: {name_or_path} (a YAML file, or a shipped recipe: {known})")


def load_recipe(name_or_path: str | Path, *, check_train: bool = True) -> Recipe:
    """Parse and validate a recipe. With `check_train`, every stage's `train:` keys are also
    checked against its trl config (imports trl)."""
    path = resolve_recipe_path(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError("a recipe must be a mapping", file=str(path))
    try:
        recipe = Recipe.model_validate({**raw, "source_file": str(path)})
    except ValidationError as err:
        raise config_error(err, file=str(path)) from None
    if check_train:
        from trainers.configs import validate_overrides

        for i, stage in enumerate(recipe.stages):
            validate_overrides(stage.kind, stage.train, file=str(path), key=f"stages.{i}.train")
    return recipe
