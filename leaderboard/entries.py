"""Values the results store holds and returns, and the keys that identify them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.run.records import RunRecord
from harness.types import stable_hash


class GenericResult(BaseModel):
    """A result that is not a task metric of a run, e.g. one judge dimension for one model.
    `fingerprint` decides comparability (judge model + prompt + parser + judged outputs):
    results whose fingerprints differ are shown apart, never averaged together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description='What produced it, e.g. "judge_pointwise" or "bradley_terry".')
    name: str = Field(description="The dimension or rating name, e.g. \"safe\" or \"rating\".")
    model_name: str
    model_fingerprint: str
    fingerprint: str = Field(description="Comparability key of the producing protocol.")
    value: float | None
    ci: tuple[float | None, float | None] = (None, None)
    n: int = 0
    n_unscored: int = 0
    source: str | None = Field(default=None, description="Where it came from (a file or run folder).")
    details: dict[str, Any] = Field(default_factory=dict, description='e.g. {"scale": [1, 5]}.')
    created_at: str = ""

    @property
    def key(self) -> str:
        return stable_hash([self.kind, self.name, self.model_fingerprint, self.fingerprint])

    def content(self) -> str:
        return stable_hash(self.model_dump(mode="json", exclude={"created_at", "source"}))


class ResultsFile(BaseModel):
    """A JSON file of generic results: {"results": [...]} (what `leaderboard import` reads
    besides run folders)."""

    model_config = ConfigDict(extra="forbid")

    results: list[GenericResult]


@dataclass(frozen=True)
class StoredRun:
    run_key: str
    run_id: str
    model_name: str
    model_backend: str
    model_fingerprint: str
    created_at: str
    finished_at: str | None
    harness_version: str
    git_commit: str | None
    run_path: str | None
    imported_at: str


@dataclass(frozen=True)
class StoredMetric:
    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_scored: int
    n_unscored: int
    ci_method: str
    higher_is_better: bool | None = None  # None: a record written before run.json stored it


@dataclass(frozen=True)
class StoredTaskResult:
    result_key: str
    run: StoredRun
    task_key: str
    task: str
    task_version: int
    protocol: str
    n_shot: int
    task_fingerprint: str
    main_metric: str
    data_source: str
    split: str
    language: str
    n_samples: int
    metrics: dict[str, StoredMetric] = field(default_factory=dict)
    # the task record's `extra` (grader prompt, aux model fingerprints, ...), read from the stored run
    extra: dict[str, Any] = field(default_factory=dict)
    # USD for the task's recorded tokens (cost.json or `import --price-table`); None: unpriced
    cost_usd: float | None = None
    # how cost_usd was computed (roles, tokens, price table); None: nothing was priced
    cost: dict[str, Any] | None = None


@dataclass(frozen=True)
class ImportOutcome:
    path: str
    run_key: str
    run_id: str
    model_name: str
    added: bool
    n_tasks: int
    n_costs: int = 0  # task results whose cost was stored by this import


def run_key(record: RunRecord) -> str:
    return stable_hash([record.run_id, record.model.fingerprint])


def task_result_key(rkey: str, task_key: str, task_fingerprint: str) -> str:
    return stable_hash([rkey, task_key, task_fingerprint])


def content_hash(record: RunRecord) -> str:
    # What the numbers are, not when the run.json was last rewritten.
    tasks = {k: [t.task_fingerprint, t.metrics] for k, t in record.tasks.items()}
    return stable_hash([record.model.fingerprint, tasks])


def run_from_row(r: Any) -> StoredRun:
    return StoredRun(
        run_key=r["run_key"], run_id=r["run_id"], model_name=r["model_name"], model_backend=r["model_backend"],
        model_fingerprint=r["model_fingerprint"], created_at=r["created_at"], finished_at=r["finished_at"],
        harness_version=r["harness_version"], git_commit=r["git_commit"], run_path=r["run_path"],
        imported_at=r["imported_at"],
    )


def generic_from_row(r: Any) -> GenericResult:
    return GenericResult(
        kind=r["kind"], name=r["name"], model_name=r["model_name"], model_fingerprint=r["model_fingerprint"],
        fingerprint=r["fingerprint"], value=r["value"], ci=(r["ci_low"], r["ci_high"]), n=r["n"],
        n_unscored=r["n_unscored"], source=r["source"], details=json.loads(r["details"] or "{}"),
        created_at=r["created_at"],
    )
