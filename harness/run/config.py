"""RunConfig: everything that defines a run, validated; unknown keys rejected."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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


class GraderPromptFile(BaseModel):
    """A rubric grader prompt, by contents (so a resumed run refuses an edited prompt)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="File name or path it was read from (.yaml: ours; other: upstream-style text).")
    text: str = Field(description="The file's text.")


class RubricOptions(BaseModel):
    """Rubric-graded tasks (the `rubric` family, e.g. HealthBench): how the grader works."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grader_prompt: GraderPromptFile | None = Field(
        default=None, description="Grader prompt; None = the built-in tasks/prompts/rubric_grader.yaml."
    )
    partial: bool = Field(
        default=False, description="Score an example with ungraded items on its graded ones (else unscored)."
    )
    grader_temperature: float = Field(default=0.0, ge=0.0, description="Grader sampling temperature.")
    grader_max_tokens: int | None = Field(default=None, ge=1, description="Grader reply limit; None = the prompt's.")
    structured: bool = Field(default=False, description="Ask the grader's server to enforce the reply's JSON "
                             "schema (structured output; openai-backend graders only).")


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
    extractor: str | None = Field(
        default=None, description="Answer extractor of every generative MCQA task, instead of its protocol's "
        "`extractor:` (e.g. 'model': the 'extractor' auxiliary model decides where the rule is unsure).",
    )
    num_fewshot: int = Field(default=0, ge=0, description="Few-shot exemplars per prompt.")
    seed: int = Field(default=1234, description="Seeds few-shot selection and sampling.")
    limit: int | None = Field(default=None, ge=1, description="Score only the first N samples.")
    data_source: Literal["auto", "bundled", "local", "hub"] = Field(
        default="auto", description="auto: the suite's choice, else local with --data-dir, else hub."
    )
    data_dir: Path | None = Field(default=None, description="Folder with the local data files.")
    output: Path = Field(description="Run folder (run.json, samples.jsonl).")
    cache: Path | None = Field(default=None, description="SQLite request cache; None disables. Not set: the "
                               "Runner uses the user's request cache for a model it creates, as `harness run` does.")
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
        "retrieval patient), 'turn_judge' (pqa tasks: an LLM labels turns asking/advising), 'grader' (rubric "
        "tasks; a jury adds 'grader_2', 'grader_3', ... in order), 'extractor' (--extractor model).",
    )
    rubric: RubricOptions | None = Field(
        default=None, description="Rubric-graded tasks: grader prompt, partial rubrics; None = the defaults."
    )
    sft_recipe: dict[str, Any] | None = Field(
        default=None,
        description="--protocol sft: the fine-tuning recipe's contents (trainers.task_sft.SFTRecipe); None = the "
        "default recipe. Contents, not a path, so a resumed run refuses an edited recipe.",
    )
    dedup: bool = Field(
        default=False, description="Score each exact duplicate record of a data file once (default: score both, "
        "warn and record the duplicate lines in the task's record).",
    )
    allow_unpinned: bool = Field(
        default=False, description="Read a `url` data source that has no pinned checksum (warns with the sha256 it "
        "read, which the record keeps); default: refuse, unless MEDLLM_HARNESS_ALLOW_UNPINNED=1.",
    )
    truncate: Literal["left", "middle"] | None = Field(
        default=None, description="A prompt longer than the model's context: None = leave the sample unscored "
        "('prompt exceeds context'); 'left' drops its start, 'middle' its middle (counted per sample).",
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

    @model_validator(mode="after")
    def _jury_roles(self) -> RunConfig:
        """A jury's graders are grader, grader_2, ..., grader_N: none missing in between."""
        if not any(role.startswith("grader") for role in self.aux_models):
            return self
        from harness.protocols.rubric import grader_role, grader_roles

        roles = grader_roles(self.aux_models)
        expected = tuple(grader_role(k) for k in range(len(roles)))
        if roles != expected:
            missing = sorted(set(expected) - set(roles))
            raise ValueError(f"aux_models: a jury's graders must be {', '.join(expected)}; got {', '.join(roles)} "
                             f"({', '.join(missing)} missing)")
        return self

    @field_validator("data_dir", "output", "cache", "lmeval_include")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with the interrupted one."""
        # allow_unpinned is a permission: the sha256 of what was read is in the task's record
        exclude = {"output", "cache", "data_dir", "max_attempts", "allow_unpinned"}
        if not self.aux_models:  # keeps the identity (and default run folder) of earlier runs
            exclude.add("aux_models")
        if self.extractor is None:
            exclude.add("extractor")
        if self.sft_recipe is None:
            exclude.add("sft_recipe")
        for name in ("dedup", "truncate"):  # only when set, so earlier runs keep their identity
            if not getattr(self, name):
                exclude.add(name)
        if self.rubric is None:
            exclude.add("rubric")
        return self.model_dump(mode="json", exclude=exclude)
