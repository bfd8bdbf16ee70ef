"""Score a checkpoint with the harness and compare it with the previous stage's scores (paired
tests per task, exactly what `harness compare` runs)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.run.config import RunConfig
from harness.run.records import RunRecord
from leaderboard.compare import Comparison, compare_runs, format_comparison
from trainers.recipe import EvalSpec


def run_config(model: Path, spec: EvalSpec, out: Path, data_dir: Path | None, *, limit: int | None = None,
               seed: int = 1234) -> RunConfig:
    return RunConfig(
        model=str(model), suite=spec.suite, tasks=tuple(spec.tasks), limit=limit or spec.limit,
        data_source=spec.data_source, data_dir=data_dir, protocol=spec.protocol, batch_size=spec.batch_size,
        seed=seed, output=out, cache=None,
    )


def score_checkpoint(model: Path, spec: EvalSpec, out: Path, data_dir: Path | None, *, limit: int | None = None,
                     seed: int = 1234) -> RunRecord:
    """A harness run of `model` into `out` (a rerun resumes it: finished samples are kept)."""
    from harness.run.runner import Runner

    return Runner(run_config(model, spec, out, data_dir, limit=limit, seed=seed)).run()


def summarize(record: RunRecord) -> dict[str, Any]:
    """Main metric per task (value, CI, n), and each group's micro average."""
    tasks = {}
    for key, res in record.tasks.items():
        m = res.metrics.get(res.main_metric, {})
        tasks[key] = {"metric": res.main_metric, "value": m.get("value"), "ci": m.get("ci"),
                      "n": m.get("n_scored"), "unscored": m.get("n_unscored")}
    groups = {name: g["metrics"] for name, g in record.groups.items()}
    return {"model_fingerprint": record.model.fingerprint, "tasks": tasks, "groups": groups}


def compare_stage(base: Path, new: Path, spec: EvalSpec) -> Comparison:
    return compare_runs(base, new, alpha=spec.alpha, max_drop=spec.max_drop, seed=spec.seed)


def comparison_json(cmp: Comparison) -> dict[str, Any]:
    out = asdict(cmp)
    for task, t in zip(out["tasks"], cmp.tasks, strict=True):
        task["delta"] = t.delta
    out["regressions"] = [t.task_key for t in cmp.regressions]
    return out


def write_comparison(cmp: Comparison, folder: Path) -> None:
    (folder / "compare.json").write_text(json.dumps(comparison_json(cmp), indent=2), encoding="utf-8")
    (folder / "compare.txt").write_text(format_comparison(cmp) + "\n", encoding="utf-8")
