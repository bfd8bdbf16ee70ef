"""The rubric family's metrics (HealthBench; the protocol is harness.protocols.rubric), over the
stored Scores: `rubric_score` (the clipped mean with a seeded bootstrap; theme and axis tables in
its details, and for a grader jury each grader's own score, ungraded and failed counts and
Krippendorff's alpha over the item decisions), `rubric_score_length_adjusted`,
`rubric_ungraded_item_rate`, and one metric per HealthBench theme and axis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.scoring.intervals import MetricValue
from harness.scoring.jury import krippendorff_alpha
from harness.scoring.metrics import METRICS, RatioMetric
from harness.scoring.rubric import (
    AXIS_PREFIX,
    THEME_PREFIX,
    ClippedMean,
    ExampleScore,
    LengthPenalty,
    clipped_mean,
    summarize,
    tag_value,
)
from harness.types import Score

HEALTHBENCH_THEMES = ("emergency_referrals", "context_seeking", "global_health", "health_data_tasks",
                      "communication", "hedging", "complex_responses")
HEALTHBENCH_AXES = ("accuracy", "completeness", "context_awareness", "communication_quality",
                    "instruction_following")


def example_scores(scores: Sequence[Score]) -> list[ExampleScore]:
    """The per-example rubric scores back from stored Scores (a sample whose requests failed
    is an unscored example with no items)."""
    out = []
    for s in scores:
        m = s.metadata
        if "values" not in m or "tag_scores" not in m:
            out.append(ExampleScore(None, {}, 0, 0, s.explanation or "unscored"))
            continue
        out.append(ExampleScore(s.value, dict(m["tag_scores"]), int(m["values"]["n_items"]),
                                int(m["values"]["n_ungraded"]), s.explanation, tuple(m.get("example_tags", ())),
                                tuple(m.get("item_tags", ())), m.get("response_chars")))
    return out


def _metric_value(name: str, c: ClippedMean, details: Mapping[str, Any] | None = None) -> MetricValue:
    extra = {"bootstrap_std": c.bootstrap_std, "unclipped_mean": c.unclipped, **(details or {})}
    method = "none" if c.value is None else "bootstrap-clipped-mean"
    return MetricValue(name, c.value, c.ci_low, c.ci_high, c.n_scored, c.n_unscored, method, extra)


def _table(values: Mapping[str, ClippedMean]) -> dict[str, Any]:
    return {k: {"value": v.value, "ci": [v.ci_low, v.ci_high], "n_scored": v.n_scored, "n_unscored": v.n_unscored}
            for k, v in values.items()}


@dataclass(frozen=True)
class RubricScoreMetric:
    """The task score (clipped mean) with theme and axis tables in its details."""

    name: str
    length_adjusted: bool = False
    higher_is_better: bool = True
    description: str = "HealthBench score: mean of per-example rubric scores, clipped to [0, 1]"

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue:
        examples = example_scores(scores)
        if self.length_adjusted:
            summary = summarize(examples, length_penalty=LengthPenalty())
            assert summary.length_adjusted is not None
            return _metric_value(self.name, summary.length_adjusted, {"length_penalty": LengthPenalty().to_json()})
        summary = summarize(examples)
        details: dict[str, Any] = {
            "by_theme": _table(summary.by_theme), "by_axis": _table(summary.by_axis),
            "n_items": summary.n_items, "n_ungraded_items": summary.n_ungraded_items,
            "n_examples_with_ungraded": summary.n_examples_with_ungraded}
        jury = jury_details(scores)
        if jury is not None:  # a jury's headline is its mean; each grader's own score and counts beside it
            details["jury"] = jury
        return _metric_value(self.name, summary.overall, details)


def jury_details(scores: Sequence[Score]) -> dict[str, Any] | None:
    """A grader jury's task-level numbers (None for a single grader): per grader its own rubric
    score (clipped mean, bootstrap CI), items, ungraded items and failed requests; and
    Krippendorff's alpha (nominal) across the graders over every item decision (an ungraded one
    is missing). A sample whose own request failed is unscored for every grader."""
    roles = next((tuple(s.metadata["jury"]["graders"]) for s in scores if "jury" in s.metadata), None)
    if roles is None:
        return None
    values: dict[str, list[float | None]] = {r: [] for r in roles}
    counts = {r: {"n_items": 0, "n_ungraded_items": 0, "n_failed_requests": 0} for r in roles}
    decisions: dict[str, list[float | None]] = {r: [] for r in roles}
    for s in scores:
        jury = s.metadata.get("jury")
        for r in roles:
            g = jury["per_grader"][r] if jury else None
            values[r].append(g["score"] if g else None)
            if g:
                counts[r]["n_items"] += int(g["n_items"])
                counts[r]["n_ungraded_items"] += int(g["n_ungraded"])
                counts[r]["n_failed_requests"] += int(g["n_failed"])
        for grade in s.metadata.get("grades", ()) if jury else ():
            for r in roles:
                met = grade["by_grader"][r]["met"]
                decisions[r].append(None if met is None else float(met))
    graders = {}
    for r in roles:
        c = clipped_mean(values[r])
        graders[r] = {"rubric_score": {"value": c.value, "ci": [c.ci_low, c.ci_high], "n_scored": c.n_scored,
                                       "n_unscored": c.n_unscored, "bootstrap_std": c.bootstrap_std},
                      **counts[r]}
    return {"graders": graders, "krippendorff_alpha": krippendorff_alpha([decisions[r] for r in roles], "nominal"),
            "alpha_level": "nominal", "alpha_units": len(decisions[roles[0]]),
            "score": "mean of the graders' example scores"}


@dataclass(frozen=True)
class RubricTagMetric:
    """The clipped mean over the examples carrying one tag (a theme, an axis, ...)."""

    name: str
    tag: str
    higher_is_better: bool = True

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue:
        values: list[float | None] = []
        for ex in example_scores(scores):
            if self.tag in ex.example_tags or self.tag in ex.item_tags:
                applies, value = tag_value(ex, self.tag)
                if applies:
                    values.append(value)
        return _metric_value(self.name, clipped_mean(values), {"tag": self.tag})



METRICS.add("rubric_score", RubricScoreMetric("rubric_score"))
METRICS.add("rubric_score_length_adjusted", RubricScoreMetric(
    "rubric_score_length_adjusted", length_adjusted=True,
    description="rubric_score less HealthBench Professional's length penalty (per 500 characters above 2,000)"))
METRICS.add("rubric_ungraded_item_rate", RatioMetric(
    "rubric_ungraded_item_rate", False, "n_ungraded", "n_items",
    "share of rubric item decisions left ungraded (the grader's reply never parsed, or its request failed; "
    "never read as 'not met'); a jury counts each grader's decision on each item"))
for _theme in HEALTHBENCH_THEMES:
    METRICS.add(f"rubric_theme_{_theme}", RubricTagMetric(f"rubric_theme_{_theme}", THEME_PREFIX + _theme))
for _axis in HEALTHBENCH_AXES:
    METRICS.add(f"rubric_axis_{_axis}", RubricTagMetric(f"rubric_axis_{_axis}", AXIS_PREFIX + _axis))
