"""HealthBench meta-evaluation rows: upstream's schema (openai/simple-evals
`healthbench_meta_eval.py`: prompt, completion, rubric, binary_labels, anonymized_physician_ids,
category, ...) and its label-only projection (item_id, dataset), read strictly with errors that
name the file and line; the datasets `harness judge calibrate` knows by name."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.types import Message

TEXT_KEYS = ("prompt", "completion", "rubric")
LABEL_KEYS = ("binary_labels", "anonymized_physician_ids", "category")
KNOWN_KEYS = frozenset({*TEXT_KEYS, *LABEL_KEYS, "prompt_id", "completion_id", "canary", "item_id", "dataset"})
ROLES = frozenset({"system", "user", "assistant", "developer"})


@dataclass(frozen=True)
class MetaRow:
    id: str
    labels: tuple[bool, ...]
    physicians: tuple[str, ...]
    category: str
    prompt: tuple[Message, ...] | None = None
    completion: str | None = None
    rubric: str | None = None
    prompt_id: str | None = None
    completion_id: str | None = None

    @property
    def has_texts(self) -> bool:
        return self.prompt is not None

    @property
    def majority(self) -> bool | None:
        return majority(self.labels)


def majority(labels: Sequence[bool]) -> bool | None:
    """The strict majority label; None on a split."""
    yes = sum(labels)
    if yes * 2 == len(labels):
        return None
    return yes * 2 > len(labels)


def _row(obj: Any, where: str, require_texts: bool) -> MetaRow:
    if not isinstance(obj, dict):
        raise HarnessError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - KNOWN_KEYS)
    if unknown:
        raise HarnessError(f"{where}: unknown key(s) {', '.join(unknown)} (upstream meta-eval keys: "
                           f"{', '.join(sorted(KNOWN_KEYS))})")
    for key in LABEL_KEYS:
        if key not in obj:
            raise HarnessError(f"{where}: missing {key}")
    labels, ids, category = obj["binary_labels"], obj["anonymized_physician_ids"], obj["category"]
    if not isinstance(labels, list) or not labels or not all(isinstance(v, bool) for v in labels):
        raise HarnessError(f"{where}: binary_labels: expected a non-empty list of true/false, got {labels!r:.80}")
    if not isinstance(ids, list) or not all(isinstance(v, str) and v for v in ids):
        raise HarnessError(f"{where}: anonymized_physician_ids: expected a list of strings, got {ids!r:.80}")
    if len(ids) != len(labels):
        raise HarnessError(f"{where}: {len(labels)} binary_labels but {len(ids)} anonymized_physician_ids")
    if len(set(ids)) != len(ids):
        raise HarnessError(f"{where}: anonymized_physician_ids: a physician labels the row twice")
    if not isinstance(category, str) or not category:
        raise HarnessError(f"{where}: category: expected a non-empty string, got {category!r:.80}")
    present = [k for k in TEXT_KEYS if k in obj]
    if present and len(present) != len(TEXT_KEYS):
        absent = ", ".join(k for k in TEXT_KEYS if k not in obj)
        raise HarnessError(f"{where}: has {', '.join(present)} but not {absent} (a row has all of prompt, "
                           "completion and rubric, or none)")
    if require_texts and not present:
        raise HarnessError(f"{where}: no prompt, completion or rubric: this file has physician labels only; a grader "
                           "needs the texts (the physician ceiling does not: --baselines-only)")
    prompt = completion = rubric = None
    if present:
        raw_prompt, completion, rubric = obj["prompt"], obj["completion"], obj["rubric"]
        if not isinstance(raw_prompt, list) or not raw_prompt:
            raise HarnessError(f"{where}: prompt: expected a non-empty list of messages")
        msgs = []
        for k, m in enumerate(raw_prompt):
            if (not isinstance(m, dict) or set(m) != {"role", "content"} or m["role"] not in ROLES
                    or not isinstance(m["content"], str)):
                raise HarnessError(f"{where}: prompt[{k}]: expected {{role, content}} with role in "
                                   f"{', '.join(sorted(ROLES))}, got {m!r:.80}")
            msgs.append(Message(m["role"], m["content"]))
        if msgs[-1].role != "user":
            raise HarnessError(f"{where}: prompt: the last message must be the user's (the completion answers it)")
        if not isinstance(completion, str) or not isinstance(rubric, str) or not rubric.strip():
            raise HarnessError(f"{where}: completion and rubric must be strings (rubric non-empty)")
        prompt = tuple(msgs)
    for key in ("prompt_id", "completion_id", "item_id"):
        if key in obj and not isinstance(obj[key], str):
            raise HarnessError(f"{where}: {key}: expected a string, got {obj[key]!r:.80}")
    row_id = obj.get("item_id") or (
        f"{obj.get('completion_id', '')}|{hashlib.sha1((rubric or '').encode()).hexdigest()[:12]}"
        if obj.get("completion_id") else where)
    return MetaRow(row_id, tuple(labels), tuple(ids), category, prompt, completion, rubric,
                   obj.get("prompt_id"), obj.get("completion_id"))


def read_meta_rows(path: Path, *, require_texts: bool = False, limit: int | None = None) -> list[MetaRow]:
    """Rows of a meta-evaluation JSONL file, checked strictly; errors name file:line."""
    rows: list[MetaRow] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HarnessError(f"{where}: invalid JSON: {exc.msg}") from None
            row = _row(obj, where, require_texts)
            if row.id in seen:
                raise HarnessError(f"{where}: row {row.id!r} repeats line {seen[row.id]}")
            seen[row.id] = lineno
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise HarnessError(f"{path}: no rows")
    return rows


@dataclass(frozen=True)
class MetaDataset:
    name: str
    path: str  # relative to the data directory
    description: str


# `harness judge calibrate --dataset NAME` studies in upstream's meta-evaluation schema
META_DATASETS: dict[str, MetaDataset] = {d.name: d for d in (
    MetaDataset("healthbench_meta", "healthbench/2025-05-07-06-14-12_oss_meta_eval.jsonl",
                "HealthBench meta-evaluation, upstream's file (29,511 rows with texts)"),
    MetaDataset("healthbench_meta_gold120", "healthbench/meta_eval_physician_labels_gold120.jsonl",
                "120 HealthBench meta-evaluation rows, physician labels only"),
)}


def load_meta(name: str, data_dir: Path, limit: int | None = None,
              require_texts: bool = False) -> tuple[MetaDataset, list[MetaRow]]:
    """A registered study's rows; `require_texts` (a grader will run) refuses label-only rows."""
    ds = META_DATASETS[name]
    path = Path(data_dir) / ds.path
    if not path.is_file():
        raise HarnessError(f"meta-evaluation data {name!r} not found at {path} (pass --data-dir, the folder that "
                           "holds healthbench/)")
    return ds, read_meta_rows(path, limit=limit, require_texts=require_texts)


# -- upstream's pairwise metrics ---------------------------------------------------------------

