"""Task YAML schema and loading. YAML is parsed with yaml.safe_load (no tags, no code), and
validated by pydantic models that forbid unknown keys; errors name the file and the key."""

from __future__ import annotations

import copy
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from harness.errors import ConfigError
from harness.schema import StrictModel, config_error, read_yaml


class IdFilter(StrictModel):
    """Keep (include) or drop (exclude) samples whose metadata[key] is listed in a file under
    tasks/data/ (a JSON list, or an object whose keys are the ids)."""

    file: str
    key: str
    mode: Literal["include", "exclude"] = "include"


class LocalSource(StrictModel):
    """A file under the data directory (--data-dir)."""

    path: str = Field(description="Path relative to the data directory.")
    reader: Literal["jsonl", "json", "csv", "csv_header", "conll"] = Field(description="File format.")
    record: str = Field(description="Registered record adapter turning a raw record into a Sample.")
    options: dict[str, Any] = Field(default_factory=dict, description="Adapter options.")
    ids: IdFilter | None = None


class HubSource(StrictModel):
    """A Hugging Face dataset, loaded with `datasets.load_dataset` at a pinned revision."""

    path: str = Field(description="Dataset repository id (or a local folder, for tests).")
    name: str | None = Field(default=None, description="Dataset config name.")
    revision: str = Field(description="Commit to pin; results record it.")
    split: str = Field(description="Split name on the hub.")
    record: str = Field(description="Registered record adapter.")
    options: dict[str, Any] = Field(default_factory=dict, description="Adapter options.")
    ids: IdFilter | None = None


_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_BLOB = re.compile(r"[0-9a-f]{40}")


class UrlSource(StrictModel):
    """A file at a fixed URL (e.g. upstream's HealthBench files, which are not on the hub), pinned
    by its checksum: downloaded once into the data cache and verified before every use
    (harness.data.remote), then read like a local file."""

    url: str = Field(description="http(s) URL of the file.")
    sha256: str | None = Field(
        description="SHA-256 of the file (64 hex digits). Required: `null` says no checksum is published; "
        "then `git_blob` pins the file, or it is read only with an explicit opt-in "
        "(MEDLLM_HARNESS_ALLOW_UNPINNED=1), with a warning giving the sha256 it had.",
    )
    git_blob: str | None = Field(
        default=None, description="Git blob id of the file (SHA-1 of 'blob SIZE\\0' + content, 40 hex digits), "
        "as a repository tree shows it: a pin where only that is known.",
    )
    bytes: int | None = Field(default=None, ge=0, description="Size in bytes, checked as well.")
    reader: Literal["jsonl", "json", "csv", "csv_header", "conll"] = Field(description="File format.")
    record: str = Field(description="Registered record adapter turning a raw record into a Sample.")
    options: dict[str, Any] = Field(default_factory=dict, description="Adapter options.")
    ids: IdFilter | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.strip("/"):
            raise ValueError("expected an http(s) URL of a file")
        return value

    @field_validator("sha256", "git_blob", mode="before")
    @classmethod
    def _hex_digest(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        pattern, digits = (_SHA256, 64) if info.field_name == "sha256" else (_GIT_BLOB, 40)
        if not pattern.fullmatch(value.strip().lower()):
            raise ValueError(f"expected {digits} hex digits")
        return value.strip().lower()

    @property
    def pinned(self) -> bool:
        """Whether a checksum (sha256 or git blob id) pins the file."""
        return self.sha256 is not None or self.git_blob is not None


class SplitSources(StrictModel):
    local: LocalSource | None = None
    hub: HubSource | None = None
    url: UrlSource | None = None
    bundled: str | None = Field(
        default=None, description="File under tasks/samples/ with normalised samples."
    )


class FewshotSpec(StrictModel):
    split: str = Field(description="Split the exemplars come from; never the eval split.")
    sampler: Literal["random", "first_n"] = "random"
    seed: int = 1234


class ProtocolSpec(StrictModel):
    """Protocol options; which keys apply depends on the protocol."""

    max_tokens: int = Field(default=32, ge=1, description="Generation budget per request.")
    instruction: str | None = Field(default=None, description="Appended to the prompt (generative protocols).")
    system: str | None = Field(default=None, description="System message for chat prompts.")
    k: int = Field(default=5, ge=1, description="Sampled chains per question (sc).")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature (sc defaults to 0.7).")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    extractor: str | None = Field(
        default=None, description="Registered answer extractor (generate: choice; cot/sc/voc: last_answer)."
    )
    max_turns: int = Field(
        default=5, ge=1, description="interactive: doctor turns (questions, unparseable turns) before a forced answer."
    )
    patient_threshold: float = Field(
        default=0.35, ge=-1.0, le=1.0,
        description="interactive, retrieval patient: least cosine similarity of a fact to the question to reveal it.",
    )
    patient_top_k: int = Field(default=3, ge=1, description="interactive, retrieval patient: most facts per reply.")


class TaskSpec(StrictModel):
    task: str = Field(description="Task id, unique across tasks/.")
    version: int = Field(ge=0, description="Bump when the prompt or the scoring changes.")
    description: str = ""
    group: str | None = Field(default=None, description="Group reported as a micro average.")
    language: str = Field(default="en", description="Language of the references (metrics tokenise by it: en, zh).")
    format: str = Field(description="Registered prompt format.")
    eval_split: str = Field(description="Split that is scored.")
    splits: dict[str, SplitSources] = Field(description="Data sources per split name.")
    fewshot: FewshotSpec | None = None
    protocols: dict[str, ProtocolSpec] = Field(description="Protocols this task supports.")
    default_protocol: str
    metrics: list[str] = Field(min_length=1, description="Registered metric names.")
    format_options: dict[str, Any] = Field(default_factory=dict)

    source_file: str = Field(default="", exclude=True)

    def protocol(self, name: str | None) -> tuple[str, ProtocolSpec]:
        chosen = name or self.default_protocol
        base, at, k = chosen.partition("@")
        if at and base in self.protocols:  # sc@k: the task's sc options with k chains
            if not k.isdigit() or int(k) < 1:
                raise ConfigError(f"bad protocol {chosen!r}: expected NAME@K with K >= 1")
            return base, self.protocols[base].model_copy(update={"k": int(k)})
        if chosen not in self.protocols:
            raise ConfigError(
                f"task {self.task!r} has no protocol {chosen!r} "
                f"(it supports: {', '.join(sorted(self.protocols))})"
            )
        return chosen, self.protocols[chosen]


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_task_file(path: Path) -> list[TaskSpec]:
    """Parse one task YAML: either a single task, or a family with `defaults:` and `tasks:`."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError("a task file must be a mapping", file=str(path))
    if "tasks" in raw:
        unknown = set(raw) - {"family", "defaults", "tasks"}
        if unknown:
            raise ConfigError(f"unknown top-level keys {sorted(unknown)}", file=str(path))
        entries = [
            _deep_merge(raw.get("defaults") or {}, entry) for entry in raw["tasks"] or []
        ]
    else:
        entries = [raw]
    specs = []
    for i, entry in enumerate(entries):
        try:
            spec = TaskSpec.model_validate({**entry, "source_file": str(path)})
        except ValidationError as err:
            prefix = f"tasks[{i}]." if "tasks" in raw else ""
            name = entry.get("task", "?") if isinstance(entry, dict) else "?"
            raise config_error(err, file=str(path), key_prefix=prefix, context=f"task {name!r}: ") from None
        _check_references(spec, path)
        specs.append(spec)
    return specs


def _check_references(spec: TaskSpec, path: Path) -> None:
    if spec.eval_split not in spec.splits:
        raise ConfigError(
            f"task {spec.task!r}: eval_split {spec.eval_split!r} is not in splits", file=str(path),
            key="eval_split",
        )
    if spec.fewshot is not None:
        if spec.fewshot.split == spec.eval_split:
            raise ConfigError(
                f"task {spec.task!r}: few-shot exemplars must not come from the eval split",
                file=str(path), key="fewshot.split",
            )
        if spec.fewshot.split not in spec.splits:
            raise ConfigError(
                f"task {spec.task!r}: fewshot split {spec.fewshot.split!r} is not in splits",
                file=str(path), key="fewshot.split",
            )
    if spec.default_protocol not in spec.protocols:
        raise ConfigError(
            f"task {spec.task!r}: default_protocol {spec.default_protocol!r} is not in protocols",
            file=str(path), key="default_protocol",
        )
