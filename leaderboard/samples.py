"""Read-only access to a run folder's samples.jsonl (per-sample outcomes stay with the run).

harness.records.SampleLog opens the file for appending and trims a torn last line, which is
right for a run that resumes but not for a reader: this module never writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.types import Score


def run_dir(path: Path) -> Path:
    """A run folder from a folder or its run.json."""
    return path.parent if path.name == "run.json" and not path.is_dir() else path


def samples_path(run: Path) -> Path:
    return run_dir(run) / "samples.jsonl"


def read_samples(run: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """task_key -> sample_id -> entry (task_key, sample_id, index, target, prompt, score).

    A later line for the same sample replaces an earlier one (a resumed run re-scores samples
    whose requests failed); a torn last line (a run killed mid-write) is ignored."""
    path = samples_path(run)
    if not path.is_file():
        raise HarnessError(f"no samples file at {path}")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    raw = path.read_text(encoding="utf-8")
    lines = raw.split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # torn tail: the runner drops it on resume too
                break
            raise HarnessError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
        for key in ("task_key", "sample_id", "score"):
            if not isinstance(entry, dict) or key not in entry:
                raise HarnessError(f"{path}:{lineno}: missing field {key!r}")
        if not isinstance(entry["score"], dict) or "value" not in entry["score"]:
            raise HarnessError(f"{path}:{lineno}: field score.value is missing")
        out.setdefault(str(entry["task_key"]), {})[str(entry["sample_id"])] = entry
    return out


def entry_score(entry: dict[str, Any]) -> Score:
    s = entry["score"]
    value = s.get("value")
    return Score(
        value=None if value is None else float(value), answer=s.get("answer"),
        explanation=s.get("explanation"), metadata=dict(s.get("metadata") or {}),
    )
