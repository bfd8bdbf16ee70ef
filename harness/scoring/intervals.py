"""Confidence intervals: the one home of the interval settings and methods every metric, judge
and leaderboard number uses.

- Proportions (all values 0/1): Wilson score interval (scipy's binomtest).
- Means of other values: seeded percentile bootstrap (scipy.stats.bootstrap).
- Corpus statistics (BLEU, micro F1, ratios): `bootstrap_ci`, a seeded percentile bootstrap
  that hands each resample to the metric as per-sample draw counts, so the corpus statistic is
  recomputed on every resample; written here because scipy's bootstrap resamples arrays, not
  corpus sufficient statistics, and would materialise every resample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 2000
_CHUNK_CELLS = 4_000_000  # bounds the memory of one block of count-based resamples

Resample = Callable[[np.ndarray], np.ndarray]  # (B, n) draw counts -> B statistic values


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


def wilson_ci(successes: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_stat(data: Sequence[Any], statistic: Callable[..., Any], *, paired: bool = False,
                   vectorized: bool = True, batch: int | None = None) -> tuple[float, float]:
    """Seeded percentile bootstrap of `statistic` over the arrays in `data` (scipy)."""
    from scipy.stats import bootstrap

    res = bootstrap(
        tuple(data), statistic, paired=paired, vectorized=vectorized, n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE, method="percentile", batch=batch, rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    low, high = res.confidence_interval
    return float(low), float(high)


def bootstrap_ci(n: int, resample: Resample) -> tuple[float, float]:
    """Seeded percentile bootstrap over n samples: BOOTSTRAP_RESAMPLES draws of n with replacement,
    each given to `resample` as per-sample draw counts, in chunks to bound memory."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    chunk = max(1, min(BOOTSTRAP_RESAMPLES, _CHUNK_CELLS // n))
    values: list[np.ndarray] = []
    done = 0
    while done < BOOTSTRAP_RESAMPLES:
        b = min(chunk, BOOTSTRAP_RESAMPLES - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + n * np.arange(b)[:, None]).ravel()
        values.append(resample(np.bincount(flat, minlength=b * n).reshape(b, n)))
        done += b
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(np.concatenate(values), [tail, 100 - tail])
    return float(low), float(high)


def mean_with_ci(name: str, values: Sequence[float | None], *, proportion: bool | None = None) -> MetricValue:
    """Mean of the scored values (None = unscored, counted). `proportion=None` takes all-0/1
    values for a proportion (Wilson); pass False for scale scores (a column of 1s on a 1-5
    scale is not a proportion), True to insist."""
    scored = [float(v) for v in values if v is not None]
    n_unscored = len(values) - len(scored)
    if not scored:
        return MetricValue(name, None, None, None, 0, n_unscored, "none")
    mean = math.fsum(scored) / len(scored)
    binary = all(v in (0.0, 1.0) for v in scored)
    if proportion is True and not binary:
        raise ValueError(f"{name}: a proportion needs 0/1 values")
    if binary and proportion is not False:
        low, high = wilson_ci(int(sum(scored)), len(scored))
        return MetricValue(name, mean, low, high, len(scored), n_unscored, "wilson")
    if len(scored) < 2 or len(set(scored)) == 1:
        return MetricValue(name, mean, mean, mean, len(scored), n_unscored, "degenerate")
    low, high = bootstrap_stat((np.asarray(scored),), np.mean, vectorized=True)
    return MetricValue(name, mean, low, high, len(scored), n_unscored, "bootstrap")


def format_value_ci(value: float | None, low: float | None = None, high: float | None = None, *,
                    digits: int = 3, missing: str = "n/a") -> str:
    """"0.280 [0.175, 0.417]": the one way every table shows a value with its interval."""
    if value is None:
        return missing
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
