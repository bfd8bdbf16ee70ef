"""Helpers for the leaderboard and compare tests (no tests here): constructed runs whose
truth is known, written in the real run.json / samples.jsonl formats."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.run.records import ModelInfo, RunRecord, TaskResult
from harness.scoring.intervals import mean_with_ci
from harness.types import stable_hash


def make_task(
    values: Sequence[float | None], *, fingerprint: str = "fp", protocol: str = "loglik", n_shot: int = 0,
    answers: Sequence[str | None] | None = None, explanations: Sequence[str | None] | None = None,
    metric: str = "accuracy", ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    return {"values": list(values), "fingerprint": fingerprint, "protocol": protocol, "n_shot": n_shot,
            "answers": answers, "explanations": explanations, "metric": metric, "ids": ids}


def make_run(folder: Path, tasks: dict[str, dict[str, Any]], *, model: str = "model-a",
             model_fp: str | None = None, status: str = "finished", finished_at: str = "2026-01-01T00:00:00+00:00",
             prompt: Any = "Question: ?\nAnswer:") -> Path:
    """Write a finished run: `tasks` maps task names to make_task() specs; the task key is
    "<task>|<protocol>|<n>shot" as the runner writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, TaskResult] = {}
    lines: list[str] = []
    for task, spec in tasks.items():
        key = f"{task}|{spec['protocol']}|{spec['n_shot']}shot"
        values = spec["values"]
        ids = spec["ids"] or [f"{task}-{i:05d}" for i in range(len(values))]
        metric = mean_with_ci(spec["metric"], values).to_json()
        results[key] = TaskResult(
            task=task, task_version=1, protocol=spec["protocol"], n_shot=spec["n_shot"], fewshot_seed=None,
            split="test", data_source="bundled", data_fingerprint="d" * 64, prompt_hash="p" * 64,
            scorer=f"{spec['protocol']}:{spec['metric']}", task_fingerprint=spec["fingerprint"],
            n_samples=len(values), metrics={spec["metric"]: metric}, main_metric=spec["metric"],
        )
        answers = spec["answers"] or ["A"] * len(values)
        explanations = spec["explanations"] or [None] * len(values)
        for i, (sid, v) in enumerate(zip(ids, values, strict=True)):
            lines.append(json.dumps({
                "task_key": key, "sample_id": sid, "index": i, "target": 0, "prompt": prompt,
                "score": {"value": v, "answer": answers[i], "explanation": explanations[i], "metadata": {}},
            }, ensure_ascii=False))
    fp = model_fp or f"weights-{model}"
    record = RunRecord(
        run_id=stable_hash(str(folder))[:12], status=status,  # type: ignore[arg-type]
        created_at="2026-01-01T00:00:00+00:00", finished_at=finished_at if status == "finished" else None,
        harness_version="0.1.0", git_commit=None,
        model=ModelInfo(name=model, backend="hf", fingerprint=fp, args={}), config={}, environment={},
        tasks=results,
    )
    record.write(folder)
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def import_worker(store: str, run: str, barrier: Any, out: Any) -> None:
    """multiprocessing target: wait for the others, then import one run."""
    from leaderboard.store import Store

    barrier.wait()
    outcome = Store(store).import_run(Path(run))
    out.put((run, outcome.added))
