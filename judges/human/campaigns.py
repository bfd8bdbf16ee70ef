"""Campaigns from stored runs: what the creation arguments are (CampaignSpec) and the items
they turn into. Nothing is regenerated: the answers are the runs' stored outputs
(judges.runs.load_run); runs are imported into the results store too, so labels point at
stored runs.

Items per protocol (R runs, S samples they share):
- pointwise and rubric: one item per (sample, run): one answer;
- pairwise: one item per (sample, pair of runs): two answers;
- case-study: one item per sample: every run's answer.

Gold items (attention checks, --gold FILE) are JSON Lines, one object a line:
  {"prompt": TEXT or [{"role", "content"}, ...], "answers": [TEXT, ...], "expected": {...}}
with `expected` per protocol: pointwise {dimension: score or [low, high]}, pairwise
{criterion: 1 | 2 | 0} (1: the first answer listed is better, 2: the second, 0: tie), rubric
{criterion index: "met" | "not_met"} (and the gold item's own "rubric": [...]).

Rubric criteria ({criterion, points}) are read from each sample's stored record (metadata
"rubric", score metadata "rubric" or a references / target list of such objects); a
--rubric FILE of {"sample_id", ["task"], "rubric": [...]} lines is the fallback.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.errors import HarnessError
from harness.types import stable_hash
from judges.human.protocols import OVERALL, PROTOCOLS, ROLES, SCALE, HumanProtocol


class CampaignSpec(BaseModel):
    """What `harness annotate create` was given, resolved; stored with the campaign so that
    its numbers can be traced to their inputs."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Campaign name (letters, digits, '-', '_', '.').", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    protocol: str = Field(description="pointwise, pairwise, rubric or case-study.")
    runs: list[str] = Field(description="Run folders the answers come from (absolute paths).")
    tasks: list[str] = Field(default_factory=list, description="Task names or keys to use (empty: all generative).")
    dimensions: list[str] = Field(default_factory=list, description="Dimensions asked (pointwise, pairwise).")
    per_item: int = Field(default=2, ge=1, description="Annotators of each role per item (K).")
    items_per_annotator: int | None = Field(default=None, ge=1,
                                            description="Items one annotator gets (default: every item not yet "
                                                        "taken by K annotators of the role).")
    roles: list[str] = Field(default_factory=list, description="Roles that annotate this campaign.")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N shared samples.")
    seed: int = Field(default=0, description="Seed of the item order and answer placement.")
    gold: str | None = Field(default=None, description="Gold-item file (JSON Lines).")
    gold_sha256: str | None = None
    rubric: str | None = Field(default=None, description="Fallback rubric file (JSON Lines).")
    rubric_sha256: str | None = None


@dataclass(frozen=True)
class Answer:
    text: str
    run_key: str
    run_id: str
    model_name: str
    model_fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ItemDraft:
    kind: str  # "item" or "gold"
    task_key: str | None
    sample_id: str | None
    prompt: Any  # text, or a list of {"role", "content"}
    answers: tuple[Answer, ...]
    rubric: tuple[dict[str, Any], ...] = ()
    expected: dict[str, Any] = field(default_factory=dict)
    task_fingerprint: str | None = None

    @property
    def item_key(self) -> str:
        return stable_hash({
            "kind": self.kind, "task_key": self.task_key, "task_fingerprint": self.task_fingerprint,
            "sample_id": self.sample_id, "prompt": self.prompt if self.kind == "gold" else None,
            "answers": [[a.model_fingerprint, hashlib.sha256(a.text.encode()).hexdigest()] for a in self.answers],
            "rubric": list(self.rubric), "expected": self.expected,
        })

    def payload(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "answers": [a.to_json() for a in self.answers], "rubric": list(self.rubric),
                "expected": self.expected, "task_fingerprint": self.task_fingerprint}


def prompt_messages(prompt: Any) -> list[dict[str, str]]:
    """A stored prompt as turns: chat messages as they are, a plain string as one user turn."""
    if isinstance(prompt, list):
        out = []
        for m in prompt:
            if isinstance(m, dict):
                out.append({"role": str(m.get("role", "user")), "content": str(m.get("content", ""))})
            else:
                out.append({"role": "user", "content": str(m)})
        return out
    return [{"role": "user", "content": "" if prompt is None else str(prompt)}]


def prompt_text(prompt: Any) -> str:
    """One string for exports and LLM judges: 'ROLE: content' per turn."""
    turns = prompt_messages(prompt)
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    names = {"user": "PATIENT/USER", "assistant": "DOCTOR", "system": "SYSTEM"}
    return "\n".join(f"{names.get(t['role'], t['role'].upper())}: {t['content']}" for t in turns)


def model_labels(items: Sequence[Any]) -> dict[str, str]:
    """model fingerprint -> a display label, over stored items (their payload answers); models
    sharing a name are told apart by their backend arguments (e.g. dtype=bfloat16) or a
    fingerprint prefix."""
    names: dict[str, str] = {}
    for it in items:
        for a in it.payload["answers"]:
            names.setdefault(a["model_fingerprint"], a["model_name"])
    by_name: dict[str, list[str]] = defaultdict(list)
    for fp, name in names.items():
        by_name[name].append(fp)
    out = {}
    for name, fps in by_name.items():
        for fp in fps:
            mark = (fp.partition("|")[2] or fp[:8]) if len(fps) > 1 else ""
            out[fp] = f"{name} ({mark})" if mark else name
    return out


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise HarnessError(f"{path}: no such file")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(rec, dict):
            raise HarnessError(f"{path}:{lineno}: expected a JSON object")
        out.append((lineno, rec))
    return out


def check_rubric(items: Any, where: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(items, list) or not items:
        raise HarnessError(f"{where}: a rubric is a non-empty list of {{criterion, points}}")
    out = []
    for k, c in enumerate(items):
        if not isinstance(c, dict) or not isinstance(c.get("criterion"), str) or not c["criterion"].strip():
            raise HarnessError(f"{where}: rubric item {k}: needs a 'criterion' text")
        points = c.get("points")
        if points is not None and (isinstance(points, bool) or not isinstance(points, int | float)):
            raise HarnessError(f"{where}: rubric item {k}: points {points!r} is not a number")
        out.append({"criterion": c["criterion"].strip(), "points": points})
    return tuple(out)


def _looks_like_rubric(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(c, dict) and "criterion" in c for c in value)


def sample_rubric(entry: Mapping[str, Any]) -> Any:
    """Rubric items stored with a sample, wherever the task put them; None if none."""
    meta = entry.get("metadata") or {}
    score_meta = (entry.get("score") or {}).get("metadata") or {}
    for candidate in (meta.get("rubric"), score_meta.get("rubric"), score_meta.get("references"), entry.get("target"),
                      meta.get("references")):
        if _looks_like_rubric(candidate):
            return candidate
    return None


def read_rubric_file(path: Path) -> dict[tuple[str | None, str], tuple[dict[str, Any], ...]]:
    out = {}
    for lineno, rec in _jsonl(path):
        if "sample_id" not in rec:
            raise HarnessError(f"{path}:{lineno}: missing field 'sample_id'")
        task = rec.get("task")
        out[(None if task is None else str(task), str(rec["sample_id"]))] = check_rubric(rec.get("rubric"),
                                                                                        f"{path}:{lineno}")
    return out


def _check_expected(protocol: HumanProtocol, expected: Any, rubric: Sequence[Any], dimensions: Sequence[str],
                    where: str) -> dict[str, Any]:
    if not isinstance(expected, dict) or not expected:
        raise HarnessError(f"{where}: 'expected' must be a non-empty object")
    out: dict[str, Any] = {}
    for key, value in expected.items():
        if protocol.name == "pointwise":
            if key not in dimensions:
                raise HarnessError(f"{where}: expected dimension {key!r} is not asked in this campaign")
            low, high = (value, value) if isinstance(value, int) else (value[0], value[1]) \
                if isinstance(value, list) and len(value) == 2 else (None, None)
            if not all(isinstance(v, int) and SCALE[0] <= v <= SCALE[1] for v in (low, high)):
                raise HarnessError(f"{where}: expected {key}: {value!r} is not a score or [low, high] in 1-5")
            out[key] = [low, high]
        elif protocol.name == "pairwise":
            if key not in dimensions:
                raise HarnessError(f"{where}: expected criterion {key!r} is not asked in this campaign")
            if value not in (0, 1, 2):
                raise HarnessError(f"{where}: expected {key}: {value!r} is not 1, 2 or 0 (tie)")
            out[key] = {1: "x", 2: "y", 0: "tie"}[value]
        elif protocol.name == "rubric":
            if not (str(key).isdigit() and int(key) < len(rubric)) or value not in ("met", "not_met"):
                raise HarnessError(f"{where}: expected {key!r}: {value!r} (a criterion index and met / not_met)")
            out[str(int(key))] = value
        else:
            raise HarnessError(f"{where}: a {protocol.name} campaign has no gold items")
    return out


def read_gold(path: Path, protocol: HumanProtocol, dimensions: Sequence[str]) -> list[ItemDraft]:
    drafts = []
    for lineno, rec in _jsonl(path):
        where = f"{path}:{lineno}"
        answers = rec.get("answers")
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise HarnessError(f"{where}: 'answers' must be a list of texts")
        n = len(answers)
        if n < protocol.min_answers or (protocol.max_answers is not None and n > protocol.max_answers):
            raise HarnessError(f"{where}: a {protocol.name} item has {protocol.min_answers}"
                               f"{'' if protocol.max_answers == protocol.min_answers else '+'} answer(s), not {n}")
        rubric = check_rubric(rec.get("rubric"), where) if protocol.name == "rubric" else ()
        expected = _check_expected(protocol, rec.get("expected"), rubric, dimensions, where)
        if "prompt" not in rec:
            raise HarnessError(f"{where}: missing field 'prompt'")
        drafts.append(ItemDraft(
            "gold", None, str(rec.get("id", f"gold-{lineno}")), rec["prompt"],
            tuple(Answer(a, "gold", "gold", "gold item", "gold") for a in answers), rubric, expected,
        ))
    if not drafts:
        raise HarnessError(f"{path}: no gold items")
    return drafts


def _answer(run: Any, key: tuple[str, str]) -> Answer | None:
    out = run.outputs.get(key)
    if out is None or out.text is None:
        return None
    return Answer(out.text, _run_key(run), run.record.run_id, run.model_name, run.model_fingerprint)


def _run_key(run: Any) -> str:
    from leaderboard.entries import run_key

    return str(run_key(run.record))


def build_items(spec: CampaignSpec, runs: Sequence[Any]) -> list[ItemDraft]:
    """The campaign's items (gold ones excluded) from loaded runs (judges.runs.JudgedRun)."""
    from harness.run.folder import RunFolder
    from judges.runs import common_outputs

    protocol = PROTOCOLS.get(spec.protocol)
    if len(runs) < protocol.min_answers:
        raise HarnessError(f"a {protocol.name} campaign needs at least {protocol.min_answers} runs, got {len(runs)}")
    keys = common_outputs(runs)
    if spec.limit is not None:
        keys = keys[: spec.limit]
    first = runs[0]
    drafts: list[ItemDraft] = []

    def base(key: tuple[str, str], answers: Sequence[Answer], rubric: tuple[dict[str, Any], ...] = ()) -> ItemDraft:
        return ItemDraft("item", key[0], key[1], first.outputs[key].prompt, tuple(answers), rubric,
                         task_fingerprint=first.record.tasks[key[0]].task_fingerprint)

    if protocol.name == "pointwise":
        for key in keys:
            drafts += [base(key, [a]) for run in runs if (a := _answer(run, key)) is not None]
    elif protocol.name == "rubric":
        fallback = read_rubric_file(Path(spec.rubric)) if spec.rubric else {}
        for run in runs:
            samples = RunFolder(run.path).read_samples()
            for key in keys:
                a = _answer(run, key)
                if a is None:
                    continue
                entry = samples.get(key[0], {}).get(key[1], {})
                task = run.record.tasks[key[0]].task
                raw = sample_rubric(entry)
                where = f"{run.path}: sample {key[1]}"
                if raw is None:
                    raw = next((fallback[k] for k in ((key[0], key[1]), (task, key[1]), (None, key[1]))
                                if k in fallback), None)
                    where = f"{spec.rubric}: sample {key[1]}"
                if raw is not None:
                    drafts.append(base(key, [a], check_rubric(list(raw), where)))
        if not drafts:
            raise HarnessError("no sample of these runs carries rubric items (metadata 'rubric' or a "
                               "list of {criterion, points} in its references); pass --rubric FILE")
    else:  # pairwise: every pair of runs; case-study: all runs together
        groups = list(itertools.combinations(runs, 2)) if protocol.name == "pairwise" else [tuple(runs)]
        for group in groups:
            for key in keys:
                answers = [_answer(run, key) for run in group]
                if all(a is not None for a in answers):
                    drafts.append(base(key, [a for a in answers if a is not None]))
    if not drafts:
        raise HarnessError("these runs give no item to annotate (no stored outputs they share)")
    return drafts


def make_spec(name: str, runs: Sequence[Path | str], protocol: str, *, dimensions: Sequence[str] = (),
              per_item: int = 2, items_per_annotator: int | None = None, roles: Sequence[str] = (),
              tasks: Sequence[str] = (), limit: int | None = None, seed: int = 0, gold: Path | None = None,
              rubric: Path | None = None) -> CampaignSpec:
    """A validated spec with defaults filled in (dimensions, roles per protocol)."""
    p = PROTOCOLS.get(protocol)
    dims = p.check_dimensions(list(dimensions)) if dimensions else p.default_dimensions()
    if p.name == "pairwise" and not dimensions:
        dims = [OVERALL]
    chosen = list(roles) or list(p.default_roles)
    for r in chosen:
        if r not in ROLES or r == "admin":
            raise HarnessError(f"role {r!r} cannot annotate; use expert or lay")
    return CampaignSpec(
        name=name, protocol=p.name, runs=[str(Path(r).resolve()) for r in runs], tasks=list(tasks),
        dimensions=dims, per_item=per_item, items_per_annotator=items_per_annotator, roles=chosen, limit=limit,
        seed=seed, gold=str(Path(gold).resolve()) if gold else None,
        gold_sha256=_file_sha(Path(gold)) if gold and Path(gold).is_file() else None,
        rubric=str(Path(rubric).resolve()) if rubric else None,
        rubric_sha256=_file_sha(Path(rubric)) if rubric and Path(rubric).is_file() else None,
    )


def load_drafts(spec: CampaignSpec) -> tuple[list[ItemDraft], list[Any]]:
    """Items and gold items of a spec, and the loaded runs."""
    from judges.runs import load_run

    runs = [load_run(Path(r), spec.tasks) for r in spec.runs]
    drafts = build_items(spec, runs)
    if spec.gold:
        drafts += read_gold(Path(spec.gold), PROTOCOLS.get(spec.protocol), spec.dimensions)
    return drafts, runs
