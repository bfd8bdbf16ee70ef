"""Rankings: one row per model (model fingerprint), one column per task result that shares a
task fingerprint, and a macro average over the columns every row has. Per model and task key
the latest finished run counts.

Two results of one task whose task fingerprints differ (another prompt, data revision, shot
count or scorer) become two columns and are never averaged together; a column that some row
lacks is shown apart and left out of the average, so every row averages the same tasks.

Results of a model fine-tuned on the task's own train split (`--protocol sft`, protocol tag
`sft+...`) are another evaluation regime: their columns come after the zero-/few-shot ones and
have their own macro average ("accuracy (sft)"), never mixed with the zero-/few-shot average.

Every rubric-graded task cell and every judge result carries its grader's (judge's) measured
agreement with humans, from a stored calibration study of the same grader fingerprint and
prompt hash, or "not calibrated" (leaderboard.calibration); every task cell carries its cost in
USD where it was priced (None, shown "—", where not). Calibration studies are not columns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from harness.errors import HarnessError
from harness.protocols.sft import is_sft
from harness.scoring.metrics import METRICS
from harness.types import stable_hash
from leaderboard.calibration import (
    CALIBRATION,
    HUMAN_AGREEMENT,
    GraderIdentity,
    agreement_text,
    graders_agreement,
    graders_of_task,
    is_judge_result,
    study_for_judge,
)
from leaderboard.store import GenericResult, Store, StoredRun, StoredTaskResult

# The pointwise judge dimensions, in the order the radar chart draws them.
JUDGE_DIMENSIONS = ("doctor-like", "patient-friendly", "professional", "safe", "fluent", "proactive", "helpful")
JUDGE_POINTWISE = "judge_pointwise"
BRADLEY_TERRY = "bradley_terry"
_Z95 = 1.959963984540054


def protocol_tag(protocol: str, n_shot: int) -> str:
    """The tag printed next to every number: protocol (loglik, cot, sc@k, ...) and shots."""
    return f"{protocol} · {n_shot}-shot"


PROMPTED, FINETUNED = "prompted", "sft"


def regime(protocol: str) -> str:
    """"sft" for results of a model fine-tuned on the task's train split, else "prompted"
    (zero- and few-shot)."""
    return FINETUNED if is_sft(protocol) else PROMPTED


def average_key(metric: str, regime_name: str) -> str:
    """Key of a macro average: one per main metric and regime."""
    return metric if regime_name == PROMPTED else f"{metric} ({regime_name})"


def _recorded_direction(result: StoredTaskResult) -> bool | None:
    metric = result.metrics.get(result.main_metric)
    return metric.higher_is_better if metric is not None else None


def higher_is_better(metric: str, recorded: bool | None = None) -> bool:
    """The direction run.json recorded; for records written before it did, the registry's."""
    if recorded is not None:
        return recorded
    try:
        return bool(METRICS.get(metric).higher_is_better)
    except (HarnessError, ImportError, AttributeError):  # a metric this install does not know
        return True


@dataclass(frozen=True)
class Cell:
    """One task result of one model: the main metric with its CI and where it came from."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_scored: int
    n_unscored: int
    ci_method: str
    metric: str
    tag: str
    run_id: str
    run_key: str
    run_path: str | None
    task_version: int
    data_source: str
    # USD of the task's recorded tokens; None: unpriced (shown "—", never 0)
    cost_usd: float | None = None
    # rubric tasks: what the record says of the grader, and its measured agreement with humans
    # ("F1 0.72, κ 0.44 (healthbench_meta, n=120)" or "not calibrated"); None for other tasks
    graders: tuple[GraderIdentity, ...] = ()  # a jury has several
    grader_agreement: str | None = None
    grader_calibrated: bool = False  # every grader has a matching calibration study


@dataclass(frozen=True)
class TaskColumn:
    key: str
    task_key: str
    task: str
    protocol: str
    n_shot: int
    task_fingerprint: str
    main_metric: str
    higher_is_better: bool
    comparable: bool
    label: str

    @property
    def tag(self) -> str:
        return protocol_tag(self.protocol, self.n_shot)

    @property
    def regime(self) -> str:
        return regime(self.protocol)


@dataclass(frozen=True)
class Average:
    """Macro average of one metric over the comparable columns. Its CI treats tasks as
    independent and each task CI as normal (half-width / 1.96 = standard error): an
    approximation, labelled as such."""

    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_tasks: int
    tag: str
    ci_method: str = "normal approx. from task CIs"
    regime: str = PROMPTED


@dataclass(frozen=True)
class ExtraColumn:
    key: str
    kind: str
    name: str
    fingerprint: str
    label: str


@dataclass
class ModelRow:
    model_fingerprint: str
    model_name: str
    backend: str
    label: str = ""
    slug: str = ""
    cells: dict[str, Cell] = field(default_factory=dict)
    averages: dict[str, Average] = field(default_factory=dict)
    extras: dict[str, GenericResult] = field(default_factory=dict)
    # per judge result (extra column key): its judge's agreement with humans, or "not calibrated"
    judge_agreement: dict[str, str] = field(default_factory=dict)
    runs: list[StoredRun] = field(default_factory=list)

    def judge_dimensions(self) -> dict[str, GenericResult]:
        """The seven pointwise dimensions of one judge (the fingerprint covering most of them)."""
        by_fp: dict[str, dict[str, GenericResult]] = {}
        for res in self.extras.values():
            if res.kind == JUDGE_POINTWISE and res.name in JUDGE_DIMENSIONS:
                by_fp.setdefault(res.fingerprint, {})[res.name] = res
        if not by_fp:
            return {}
        best = max(by_fp.values(), key=lambda d: (len(d), max(r.created_at for r in d.values())))
        return {d: best[d] for d in JUDGE_DIMENSIONS if d in best}


@dataclass
class Leaderboard:
    columns: list[TaskColumn]
    extra_columns: list[ExtraColumn]
    rows: list[ModelRow]
    average_metrics: list[str]
    generated_at: str
    # calibration studies of judges and graders (kind "calibration"): not columns of their own
    calibrations: list[GenericResult] = field(default_factory=list)

    @property
    def has_costs(self) -> bool:
        """Whether any task result is priced (then every task cell shows its cost, "—" if unpriced)."""
        return any(c.cost_usd is not None for r in self.rows for c in r.cells.values())

    @property
    def comparable_columns(self) -> list[TaskColumn]:
        return [c for c in self.columns if c.comparable]

    @property
    def apart_columns(self) -> list[TaskColumn]:
        return [c for c in self.columns if not c.comparable]


def _slug(name: str, fingerprint: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40] or "model"
    return f"{base}-{stable_hash(fingerprint)[:8]}"


def _distinguish(fingerprints: Sequence[str]) -> dict[str, str]:
    """Short marks that tell apart models sharing a name: the backend arguments after "|"
    (e.g. dtype=bfloat16) when they differ, else a fingerprint prefix, else a hash."""
    candidates = [
        lambda fp: fp.partition("|")[2] or fp[:8],
        lambda fp: fp[:8],
        lambda fp: stable_hash(fp)[:8],
    ]
    for mark in candidates:
        marks = {fp: mark(fp) for fp in fingerprints}
        if len(set(marks.values())) == len(marks):
            return marks
    return {fp: stable_hash(fp)[:12] for fp in fingerprints}


def _latest(results: Sequence[StoredTaskResult]) -> dict[tuple[str, str], StoredTaskResult]:
    """Per (model, task key) the result over the most samples, and among those the most recently
    finished run's: a later `--limit 10` run never replaces a full one (a subset never passes for the
    whole). One model's results for one task under two fingerprints are never both ranked (they
    would average together); the other stays in the store."""
    out: dict[tuple[str, str], StoredTaskResult] = {}
    # n = 0 is no result (a store written before such results were refused holds some)
    scored = [r for r in results if r.main_metric in r.metrics and r.metrics[r.main_metric].n_scored > 0]
    order = sorted(scored, key=lambda r: (r.n_samples, r.run.finished_at or r.run.created_at, r.run.run_key))
    for res in order:
        out[(res.run.model_fingerprint, res.task_key)] = res
    return out


def _average(metric: str, cells: Sequence[Cell], regime_name: str = PROMPTED) -> Average:
    values = [c.value for c in cells if c.value is not None]
    tag = ", ".join(sorted({c.tag for c in cells}))
    if not cells or len(values) < len(cells):
        return Average(metric, None, None, None, len(cells), tag, regime=regime_name)
    mean = math.fsum(values) / len(values)
    if any(c.ci_low is None or c.ci_high is None for c in cells):
        return Average(metric, mean, None, None, len(cells), tag, regime=regime_name)
    se = math.sqrt(math.fsum(((c.ci_high - c.ci_low) / (2 * _Z95)) ** 2 for c in cells  # type: ignore[operator]
                             )) / len(cells)
    low, high = mean - _Z95 * se, mean + _Z95 * se
    bounds = [v for c in cells for v in (c.value, c.ci_low, c.ci_high) if v is not None]
    if all(0.0 <= v <= 1.0 for v in bounds):  # a proportion's interval stays within [0, 1]
        low, high = max(0.0, low), min(1.0, high)
    return Average(metric, mean, low, high, len(cells), tag, regime=regime_name)


def build_leaderboard(
    task_results: Sequence[StoredTaskResult], generic: Sequence[GenericResult] = (), *, now: str | None = None
) -> Leaderboard:
    studies = [g for g in generic if g.kind == CALIBRATION]
    agreements = [*studies, *(g for g in generic if g.kind == HUMAN_AGREEMENT)]
    generic = [g for g in generic if g.kind != CALIBRATION]
    latest = _latest(task_results)
    rows: dict[str, ModelRow] = {}
    for res in sorted(latest.values(), key=lambda r: r.run.imported_at):
        row = rows.setdefault(res.run.model_fingerprint, ModelRow(
            res.run.model_fingerprint, res.run.model_name, res.run.model_backend))
        row.model_name = res.run.model_name  # the newest name under which this model ran
        if res.run.run_key not in {r.run_key for r in row.runs}:
            row.runs.append(res.run)

    # Columns: one per (task key, task fingerprint).
    col_results: dict[tuple[str, str], list[StoredTaskResult]] = {}
    for res in latest.values():
        col_results.setdefault((res.task_key, res.task_fingerprint), []).append(res)
    fps_per_task: dict[str, set[str]] = {}
    for task_key, fp in col_results:
        fps_per_task.setdefault(task_key, set()).add(fp)
    columns: list[TaskColumn] = []
    # zero-/few-shot columns first, then the fine-tuned (sft) block
    for (task_key, fp), results in sorted(col_results.items(),
                                          key=lambda kv: (regime(kv[1][0].protocol), kv[0][0], kv[0][1])):
        first = results[0]
        split = len(fps_per_task[task_key]) > 1
        col = TaskColumn(
            key=f"{task_key}#{fp[:12]}", task_key=task_key, task=first.task, protocol=first.protocol,
            n_shot=first.n_shot, task_fingerprint=fp, main_metric=first.main_metric,
            higher_is_better=higher_is_better(first.main_metric, _recorded_direction(first)),
            # rows holds only models with task results here: a model that was only judged
            # does not make every task incomparable.
            comparable=len({r.run.model_fingerprint for r in results}) == len(rows),
            label=f"{first.task} #{fp[:8]}" if split else first.task,
        )
        columns.append(col)
        for res in results:
            m = res.metrics.get(res.main_metric)
            graders = graders_of_task(res.extra)
            agreement, calibrated = graders_agreement(graders, studies) if graders else (None, False)
            rows[res.run.model_fingerprint].cells[col.key] = Cell(
                value=m.value if m else None, ci_low=m.ci_low if m else None, ci_high=m.ci_high if m else None,
                n_scored=m.n_scored if m else 0, n_unscored=m.n_unscored if m else 0,
                ci_method=m.ci_method if m else "none", metric=res.main_metric, tag=col.tag,
                run_id=res.run.run_id, run_key=res.run.run_key, run_path=res.run.run_path,
                task_version=res.task_version, data_source=res.data_source, cost_usd=res.cost_usd,
                graders=graders, grader_agreement=agreement, grader_calibrated=calibrated,
            )

    # Generic results (judges): one column per (kind, name, fingerprint); models judged but
    # never run get a row too.
    extra_keys: dict[tuple[str, str, str], ExtraColumn] = {}
    fps_per_extra: dict[tuple[str, str], set[str]] = {}
    generic = [g for g in generic if g.n > 0]  # n = 0 is no result
    for g in generic:
        fps_per_extra.setdefault((g.kind, g.name), set()).add(g.fingerprint)
    for g in sorted(generic, key=lambda g: g.created_at):
        key = (g.kind, g.name, g.fingerprint)
        if key not in extra_keys:
            split = len(fps_per_extra[(g.kind, g.name)]) > 1
            label = g.name if g.kind == JUDGE_POINTWISE else f"{g.kind.replace('_', ' ')} {g.name}"
            extra_keys[key] = ExtraColumn(
                f"{g.kind}:{g.name}#{g.fingerprint[:12]}", g.kind, g.name, g.fingerprint,
                f"{label} #{g.fingerprint[:8]}" if split else label,
            )
        row = rows.setdefault(g.model_fingerprint, ModelRow(g.model_fingerprint, g.model_name, "-"))
        row.extras[extra_keys[key].key] = g
        if is_judge_result(g):
            row.judge_agreement[extra_keys[key].key] = agreement_text(study_for_judge(g, agreements))
    order = {d: i for i, d in enumerate(JUDGE_DIMENSIONS)}
    extra_columns = sorted(extra_keys.values(), key=lambda c: (c.kind != BRADLEY_TERRY, c.kind,
                                                               order.get(c.name, 99), c.name, c.fingerprint))

    # One average per (regime, main metric): an sft result never averages with a prompted one.
    groups = sorted({(c.regime != PROMPTED, c.regime, c.main_metric) for c in columns if c.comparable})
    average_metrics = [average_key(metric, name) for _, name, metric in groups]
    for row in rows.values():
        for (_, name, metric), avg_key in zip(groups, average_metrics, strict=True):
            # a model with only judge results (e.g. a judge never scored on the tasks) has no cells
            cells = [row.cells[c.key] for c in columns
                     if c.comparable and c.regime == name and c.main_metric == metric and c.key in row.cells]
            row.averages[avg_key] = _average(metric, cells, name)  # n/a without cells
    by_name: dict[str, list[ModelRow]] = {}
    for row in rows.values():
        by_name.setdefault(row.model_name, []).append(row)
        row.slug = _slug(row.model_name, row.model_fingerprint)
    for name, same in by_name.items():
        marks = _distinguish([r.model_fingerprint for r in same]) if len(same) > 1 else {}
        for row in same:
            row.label = f"{name} ({marks[row.model_fingerprint]})" if marks else name

    directions = {c.main_metric: c.higher_is_better for c in columns}

    def sort_key(row: ModelRow) -> tuple[float, str]:
        if average_metrics:
            first = row.averages[average_metrics[0]]
            if first.value is not None:
                up = directions.get(first.metric, higher_is_better(first.metric))
                return (-first.value if up else first.value, row.label)
        return (math.inf, row.label)

    return Leaderboard(
        columns=columns, extra_columns=extra_columns, rows=sorted(rows.values(), key=sort_key),
        average_metrics=average_metrics, generated_at=now or datetime.now(UTC).isoformat(timespec="seconds"),
        calibrations=sorted(studies, key=lambda g: (g.created_at, g.key)),
    )


def leaderboard_from_store(store: Store) -> Leaderboard:
    return build_leaderboard(store.task_results(), store.generic_results())
