"""Judge outputs on disk and in the leaderboard store.

Beside each run: RUN/judgements/<judge fingerprint[:12]>/ holds judge.json (who judged: model,
prompt, parser, generation settings), a per-sample JSON Lines file and a results file
{"results": [...]} in the shape `harness leaderboard import` reads (leaderboard.store
.GenericResult: kind, name, model, fingerprint, value, CI, n, details)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.scoring.intervals import MetricValue, format_value_ci
from leaderboard.store import GenericResult, ResultsFile, Store

JUDGE_POINTWISE = "judge_pointwise"
JUDGE_PAIRWISE = "judge_pairwise"
BRADLEY_TERRY = "bradley_terry"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> Path:
    _atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_results(path: Path, results: Sequence[GenericResult]) -> Path:
    """A results file `harness leaderboard import` accepts (validated before writing)."""
    data = ResultsFile(results=list(results)).model_dump(mode="json")
    return write_json(path, data)


def import_results(store: str | Path, results: Sequence[GenericResult]) -> int:
    """Add results to the store; returns how many were new (identical ones are skipped)."""
    with Store(store) as s:
        return s.add_results(results)


def generic(kind: str, name: str, model_name: str, model_fingerprint: str, fingerprint: str, value: MetricValue,
            source: Path, details: dict[str, Any]) -> GenericResult:
    return GenericResult(
        kind=kind, name=name, model_name=model_name, model_fingerprint=model_fingerprint, fingerprint=fingerprint,
        value=value.value, ci=(value.ci_low, value.ci_high), n=value.n_scored, n_unscored=value.n_unscored,
        source=str(source), details={**details, "ci_method": value.ci_method},
    )


def fmt(value: MetricValue | None, digits: int = 3) -> str:
    """0.512 [0.401, 0.620] or "-"."""
    if value is None:
        return "-"
    return format_value_ci(value.value, value.ci_low, value.ci_high, digits=digits, missing="-")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
