"""Metric aggregation with 95 % confidence intervals.

A metric reads one value per sample (None = unscored, excluded and counted). Binary values
get a Wilson score interval (scipy's binomtest); other values a seeded percentile bootstrap
(scipy.stats.bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.registry import Registry
from harness.types import Score

CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_scored: int
    n_unscored: int
    ci_method: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "value": self.value,
            "ci": [self.ci_low, self.ci_high],
            "ci_method": self.ci_method,
            "confidence": CONFIDENCE,
            "n_scored": self.n_scored,
            "n_unscored": self.n_unscored,
        }
        if self.details:
            out["details"] = dict(self.details)
        return out


class MetricLike(Protocol):
    """What the runner needs of a metric. `options` carry task-level settings (e.g.
    `language`) that corpus metrics use to tokenise."""

    @property
    def name(self) -> str: ...

    @property
    def higher_is_better(self) -> bool: ...

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue: ...


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    read: Callable[[Score], float | None]
    description: str = ""

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue:
        values = [self.read(s) for s in scores]
        return mean_with_ci(self.name, values)


def mean_with_ci(name: str, values: Sequence[float | None]) -> MetricValue:
    scored = [float(v) for v in values if v is not None]
    n_unscored = len(values) - len(scored)
    if not scored:
        return MetricValue(name, None, None, None, 0, n_unscored, "none")
    mean = math.fsum(scored) / len(scored)
    if all(v in (0.0, 1.0) for v in scored):
        from scipy.stats import binomtest

        ci = binomtest(int(sum(scored)), len(scored)).proportion_ci(CONFIDENCE, method="wilson")
        return MetricValue(name, mean, ci.low, ci.high, len(scored), n_unscored, "wilson")
    if len(scored) < 2 or len(set(scored)) == 1:
        return MetricValue(name, mean, mean, mean, len(scored), n_unscored, "degenerate")
    import numpy as np
    from scipy.stats import bootstrap

    res = bootstrap(
        (np.asarray(scored),), np.mean, confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    low, high = res.confidence_interval
    return MetricValue(name, mean, float(low), float(high), len(scored), n_unscored, "bootstrap")


def _extra(key: str) -> Callable[[Score], float | None]:
    def read(score: Score) -> float | None:
        if score.value is None:
            return None
        value = score.metadata.get("values", {}).get(key)
        return None if value is None else float(value)

    return read


METRICS: Registry[MetricLike] = Registry("metric")
METRICS.add("accuracy", Metric("accuracy", True, lambda s: s.value, "share answered correctly"))
METRICS.add(
    "accuracy_norm",
    Metric("accuracy_norm", True, _extra("accuracy_norm"),
           "accuracy with log-likelihood normalised by the option's byte length"),
)

# Generation and NER metrics load their libraries (sacrebleu, rouge-score, bert-score) on use.
for _name, _target in {
    "bleu": "harness.textmetrics:BLEU",
    "rouge1": "harness.textmetrics:ROUGE1",
    "rouge2": "harness.textmetrics:ROUGE2",
    "rougeL": "harness.textmetrics:ROUGEL",
    "gleu": "harness.textmetrics:GLEU",
    "distinct1": "harness.textmetrics:DISTINCT1",
    "distinct2": "harness.textmetrics:DISTINCT2",
    "bertscore_f1": "harness.textmetrics:BERTSCORE_F1",
    "ner_f1_strict": "harness.ner:NER_F1_STRICT",
    "ner_precision_strict": "harness.ner:NER_PRECISION_STRICT",
    "ner_recall_strict": "harness.ner:NER_RECALL_STRICT",
    "ner_f1_lenient": "harness.ner:NER_F1_LENIENT",
    "ner_precision_lenient": "harness.ner:NER_PRECISION_LENIENT",
    "ner_recall_lenient": "harness.ner:NER_RECALL_LENIENT",
}.items():
    METRICS.add_lazy(_name, _target)
