"""The stored outputs of a finished run, as judges see them: per generative sample the prompt,
the model's text (score.metadata.output) and the references. Nothing is regenerated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.folder import RunFolder
from harness.run.records import RunRecord, read_record


@dataclass(frozen=True)
class Output:
    task_key: str
    sample_id: str
    index: int
    prompt: Any  # the stored context string or chat messages
    text: str | None  # None: the run could not produce it (its request failed)
    references: tuple[str, ...]


@dataclass(frozen=True)
class JudgedRun:
    path: Path
    record: RunRecord
    outputs: dict[tuple[str, str], Output]  # (task key, sample id) -> output, in task order

    @property
    def model_name(self) -> str:
        return self.record.model.name

    @property
    def model_fingerprint(self) -> str:
        return self.record.model.fingerprint

    def task_fingerprints(self) -> dict[str, str]:
        keys = {k for k, _ in self.outputs}
        return {k: self.record.tasks[k].task_fingerprint for k in sorted(keys)}

    def judgements_dir(self, judge_fingerprint: str) -> Path:
        return self.path / "judgements" / judge_fingerprint[:12]


def load_run(path: Path, tasks: Sequence[str] = ()) -> JudgedRun:
    """A finished run's generative outputs; `tasks` (task names or task keys) narrows them."""
    folder = RunFolder(Path(path)).path
    record = read_record(folder)
    if record.status != "finished":
        raise HarnessError(f"{folder}: run status is {record.status!r}; judge finished runs only")
    entries = RunFolder(folder).read_samples()
    wanted = set(tasks)
    outputs: dict[tuple[str, str], Output] = {}
    for task_key, by_id in entries.items():
        if task_key not in record.tasks:
            continue
        if wanted and task_key not in wanted and record.tasks[task_key].task not in wanted:
            continue
        for sid, e in sorted(by_id.items(), key=lambda kv: int(kv[1].get("index") or 0)):
            meta = e["score"].get("metadata") or {}
            if "output" not in meta and not meta.get("request_failed"):
                continue  # not a generative task: nothing to judge
            text = meta.get("output")
            refs = meta.get("references") or ([] if e.get("target") is None else [e["target"]])
            outputs[(task_key, sid)] = Output(task_key, sid, int(e.get("index") or 0), e.get("prompt"),
                                              None if text is None else str(text), tuple(str(r) for r in refs))
    if not outputs:
        which = f" for tasks {', '.join(sorted(wanted))}" if wanted else ""
        raise HarnessError(f"{folder}: no generated outputs to judge{which} (tasks: {', '.join(record.tasks)})")
    return JudgedRun(folder, record, outputs)


def common_outputs(runs: Sequence[JudgedRun]) -> list[tuple[str, str]]:
    """The (task key, sample id) pairs every run holds, after checking that their tasks are
    the same (equal task fingerprints): outputs of different prompts or data are not rivals."""
    first = runs[0]
    keys = set(first.outputs)
    for other in runs[1:]:
        keys &= set(other.outputs)
    tasks = sorted({k for k, _ in keys})
    for task_key in tasks:
        fps = {r.record.tasks[task_key].task_fingerprint for r in runs}
        if len(fps) > 1:
            raise HarnessError(
                f"task {task_key}: the runs' task fingerprints differ ({', '.join(sorted(f[:12] for f in fps))}); "
                "their outputs answer different prompts or data and are not compared"
            )
    if not keys:
        raise HarnessError("the runs share no judged samples: " + ", ".join(str(r.path) for r in runs))
    return sorted(keys, key=lambda k: (k[0], first.outputs[k].index))
