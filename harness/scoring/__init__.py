"""Scoring: metrics over per-sample scores, each with a confidence interval.

intervals (MetricValue, Wilson, bootstraps: the one home of confidence intervals), metrics (the
METRICS registry and the generic metrics), textmetrics (BLEU, ROUGE, GLEU, Distinct, BERTScore)."""

from harness.scoring.intervals import MetricValue, format_value_ci, mean_with_ci
from harness.scoring.metrics import METRICS, Metric

__all__ = ["METRICS", "Metric", "MetricValue", "format_value_ci", "mean_with_ci"]
