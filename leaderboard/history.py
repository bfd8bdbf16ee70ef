"""A model's history: the main metric of each of its tasks across its stored runs (nightly
runs, checkpoints evaluated under one name), ordered by time, as small inline-SVG line charts
computed here (no script), so a training team sees a regression at a glance.

A model's runs are those of its fingerprint and those stored under its name (a checkpoint
folder evaluated every night keeps its name while its weights change). One series per task
key and task fingerprint: numbers of another prompt, data or scorer are never joined by a line.
A drop whose 95% interval does not overlap the previous run's is flagged as a regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from leaderboard.entries import StoredTaskResult

WIDTH, HEIGHT = 300, 110
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 12, 10, 22


@dataclass(frozen=True)
class HistoryPoint:
    run_id: str
    when: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    x: float
    y: float | None
    y_low: float | None
    y_high: float | None


@dataclass(frozen=True)
class HistorySeries:
    task_key: str
    label: str
    metric: str
    higher_is_better: bool
    points: list[HistoryPoint]
    domain: tuple[float, float]
    polyline: str
    status: str  # "regression", "lower (within CI)", "better", "same", "first"
    change: float | None
    width: int = WIDTH
    height: int = HEIGHT
    left: int = PAD_LEFT
    right: int = WIDTH - PAD_RIGHT
    top: int = PAD_TOP
    bottom: int = HEIGHT - PAD_BOTTOM


def _domain(values: Sequence[float]) -> tuple[float, float]:
    if not values or (min(values) >= 0 and max(values) <= 1):
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
    return lo - pad, hi + pad


def _status(points: Sequence[HistoryPoint], higher_is_better: bool) -> tuple[str, float | None]:
    scored = [p for p in points if p.value is not None]
    if len(scored) < 2:
        return "first", None
    prev, last = scored[-2], scored[-1]
    assert prev.value is not None and last.value is not None
    change = last.value - prev.value
    worse = change < 0 if higher_is_better else change > 0
    if change == 0:
        return "same", 0.0
    if not worse:
        return "better", change
    if None not in (prev.ci_low, prev.ci_high, last.ci_low, last.ci_high):
        apart = (last.ci_high < prev.ci_low) if higher_is_better else (last.ci_low > prev.ci_high)  # type: ignore[operator]
        return ("regression" if apart else "lower (within CI)"), change
    return "lower", change


def model_history(results: Sequence[StoredTaskResult], model_fingerprint: str, model_name: str,
                  higher_is_better: dict[str, bool] | None = None) -> list[HistorySeries]:
    """Series of the model's main metrics over its runs (two or more runs per series)."""
    mine = [r for r in results if r.run.model_fingerprint == model_fingerprint or r.run.model_name == model_name]
    runs = sorted({r.run.run_key: r.run for r in mine}.values(),
                  key=lambda run: (run.finished_at or run.created_at, run.run_key))
    if len(runs) < 2:
        return []
    order = {run.run_key: i for i, run in enumerate(runs)}
    groups: dict[tuple[str, str], list[StoredTaskResult]] = {}
    for r in mine:
        groups.setdefault((r.task_key, r.task_fingerprint), []).append(r)
    fps_per_task: dict[str, int] = {}
    for task_key, _ in groups:
        fps_per_task[task_key] = fps_per_task.get(task_key, 0) + 1
    span = max(1, len(runs) - 1)
    out = []
    for (task_key, fp), rows in sorted(groups.items()):
        rows = sorted(rows, key=lambda r: order[r.run.run_key])
        if len(rows) < 2:
            continue
        metric = rows[-1].main_metric
        hib = (higher_is_better or {}).get(metric, True)
        values = [v for r in rows for m in [r.metrics.get(metric)] if m is not None
                  for v in (m.value, m.ci_low, m.ci_high) if v is not None and math.isfinite(v)]
        lo, hi = _domain(values)

        def y(v: float | None, lo: float = lo, hi: float = hi) -> float | None:
            if v is None:
                return None
            frac = (v - lo) / (hi - lo) if hi > lo else 0.5
            return round(HEIGHT - PAD_BOTTOM - max(0.0, min(1.0, frac)) * (HEIGHT - PAD_BOTTOM - PAD_TOP), 2)

        points = []
        for r in rows:
            m = r.metrics.get(metric)
            x = round(PAD_LEFT + order[r.run.run_key] / span * (WIDTH - PAD_LEFT - PAD_RIGHT), 2)
            value = m.value if m else None
            points.append(HistoryPoint(r.run.run_id, (r.run.finished_at or r.run.created_at)[:16].replace("T", " "),
                                       value, m.ci_low if m else None, m.ci_high if m else None, x, y(value),
                                       y(m.ci_low) if m else None, y(m.ci_high) if m else None))
        status, change = _status(points, hib)
        polyline = " ".join(f"{p.x},{p.y}" for p in points if p.y is not None)
        label = rows[-1].task + (f" #{fp[:8]}" if fps_per_task[task_key] > 1 else "")
        out.append(HistorySeries(task_key, label, metric, hib, points, (lo, hi), polyline, status, change))
    return out
