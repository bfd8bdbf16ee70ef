"""Pointwise judging: per sample of a run, one integer score per dimension (doctor-like,
patient-friendly, professional, safe, fluent, proactive, helpful) on the prompt's scale; per
dimension the mean with a seeded bootstrap CI over scored samples. Unscored samples (no output,
a reply that did not parse twice, a failed request) are counted, never averaged in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.scoring.cost import RoleUsage
from harness.scoring.intervals import MetricValue, mean_with_ci
from harness.types import Message, stable_hash
from judges.judge import Judge, Judgement, Progress
from judges.prompt import Fence, render_conversation
from judges.results import (
    JUDGE_POINTWISE,
    fmt,
    generic,
    judge_role,
    judge_usage,
    markdown_table,
    write_json,
    write_jsonl,
    write_results,
    write_tokens,
)
from judges.runs import JudgedRun, Output
from leaderboard.store import GenericResult


def _fields(judge: Judge, conversation: str, answer: str, reference: str | None) -> dict[str, str]:
    fence = Fence([conversation, answer, reference or ""])
    ref = judge.prompt.reference_block(fence("REFERENCE", reference)) if reference is not None else ""
    return {"nonce": fence.nonce, "conversation": fence("CONVERSATION", conversation),
            "answer": fence("DOCTOR REPLY", answer), "reference": ref}


def pointwise_messages(judge: Judge, conversation: str, answer: str,
                       reference: str | None = None) -> tuple[Message, ...]:
    examples = [(_fields(judge, ex.fields["conversation"], ex.fields["answer"], ex.fields.get("reference")), ex.reply)
                for ex in judge.prompt.examples]
    return judge.prompt.messages(_fields(judge, conversation, answer, reference), examples)


@dataclass(frozen=True)
class PointwiseReport:
    run: JudgedRun
    judge_info: dict[str, Any]
    fingerprint: str  # comparability: judge + judged tasks + reference on/off
    dimensions: dict[str, MetricValue]
    samples: list[dict[str, Any]]
    scale: tuple[int, int]
    folder: Path
    stem: str  # file name stem: pointwise, or pointwise-ref with the reference shown
    results: list[GenericResult]
    usage: tuple[RoleUsage, ...] = ()  # tokens in and out of the judge (judges.results.judge_usage)

    @property
    def results_path(self) -> Path:
        return self.folder / f"{self.stem}.json"

    @property
    def n_unscored(self) -> int:
        return sum(s["scores"] is None for s in self.samples)

    def markdown(self) -> str:
        rows = [[d, fmt(v, 2), str(v.n_scored), str(v.n_unscored)] for d, v in self.dimensions.items()]
        head = (f"Pointwise judge {self.judge_info['model_label']} (fingerprint {self.judge_info['fingerprint'][:12]}) "
                f"on {self.run.model_name} ({self.run.path}), scale {self.scale[0]}-{self.scale[1]}, "
                f"{len(self.samples)} samples, {self.n_unscored} unscored\n\n")
        return head + markdown_table(["dimension", "mean [95% CI]", "n", "unscored"], rows)


def scale_mean_with_ci(name: str, values: Sequence[float | None]) -> MetricValue:
    """Mean of scale scores with a bootstrap CI: never a Wilson interval (a column of 1s on a
    1-5 scale is not a proportion)."""
    return mean_with_ci(name, values, proportion=False)


def judge_outputs(judge: Judge, outputs: Sequence[Output], *, reference: bool = False,
                  progress: Progress | None = None) -> list[Judgement | None]:
    """One judgement per output; None where the run has no output to judge."""
    todo = [o for o in outputs if o.text is not None]
    msgs = [pointwise_messages(judge, render_conversation(o.prompt), o.text or "",
                               (o.references[0] if o.references else None) if reference else None) for o in todo]
    got = dict(zip([(o.task_key, o.sample_id) for o in todo], judge.judge(msgs, progress), strict=True))
    return [got.get((o.task_key, o.sample_id)) for o in outputs]


def run_pointwise(run: JudgedRun, judge: Judge, *, reference: bool = False,
                  progress: Progress | None = None) -> PointwiseReport:
    if judge.prompt.kind != "pointwise":
        raise HarnessError(f"prompt {judge.prompt.name!r} is a {judge.prompt.kind} prompt, not pointwise")
    assert judge.prompt.scale is not None
    outputs = list(run.outputs.values())
    judgements = judge_outputs(judge, outputs, reference=reference, progress=progress)
    info = judge.info()
    jfp = info["fingerprint"]
    samples = []
    for o, j in zip(outputs, judgements, strict=True):
        row: dict[str, Any] = {"task_key": o.task_key, "sample_id": o.sample_id, "index": o.index, "judge": jfp}
        if j is None:
            row.update(scores=None, error="the run has no output for this sample", raw=[], attempts=0)
        else:
            row.update(scores=j.values, **{k: v for k, v in j.to_json().items() if k != "values"})
        samples.append(row)
    dims = {d: scale_mean_with_ci(d, [None if s["scores"] is None else float(s["scores"][d]) for s in samples])
            for d in judge.prompt.dimensions}
    tasks = run.task_fingerprints()
    fingerprint = stable_hash({"judge": jfp, "tasks": tasks, "reference": reference})
    folder = run.judgements_dir(jfp)
    stem = "pointwise-ref" if reference else "pointwise"
    details = {"scale": list(judge.prompt.scale), "judge_fingerprint": jfp, "judge_model": info["model_label"],
               "prompt": judge.prompt.name, "tasks": sorted(tasks), "reference": reference, "run_id": run.record.run_id}
    results = [generic(JUDGE_POINTWISE, d, run.model_name, run.model_fingerprint, fingerprint, v,
                       folder / f"{stem}.json", details) for d, v in dims.items()]
    usage = (judge_usage(judge_role(0), str(info["model_label"]), [j for j in judgements if j is not None]),)
    return PointwiseReport(run, info, fingerprint, dims, samples, judge.prompt.scale, folder, stem, results, usage)


def write_pointwise(report: PointwiseReport) -> Path:
    """judge.json, pointwise.jsonl (per sample), pointwise.json (results) and pointwise.tokens.json
    (the judge's tokens) in the run's judgements folder; returns the results file."""
    write_json(report.folder / "judge.json", report.judge_info)
    write_jsonl(report.folder / f"{report.stem}.jsonl", report.samples)
    (report.folder / f"{report.stem}.md").write_text(report.markdown(), encoding="utf-8")
    write_tokens(report.results_path, report.usage)
    return write_results(report.results_path, report.results)
