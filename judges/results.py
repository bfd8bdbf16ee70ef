"""Judge outputs on disk and in the leaderboard store.

Beside each run: RUN/judgements/<judge fingerprint[:12]>/ holds judge.json (who judged: model,
prompt, parser, generation settings), a per-sample JSON Lines file and a results file
{"results": [...]} in the shape `harness leaderboard import` reads (leaderboard.store
.GenericResult: kind, name, model, fingerprint, value, CI, n, details). Beside each results file
X.json, X.tokens.json holds the tokens in and out per judge model (harness.scoring.cost
.RoleUsage rows: role "judge", or "judge", "judge_2", ... for a jury; model = the judge's model
label), and `--price-table FILE` adds X.cost.json (harness.scoring.cost.CostReport's shape,
as `harness run` writes RUN/cost.json)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from harness.scoring.cost import RoleUsage
from harness.scoring.intervals import MetricValue, format_value_ci
from leaderboard.store import GenericResult, ResultsFile, Store

JUDGE_POINTWISE = "judge_pointwise"
JUDGE_PAIRWISE = "judge_pairwise"
BRADLEY_TERRY = "bradley_terry"

TOKENS_NOTE = ("tokens of every judge request (retries included), counted whether or not the request cache "
               "served it: the cost of the judgement from scratch; samples = judgements asked for (a pair "
               "counts twice, once per order; a rubric item once)")


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


class Counted(Protocol):
    """A judgement or a grader decision: the tokens its requests used."""

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def attempts(self) -> int: ...


def judge_role(position: int) -> str:
    """The cost role of the judge at `position` (from 0) of a command: judge, judge_2, judge_3, ..."""
    return "judge" if position == 0 else f"judge_{position + 1}"


def judge_usage(role: str, model: str, judgements: Iterable[Counted]) -> RoleUsage:
    """The tokens in and out of `judgements` (every request, cached or not) as one cost row."""
    prompt = completion = asked = 0
    for j in judgements:
        prompt += j.prompt_tokens
        completion += j.completion_tokens
        asked += j.attempts > 0
    return RoleUsage(role, model, prompt, completion, asked)


def merge_usage(usages: Iterable[RoleUsage]) -> tuple[RoleUsage, ...]:
    """Rows of the same role and model summed (e.g. the pairs of a ranking), in first-seen order."""
    sums: dict[tuple[str, str], RoleUsage] = {}
    for u in usages:
        prev = sums.get((u.role, u.model))
        sums[(u.role, u.model)] = u if prev is None else RoleUsage(
            u.role, u.model, prev.prompt_tokens + u.prompt_tokens, prev.completion_tokens + u.completion_tokens,
            prev.samples + u.samples)
    return tuple(sums.values())


def sidecar(results_path: Path, kind: str) -> Path:
    """X.json -> X.<kind>.json (tokens, cost) beside a results file."""
    return results_path.with_name(f"{results_path.stem}.{kind}.json")


def write_tokens(results_path: Path, usages: Sequence[RoleUsage]) -> Path:
    """X.tokens.json beside the results file X.json: the tokens per judge model."""
    rows = [{"role": u.role, "model": u.model, "prompt_tokens": u.prompt_tokens,
             "completion_tokens": u.completion_tokens, "samples": u.samples} for u in usages]
    return write_json(sidecar(results_path, "tokens"), {"note": TOKENS_NOTE, "roles": rows})


def tokens_markdown(usages: Sequence[RoleUsage]) -> str:
    """One line per judge model: its tokens in and out (or why there are none)."""
    if not usages:
        return "tokens: none (no model judge)\n"
    lines = [f"tokens {u.role} {u.model}: {u.prompt_tokens:,} in, {u.completion_tokens:,} out over {u.samples} "
             "judgements" for u in usages]
    return "\n".join(lines) + "\n(tokens of every request, whether or not the request cache served it: the cost of " \
        "the judgement from scratch)\n"
