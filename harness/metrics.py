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


def value_reader(key: str) -> Callable[[Score], float | None]:
    """Reads metadata["values"][key] whether or not the sample's main value is scored."""

    def read(score: Score) -> float | None:
        value = score.metadata.get("values", {}).get(key)
        return None if value is None else float(value)

    return read


@dataclass(frozen=True)
class RatioMetric:
    """sum(numerator) / sum(denominator) over samples (a micro average, e.g. of questions over
    cases), with a seeded percentile bootstrap over samples. Samples lacking either value, or
    with a zero denominator, take no part (they are not counted as unscored)."""

    name: str
    higher_is_better: bool
    numerator: str
    denominator: str
    description: str = ""

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue:
        import numpy as np

        from harness.textmetrics import bootstrap_ci

        num, den = value_reader(self.numerator), value_reader(self.denominator)
        pairs = [(num(s), den(s)) for s in scores]
        n_unscored = sum(n is None or d is None for n, d in pairs)
        kept = np.array([(n, d) for n, d in pairs if n is not None and d], dtype=np.float64).reshape(-1, 2)
        details = {"numerator": float(kept[:, 0].sum()), "denominator": float(kept[:, 1].sum())}
        if not len(kept):
            return MetricValue(self.name, None, None, None, 0, n_unscored, "none", details)
        value = details["numerator"] / details["denominator"]
        if len(kept) == 1:
            return MetricValue(self.name, value, value, value, 1, n_unscored, "degenerate", details)
        low, high = bootstrap_ci(len(kept),
                                 lambda counts: (counts @ kept[:, 0]) / np.maximum(counts @ kept[:, 1], 1e-12))
        return MetricValue(self.name, value, low, high, len(kept), n_unscored, "bootstrap", details)


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
    # interactive consultation (MediQ-style) and proactive questioning (PQA)
    "accuracy_full_case": "harness.consult:ACCURACY_FULL_CASE",
    "accuracy_initial_only": "harness.consult:ACCURACY_INITIAL_ONLY",
    "questions_per_case": "harness.consult:QUESTIONS_PER_CASE",
    "facts_elicited": "harness.consult:FACTS_ELICITED",
    "question_relevance": "harness.consult:QUESTION_RELEVANCE",
    "premature_answer_rate": "harness.consult:PREMATURE_ANSWER_RATE",
    "forced_answer_rate": "harness.consult:FORCED_ANSWER_RATE",
    "invalid_turn_rate": "harness.consult:INVALID_TURN_RATE",
    "pqa_f1": "harness.pqa:PQA_F1",
    "pqa_precision": "harness.pqa:PQA_PRECISION",
    "pqa_recall": "harness.pqa:PQA_RECALL",
    "pqa_agreement": "harness.pqa:PQA_AGREEMENT",
    "ask_rate": "harness.pqa:ASK_RATE",
    "reference_ask_rate": "harness.pqa:REFERENCE_ASK_RATE",
}.items():
    METRICS.add_lazy(_name, _target)
