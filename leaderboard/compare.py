"""`harness compare BASE NEW`: per task, the change of the main metric with a paired test on
per-sample outcomes, and a verdict a nightly job can gate on.

Samples are aligned by id within each task key; a pair where either side is unscored is left
out (and counted). Tests, chosen by the values:
- 0/1 outcomes (accuracy): McNemar's exact test, i.e. a two-sided binomial test on the
  discordant pairs (scipy.stats.binomtest);
- other per-sample values: a paired permutation test (sign flips of the differences,
  scipy.stats.permutation_test, seeded);
- corpus metrics without per-sample values (BLEU, ...): a seeded paired bootstrap of the
  metric itself (resample sample ids, recompute both sides).
Runs whose task fingerprints differ are refused: their numbers measure different things.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.run.folder import RunFolder, entry_score
from harness.run.records import RunRecord, read_record
from harness.scoring.metrics import METRICS, Metric
from harness.types import Score

PERMUTATION_RESAMPLES = 9999
CORPUS_BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class TaskComparison:
    task_key: str
    metric: str
    higher_is_better: bool
    test: str
    base: float | None
    new: float | None
    p_value: float | None
    n_pairs: int
    n_unscored_pairs: int  # left out: unscored in BASE or NEW
    n_unmatched: int  # sample ids present in only one of the runs
    discordant: tuple[int, int] | None  # McNemar: (right in BASE only, right in NEW only)
    verdict: str
    regression: bool

    @property
    def delta(self) -> float | None:
        return None if self.base is None or self.new is None else self.new - self.base


@dataclass(frozen=True)
class Comparison:
    base: str
    new: str
    alpha: float
    max_drop: float
    tasks: list[TaskComparison]
    only_base: list[str]
    only_new: list[str]

    @property
    def regressions(self) -> list[TaskComparison]:
        return [t for t in self.tasks if t.regression]


def mcnemar_exact(base: Sequence[float], new: Sequence[float]) -> tuple[float, int, int]:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes, and the discordant counts."""
    from scipy.stats import binomtest

    b = sum(1 for x, y in zip(base, new, strict=True) if x == 1.0 and y == 0.0)
    c = sum(1 for x, y in zip(base, new, strict=True) if x == 0.0 and y == 1.0)
    if b + c == 0:
        return 1.0, b, c
    return float(binomtest(c, b + c, 0.5).pvalue), b, c


def paired_permutation(base: Sequence[float], new: Sequence[float], seed: int,
                       n_resamples: int = PERMUTATION_RESAMPLES) -> float:
    """Two-sided paired permutation test of the mean difference (exact for small n)."""
    from scipy.stats import permutation_test

    x, y = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    if np.all(x == y):
        return 1.0

    def mean_diff(a: Any, b: Any, axis: int) -> Any:
        return np.mean(a - b, axis=axis)

    res = permutation_test((x, y), mean_diff, permutation_type="samples", vectorized=True,
                           n_resamples=n_resamples, rng=np.random.default_rng(seed))
    return float(res.pvalue)


def paired_bootstrap(base: Sequence[Score], new: Sequence[Score], metric: Any, options: dict[str, Any],
                     seed: int, n_resamples: int = CORPUS_BOOTSTRAP_RESAMPLES) -> float:
    """Two-sided paired bootstrap p-value for a corpus metric (Koehn 2004): how often the
    resampled difference falls on the other side of zero."""
    rng = np.random.default_rng(seed)
    n = len(base)
    deltas = []
    for idx in rng.integers(0, n, size=(n_resamples, n)):
        b = metric.aggregate([base[i] for i in idx], options).value
        a = metric.aggregate([new[i] for i in idx], options).value
        if a is not None and b is not None:
            deltas.append(a - b)
    if not deltas:
        return 1.0
    arr = np.asarray(deltas)
    return min(1.0, 2 * min(float(np.mean(arr <= 0)), float(np.mean(arr >= 0))))


def _verdict(drop: float, p: float, alpha: float, max_drop: float) -> tuple[str, bool]:
    if p >= alpha or drop == 0:
        return "no significant change", False
    if drop < 0:
        return "improved", False
    if drop > max_drop:
        return "REGRESSION", True
    return "worse, within --max-drop", False


def _check_fingerprints(base: RunRecord, new: RunRecord, base_dir: Path, new_dir: Path, keys: list[str]) -> None:
    bad = [k for k in keys if base.tasks[k].task_fingerprint != new.tasks[k].task_fingerprint]
    if bad:
        k = bad[0]
        more = f" (and {len(bad) - 1} more tasks)" if len(bad) > 1 else ""
        raise HarnessError(
            f"{new_dir / 'run.json'}: tasks.{k}.task_fingerprint {new.tasks[k].task_fingerprint[:12]} differs "
            f"from {base.tasks[k].task_fingerprint[:12]} in {base_dir / 'run.json'}{more}: the runs used another "
            "prompt, data, shot count or scorer and are not comparable"
        )


def _compare_task(key: str, base: RunRecord, new: RunRecord, base_entries: dict[str, dict[str, Any]],
                  new_entries: dict[str, dict[str, Any]], alpha: float, max_drop: float,
                  seed: int) -> TaskComparison:
    res = base.tasks[key]
    metric = METRICS.get(res.main_metric)
    common = sorted(set(base_entries) & set(new_entries))
    unmatched = len(set(base_entries) ^ set(new_entries))
    b_scores = [entry_score(base_entries[i]) for i in common]
    n_scores = [entry_score(new_entries[i]) for i in common]
    read = metric.read if isinstance(metric, Metric) else (lambda s: s.value)
    keep = [j for j in range(len(common)) if read(b_scores[j]) is not None and read(n_scores[j]) is not None]
    n_unscored = len(common) - len(keep)
    b_scores, n_scores = [b_scores[j] for j in keep], [n_scores[j] for j in keep]
    hib = metric.higher_is_better
    if not keep:
        return TaskComparison(key, res.main_metric, hib, "none", None, None, None, 0, n_unscored, unmatched,
                              None, "no scored pairs", False)
    discordant = None
    if isinstance(metric, Metric):
        bv = [float(read(s)) for s in b_scores]  # type: ignore[arg-type]
        nv = [float(read(s)) for s in n_scores]  # type: ignore[arg-type]
        base_value, new_value = float(np.mean(bv)), float(np.mean(nv))
        if all(v in (0.0, 1.0) for v in (*bv, *nv)):
            test = "mcnemar-exact"
            p, b, c = mcnemar_exact(bv, nv)
            discordant = (b, c)
        else:
            test = "paired-permutation"
            p = paired_permutation(bv, nv, seed)
    else:
        test = "paired-bootstrap"
        options = {"language": res.language}
        base_value = metric.aggregate(b_scores, options).value  # type: ignore[assignment]
        new_value = metric.aggregate(n_scores, options).value  # type: ignore[assignment]
        p = paired_bootstrap(b_scores, n_scores, metric, options, seed)
    drop = 0.0 if base_value is None or new_value is None else (base_value - new_value) * (1 if hib else -1)
    verdict, regression = _verdict(drop, p, alpha, max_drop)
    return TaskComparison(key, res.main_metric, hib, test, base_value, new_value, p, len(keep), n_unscored,
                          unmatched, discordant, verdict, regression)


def compare_runs(base: Path, new: Path, *, alpha: float = 0.05, max_drop: float = 0.0, seed: int = 0) -> Comparison:
    """Compare two finished runs (folders or run.json files) task by task."""
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha must be between 0 and 1, got {alpha}")
    if max_drop < 0:
        raise HarnessError(f"--max-drop must be >= 0 (an absolute drop), got {max_drop}")
    base_dir, new_dir = RunFolder(base).path, RunFolder(new).path
    base_rec, new_rec = read_record(base_dir), read_record(new_dir)
    keys = [k for k in base_rec.tasks if k in new_rec.tasks]
    if not keys:
        raise HarnessError(f"{base_dir} and {new_dir} share no task: nothing to compare")
    _check_fingerprints(base_rec, new_rec, base_dir, new_dir, keys)
    base_samples, new_samples = RunFolder(base_dir).read_samples(), RunFolder(new_dir).read_samples()
    tasks = [
        _compare_task(k, base_rec, new_rec, base_samples.get(k, {}), new_samples.get(k, {}), alpha, max_drop, seed)
        for k in keys
    ]
    return Comparison(
        base=str(base_dir), new=str(new_dir), alpha=alpha, max_drop=max_drop, tasks=tasks,
        only_base=[k for k in base_rec.tasks if k not in new_rec.tasks],
        only_new=[k for k in new_rec.tasks if k not in base_rec.tasks],
    )


def _num(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_comparison(cmp: Comparison) -> str:
    header = ["task", "metric", "base", "new", "delta", "p", "test", "pairs", "excluded", "verdict"]
    rows = []
    for t in cmp.tasks:
        excluded = f"{t.n_unscored_pairs} unscored" + (f", {t.n_unmatched} unmatched" if t.n_unmatched else "")
        p = "n/a" if t.p_value is None else (f"{t.p_value:.2e}" if t.p_value < 1e-3 else f"{t.p_value:.3f}")
        delta = "n/a" if t.delta is None else f"{t.delta:+.3f}"
        rows.append([t.task_key, t.metric, _num(t.base), _num(t.new), delta, p, t.test, str(t.n_pairs),
                     excluded, t.verdict])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = [f"base: {cmp.base}", f"new:  {cmp.new}",
           "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if cmp.only_base:
        out.append(f"only in base (not compared): {', '.join(cmp.only_base)}")
    if cmp.only_new:
        out.append(f"only in new (not compared): {', '.join(cmp.only_new)}")
    n_reg = len(cmp.regressions)
    out.append(f"{n_reg} regression(s) (drop > {cmp.max_drop:g} and p < {cmp.alpha:g})" if n_reg
               else f"no regression (drop > {cmp.max_drop:g} and p < {cmp.alpha:g})")
    return "\n".join(out)
