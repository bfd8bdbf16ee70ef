"""From stored scores to a task's record entry: metrics with CIs, fingerprints, group averages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import HarnessError
from harness.protocols import model_extract
from harness.protocols.extract import MODEL_EXTRACTOR
from harness.run.folder import SampleLog, score_from_json
from harness.run.planning import TaskPlan
from harness.run.records import TaskResult
from harness.scoring.intervals import mean_with_ci
from harness.scoring.metrics import METRICS, Metric
from harness.types import Score


def stored_scores(plan: TaskPlan, sample_log: SampleLog) -> list[Score]:
    """The task's scores from the sample log, in task order; every sample must be there."""
    entries = {e["sample_id"]: e for e in sample_log.for_task(plan.key)}
    missing = [s.id for s in plan.samples if s.id not in entries]
    if missing:
        raise HarnessError(f"task {plan.key}: {len(missing)} samples were not scored")
    return [score_from_json(entries[s.id]["score"]) for s in plan.samples]

def task_result(plan: TaskPlan, sample_log: SampleLog, duration: float,
                aux_info: Mapping[str, Any] | None = None) -> TaskResult:
    """The task's record entry: identity, fingerprints and metrics."""
    names = list(dict.fromkeys([*plan.spec.metrics, *plan.protocol.metrics]))
    scorer = f"{plan.protocol.label(plan.ctx)}:{','.join(names)}"
    spec = plan.spec
    result = TaskResult(
        task=spec.task, task_version=spec.version, group=spec.group,
        protocol=plan.protocol.label(plan.ctx), n_shot=plan.ctx.n_shot,
        fewshot_seed=plan.ctx.fewshot.seed if plan.ctx.n_shot and plan.ctx.fewshot else None,
        split=spec.eval_split, language=spec.language, data_source=plan.source,
        data_fingerprint=plan.data_fingerprint, prompt_hash=plan.prompt_hash, scorer=scorer,
        task_fingerprint=plan.fingerprint(scorer), n_samples=0,
        metrics={n: {} for n in names}, main_metric=spec.metrics[0], duration_s=round(duration, 3),
        extra=dict(getattr(plan.protocol, "record_extra", {})),
    )
    result.extra.update(plan.protocol.record_info(plan.ctx))
    if plan.aux:
        result.extra["aux_models"] = {role: (aux_info or {})[role] for role in plan.aux}
    result.extra.update(plan.data_extra)
    if plan.truncate:
        result.extra["truncate"] = plan.truncate
    return summarize(result, stored_scores(plan, sample_log))


def unscored_reason(score: Score) -> str:
    """The reason an unscored sample is counted under: its explanation's first line, with the
    per-sample numbers of "prompt exceeds context: N tokens > M" dropped."""
    if score.metadata.get("context_exceeded"):
        return "prompt exceeds context"
    text = (score.explanation or "unscored").strip().splitlines()[0] if score.explanation else "unscored"
    return text[:160]


def unscored_extra(scores: Sequence[Score]) -> dict[str, Any]:
    """Record facts about the task's unscored samples: counts by reason; how many samples had a
    failed request (unscored, or scored without it where the protocol absorbs failures, e.g. a
    rubric example scored on its graded items) and the first failed request's error line;
    truncated prompts counted too."""
    reasons: dict[str, int] = {}
    failed = 0
    first_error: str | None = None
    truncated = 0
    for s in scores:
        if s.metadata.get("truncated"):
            truncated += 1
        if s.metadata.get("request_failed"):
            failed += 1
            failures = s.metadata.get("failures") or []
            first_error = first_error or (unscored_reason(Score(None, explanation=f"request failed: {failures[0]}"))
                                          if failures else unscored_reason(s))
        if s.value is not None:
            continue
        reason = unscored_reason(s)
        reasons[reason] = reasons.get(reason, 0) + 1
    out: dict[str, Any] = {}
    if reasons:
        out["unscored"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    if failed:
        out["request_failed"] = failed
        out["first_error"] = first_error
    if truncated:
        out["truncated_prompts"] = truncated
    return out


def summarize(result: TaskResult, scores: Sequence[Score]) -> TaskResult:
    """Fill a task's metrics from its scores, in task order (shared by run and merge)."""
    options = {"language": result.language}
    metrics = {}
    for n in result.metrics:
        metric = METRICS.get(n)
        # the direction travels with the record, so readers never guess it from this install
        metrics[n] = {**metric.aggregate(scores, options).to_json(), "higher_is_better": metric.higher_is_better}
    extra = {k: v for k, v in result.extra.items()
             if k not in ("unscored", "request_failed", "first_error", "truncated_prompts")}
    extra.update(unscored_extra(scores))
    if extra.get("extractor") == MODEL_EXTRACTOR:  # the samples the extractor model decided, counted apart
        extra["model_extractor"] = model_extract.counts(scores)
    return result.model_copy(update={"metrics": metrics, "n_samples": len(scores), "extra": extra})


def group_results(
    results: Mapping[str, TaskResult], scores: Mapping[str, Sequence[Score]]
) -> dict[str, dict[str, Any]]:
    """Micro average of the main metric over the tasks of each group."""
    groups: dict[str, list[str]] = {}
    by_key = results
    for key, res in by_key.items():
        if res.group:
            groups.setdefault(res.group, []).append(key)
    out: dict[str, dict[str, Any]] = {}
    for name, keys in groups.items():
        metric = METRICS.get(by_key[keys[0]].main_metric)
        if not isinstance(metric, Metric):  # corpus metrics have no per-sample micro average
            continue
        values = [metric.read(s) for k in keys for s in scores[k]]
        out[name] = {"tasks": keys, "metrics": {metric.name: {**mean_with_ci(metric.name, values).to_json(),
                                                              "higher_is_better": metric.higher_is_better}}}
    return out
