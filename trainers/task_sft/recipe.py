"""The fine-tuning recipe of `--protocol sft` (`--sft-recipe FILE`): YAML, validated by pydantic
models that forbid unknown keys; errors name the file and the key. The defaults are the default
recipe: LoRA on a small step budget that a CPU finishes in minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from harness.errors import ConfigError
from harness.schema import StrictModel, config_error, read_yaml
from harness.types import stable_hash


class LeakageGuard(StrictModel):
    """Is a test item in the train data? Checked before any training, against the task's whole
    scored split, with the trainers' two overlap tests (Apollo's 64-character substrings and
    lm-eval's 13-word n-grams) on the task's prompt text."""

    chars: int = Field(default=64, ge=8, description="Characters of an overlapping substring (Apollo).")
    ngram: int = Field(default=13, ge=3, description="Words of an overlapping n-gram (lm-eval).")
    min_coverage: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="A test item is in the train data when one train item holds this share of its "
        "character windows or of its n-grams, or when its normalised prompt text is identical. A share, "
        "not a count: MedQA vignettes share stock phrases ('oxygen saturation is 98% on room air') that "
        "any absolute window count of one would flag.")
    on_leak: Literal["refuse", "drop"] = Field(
        default="refuse", description="refuse: stop before training, naming the items; drop: train "
        "without the train items that hold a test item (counted in the record).")


class SFTRecipe(StrictModel):
    """How each task's train split fine-tunes the model before its test split is scored."""

    recipe: str = Field(default="sft-lora-small", description="Recipe name, shown in records.")
    method: Literal["lora", "full", "qlora"] = Field(
        default="lora", description="lora (adapters merged for scoring), full (all weights), or qlora "
        "(4-bit base; a CUDA GPU with bitsandbytes).")
    max_steps: int = Field(default=30, ge=1, description="Optimizer steps per task.")
    learning_rate: float = Field(default=2e-4, gt=0.0, description="Peak learning rate (LoRA needs ~10x full's).")
    batch_size: int = Field(default=4, ge=1, description="Examples per optimizer step (per device).")
    max_train_examples: int | None = Field(
        default=512, ge=1, description="Train on at most this many examples, drawn with `seed` (None = all).")
    max_length: int = Field(default=1024, ge=16, description="Longer examples are dropped (and counted), "
                            "never cut: a cut example would lose its answer.")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA scaling numerator.")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    seed: int = Field(default=1234, description="Seeds the example draw, the adapter init and the data order.")
    loss_examples: int = Field(default=16, ge=1, description="Held-in train examples whose loss is measured "
                               "with the base and the tuned model (the record's loss before / after).")
    leakage: LeakageGuard = Field(default_factory=LeakageGuard)
    train: dict[str, Any] = Field(default_factory=dict, description="Any other field of trl's SFTConfig "
                                  "(checked by trainers.configs), e.g. warmup_steps or save_steps.")

    source_file: str = Field(default="", exclude=True)

    def fingerprint(self) -> str:
        return stable_hash(self.model_dump(mode="json"))


# trl fields the recipe sets from its own top-level keys
TOP_LEVEL_TRAIN_KEYS = frozenset({"method", "max_steps", "learning_rate", "per_device_train_batch_size", "max_length",
                                  "lora_r", "lora_alpha", "lora_dropout", "seed", "output_dir"})


# Recipes shipped with the package; `--sft-recipe NAME.yaml` finds them when no such file is here.
SHIPPED_RECIPES = Path(__file__).parent / "recipes"


def load_sft_recipe(path: str | Path) -> SFTRecipe:
    """Parse and validate a recipe file (its `train:` keys against trl's SFTConfig too)."""
    path = Path(path).expanduser()
    shipped = SHIPPED_RECIPES / path.name
    if not path.is_file() and path.parent == Path(".") and shipped.is_file():
        path = shipped  # a recipe shipped with the package (sft_small.yaml, sft_ner.yaml)
    if not path.is_file():
        raise ConfigError("SFT recipe file not found (shipped: "
                          f"{', '.join(sorted(p.name for p in SHIPPED_RECIPES.glob('*.yaml')))})", file=str(path))
    raw = read_yaml(path)
    return recipe_from_data(raw or {}, str(path))


def recipe_from_data(raw: Any, source: str = "") -> SFTRecipe:
    if not isinstance(raw, dict):
        raise ConfigError("an SFT recipe must be a mapping", file=source or None)
    try:
        recipe = SFTRecipe.model_validate({**raw, "source_file": source})
    except ValidationError as err:
        raise config_error(err, file=source or None) from None
    taken = sorted(set(recipe.train) & TOP_LEVEL_TRAIN_KEYS)
    if taken:
        raise ConfigError(f"set {', '.join(taken)} at the top level of the recipe, not under train:",
                          file=source or None, key=f"train.{taken[0]}")
    if recipe.train:
        from trainers.configs import validate_overrides

        validate_overrides("ift", recipe.train, file=source or None, key="train")
    return recipe
