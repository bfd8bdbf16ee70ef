"""Case studies for the static site: per task, the questions that two or more models answered,
each with every model's answer side by side (read from the runs' samples.jsonl; untrusted text,
escaped by the templates)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.folder import RunFolder
from leaderboard.rankings import Leaderboard, TaskColumn

MAX_QUESTIONS = 100
PREVIEW_CHARS = 90


@dataclass(frozen=True)
class CaseAnswer:
    model: str
    slug: str
    text: str
    value: float | None


@dataclass(frozen=True)
class CaseQuestion:
    sample_id: str
    prompt: str
    target: str
    preview: str
    answers: list[CaseAnswer]


@dataclass(frozen=True)
class CaseStudy:
    column: TaskColumn
    slug: str
    questions: list[CaseQuestion]
    n_models: int


def _answer_text(entry: dict[str, Any]) -> str:
    score = entry.get("score") or {}
    meta = score.get("metadata") or {}
    if meta.get("output") is not None:
        return str(meta["output"])
    if meta.get("request_failed"):
        return "(no answer: the request failed)"
    return "" if score.get("answer") is None else str(score["answer"])


def case_studies(lb: Leaderboard, prompt_text: Any, target_text: Any,
                 max_questions: int = MAX_QUESTIONS) -> list[CaseStudy]:
    """One case study per task column that two or more models ran; `prompt_text` and
    `target_text` render a stored prompt and target as the site does elsewhere."""
    out = []
    cache: dict[str, dict[str, dict[str, dict[str, Any]]] | None] = {}
    for col in lb.columns:
        per_model: list[tuple[Any, dict[str, dict[str, Any]]]] = []
        for row in lb.rows:
            cell = row.cells.get(col.key)
            if cell is None or not cell.run_path:
                continue
            if cell.run_path not in cache:
                try:
                    cache[cell.run_path] = RunFolder(Path(cell.run_path)).read_samples()
                except HarnessError:
                    cache[cell.run_path] = None
            loaded = cache[cell.run_path]
            if loaded is not None and loaded.get(col.task_key):
                per_model.append((row, loaded[col.task_key]))
        if len(per_model) < 2:
            continue
        first = per_model[0][1]
        shared = [sid for sid, e in sorted(first.items(), key=lambda kv: (kv[1].get("index", 0), kv[0]))
                  if sum(sid in samples for _, samples in per_model) >= 2][:max_questions]
        questions = []
        for sid in shared:
            entry = next(samples[sid] for _, samples in per_model if sid in samples)
            prompt = prompt_text(entry.get("prompt"))
            answers = [CaseAnswer(row.label, row.slug, _answer_text(samples[sid]), samples[sid]["score"].get("value"))
                       for row, samples in per_model if sid in samples]
            preview = " ".join(prompt.split())
            questions.append(CaseQuestion(sid, prompt, target_text(entry.get("target")),
                                          preview[-PREVIEW_CHARS:] if len(preview) > PREVIEW_CHARS else preview,
                                          answers))
        if questions:
            slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in col.key)[:80]
            out.append(CaseStudy(col, slug, questions, len(per_model)))
    return out


def index_rows(studies: Sequence[CaseStudy]) -> list[dict[str, Any]]:
    return [{"label": s.column.label, "tag": s.column.tag, "slug": s.slug, "n": len(s.questions),
             "models": s.n_models} for s in studies]
