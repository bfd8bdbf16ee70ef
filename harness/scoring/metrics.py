"""Metric aggregation with 95 % confidence intervals.

A metric reads one value per sample (None = unscored, excluded and counted). Binary values
get a Wilson score interval (scipy's binomtest); other values a seeded percentile bootstrap
(scipy.stats.bootstrap).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from harness.registry import Registry
from harness.scoring.intervals import MetricValue, bootstrap_ci, mean_with_ci
from harness.types import Score


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


METRICS: Registry[MetricLike] = Registry("metric", families=True)
METRICS.add("accuracy", Metric("accuracy", True, lambda s: s.value, "share answered correctly"))
METRICS.add(
    "accuracy_norm",
    Metric("accuracy_norm", True, _extra("accuracy_norm"),
           "accuracy with log-likelihood normalised by the option's byte length"),
)

