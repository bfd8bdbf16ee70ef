"""Merge the shards of a run (`harness run --shard I/N`) into one record, equal to the record
an unsharded run would write (metrics are recomputed over all samples in task order)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.aggregate import group_results, summarize
from harness.run.folder import RunFolder, entry_score
from harness.run.records import RunRecord, read_record
from harness.types import Score


def merge_runs(paths: Sequence[Path], output: Path) -> RunRecord:
    if not paths:
        raise HarnessError("merge needs at least one run folder")
    records = [read_record(p) for p in paths]
    configs = [RunFolder(p).read_identity() for p in paths]
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
        for by_id in RunFolder(path).read_samples().values():
            for e in by_id.values():
                entries[e["task_key"]][e["index"]] = e

    first = records[0]
    tasks = {}
    scores: dict[str, list[Score]] = {}
    for key, template in first.tasks.items():
        ordered = [entries[key][i] for i in sorted(entries[key])]
        scores[key] = [entry_score(e) for e in ordered]
        duration = sum(r.tasks[key].duration_s or 0.0 for r in records)
        tasks[key] = summarize(template.model_copy(update={"duration_s": round(duration, 3)}), scores[key])

    folder = RunFolder(output)
    if folder.has_record():
        raise HarnessError(f"{output} already holds a run")
    output.mkdir(parents=True, exist_ok=True)
    merged_config = {**first.config, "shard": None, "output": str(output.resolve())}
    record = first.model_copy(update={
        "run_id": uuid.uuid4().hex[:12], "config": merged_config, "tasks": tasks,
        "groups": group_results(tasks, scores), "finished_at": datetime.now(UTC).isoformat(),
        "cache": {}, "requests": {"merged_from": [str(p) for p in paths]},
    })
    folder.write_samples(entries[key][i] for key in first.tasks for i in sorted(entries[key]))
    folder.write_identity({**base, "shard": None})
    folder.write_record(record)
    return record
