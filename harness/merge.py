"""Merge the shards of a run (`harness run --shard I/N`) into one record, equal to the record
an unsharded run would write (metrics are recomputed over all samples in task order)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.records import RunRecord, read_record
from harness.runner import group_results, summarize
from harness.types import Score


def _config(path: Path) -> dict[str, Any]:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise HarnessError(f"{path}: no config.json (is it a run folder?)")
    data: dict[str, Any] = json.loads(cfg.read_text(encoding="utf-8"))
    return data


def merge_runs(paths: Sequence[Path], output: Path) -> RunRecord:
    if not paths:
        raise HarnessError("merge needs at least one run folder")
    records = [read_record(p) for p in paths]
    configs = [_config(p) for p in paths]
    raw_shards = [c.get("shard") for c in configs]
    if any(s is None for s in raw_shards):
        raise HarnessError("every run to merge must be a shard (made with --shard I/N)")
    shards: list[list[int]] = [list(s) for s in raw_shards if s is not None]
    n = shards[0][1]
    if sorted(tuple(s) for s in shards) != [(i, n) for i in range(n)]:
        got = ", ".join(f"{s[0]}/{s[1]}" for s in shards)
        raise HarnessError(f"shards must be exactly 0/{n} .. {n - 1}/{n}, got {got}")
    base = {k: v for k, v in configs[0].items() if k != "shard"}
    for path, cfg in zip(paths, configs, strict=True):
        if {k: v for k, v in cfg.items() if k != "shard"} != base:
            raise HarnessError(f"{path}: settings differ from {paths[0]}")
    for path, rec in zip(paths, records, strict=True):
        if rec.status != "finished":
            raise HarnessError(f"{path}: run is {rec.status}; finish it (rerun to resume) first")
        if rec.model.fingerprint != records[0].model.fingerprint:
            raise HarnessError(f"{path}: model fingerprint differs from {paths[0]}")
        if rec.tasks.keys() != records[0].tasks.keys():
            raise HarnessError(f"{path}: tasks differ from {paths[0]}")
        for key, res in rec.tasks.items():
            if res.task_fingerprint != records[0].tasks[key].task_fingerprint:
                raise HarnessError(f"{path}: task {key} has another task fingerprint")

    entries: dict[str, dict[int, dict[str, Any]]] = {key: {} for key in records[0].tasks}
    for path in paths:
        for line in (path / "samples.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                e = json.loads(line)
                entries[e["task_key"]][e["index"]] = e

    first = records[0]
    tasks = {}
    scores: dict[str, list[Score]] = {}
    for key, template in first.tasks.items():
        ordered = [entries[key][i] for i in sorted(entries[key])]
        scores[key] = [
            Score(e["score"]["value"], e["score"].get("answer"), e["score"].get("explanation"),
                  e["score"].get("metadata") or {})
            for e in ordered
        ]
        duration = sum(r.tasks[key].duration_s or 0.0 for r in records)
        tasks[key] = summarize(template.model_copy(update={"duration_s": round(duration, 3)}), scores[key])

    output.mkdir(parents=True, exist_ok=True)
    if (output / "run.json").exists():
        raise HarnessError(f"{output} already holds a run")
    merged_config = {**first.config, "shard": None, "output": str(output.resolve())}
    record = first.model_copy(update={
        "run_id": uuid.uuid4().hex[:12], "config": merged_config, "tasks": tasks,
        "groups": group_results(tasks, scores), "finished_at": datetime.now(UTC).isoformat(),
        "cache": {}, "requests": {"merged_from": [str(p) for p in paths]},
    })
    with (output / "samples.jsonl").open("w", encoding="utf-8") as f:
        for key in first.tasks:
            for i in sorted(entries[key]):
                f.write(json.dumps(entries[key][i], ensure_ascii=False) + "\n")
    (output / "config.json").write_text(json.dumps({**base, "shard": None}, indent=2, sort_keys=True))
    record.write(output)
    return record
