"""A jury of rubric graders over stored rubric runs (`harness judge rubric RUN... --judge M ...`).

Each grader independently decides every rubric item of every stored response of the runs'
rubric tasks (the responses and rubrics are read back from samples.jsonl; nothing is
regenerated). Per grader and example, the HealthBench score (harness.scoring.rubric); an example
whose items were not all graded is unscored for that grader (or, with `partial`, scored on the
graded ones) and counted as that grader's failure. The scores go to judges.jury.combine: per
grader and per run the clipped mean, the jury, Krippendorff's alpha (interval) across graders,
leave-one-grader-out Kendall's tau of the run ranking, and same-family flags (grader model vs
the run's model).

A jury inside one run (`harness run --grader-model A --grader-model B`, harness.protocols.rubric)
grades as it scores, with per-grader scores, failures and alpha in the run's record; the rank
stability needs several candidate runs, so it stays here. A run graded by such a jury reads
back like any rubric run (its `grades` keep the items).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.folder import RunFolder
from harness.scoring.cost import RoleUsage
from harness.scoring.intervals import MetricValue
from harness.scoring.rubric import RubricItem, clipped_mean, score_example
from harness.types import Message, stable_hash
from judges.judge import Progress
from judges.jury import JudgeScores, JuryReport, combine
from judges.results import judge_role, judge_usage
from judges.rubric_grader import GradeQuery, RubricGrader


@dataclass(frozen=True)
class StoredExample:
    run: str  # candidate key: the run's folder name
    key: str  # task key / sample id
    conversation: tuple[Message, ...]
    response: str
    items: tuple[RubricItem, ...]
    example_tags: tuple[str, ...]


def read_rubric_run(path: Path, tasks: Sequence[str] = ()) -> tuple[str, str, list[StoredExample]]:
    """(model name, candidate key, examples) of a run's rubric tasks graded on model responses."""
    folder = RunFolder(path)
    record = json.loads(folder.record_path.read_text(encoding="utf-8"))
    name = folder.path.name
    out = []
    for task_key, entries in sorted(folder.read_samples().items()):
        if tasks and not any(task_key == t or task_key.split("|")[0] == t for t in tasks):
            continue
        for sample_id, e in sorted(entries.items()):
            meta = (e.get("score") or {}).get("metadata") or {}
            if "grades" not in meta or meta.get("response_source") != "model" or not isinstance(e.get("prompt"), list):
                continue
            conversation = tuple(Message(m["role"], m["content"]) for m in e["prompt"] if m["role"] != "system")
            items = tuple(RubricItem(g["criterion"], float(g["points"]), tuple(g["tags"])) for g in meta["grades"])
            out.append(StoredExample(name, f"{task_key}/{sample_id}", conversation, meta["output"], items,
                                     tuple(meta.get("example_tags", ()))))
    if not out:
        raise HarnessError(f"{path}: no rubric-graded model responses (run rubric tasks with --grader-model first)")
    return str((record.get("model") or {}).get("name", "?")), name, out


def _clipped(name: str, values: Sequence[float | None]) -> MetricValue:
    c = clipped_mean(values)
    return MetricValue(name, c.value, c.ci_low, c.ci_high, c.n_scored, c.n_unscored,
                       "none" if c.value is None else "bootstrap-clipped-mean")


@dataclass(frozen=True)
class RubricJury:
    report: JuryReport
    ungraded_items: dict[str, int]  # grader -> items it could not grade
    graders: list[dict[str, Any]]  # each grader's info (fingerprint, model)
    fingerprint: str
    usage: tuple[RoleUsage, ...] = ()  # tokens in and out per model grader (role judge, judge_2, ... by position)

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "graders": self.graders, "ungraded_items": self.ungraded_items,
                **self.report.to_json()}

    def markdown(self) -> str:
        lines = [f"| {g} | {n} |" for g, n in self.ungraded_items.items()]
        return (f"Rubric jury: {len(self.graders)} graders, {len(self.report.candidates)} runs, "
                f"{self.report.details.get('n_items')} examples; scores are HealthBench clipped means; a "
                "grader's failure is an example it left unscored.\n\n" + self.report.markdown()
                + "\n| grader | ungraded items |\n|---|---|\n" + "\n".join(lines) + "\n")


def jury_grade(runs: Sequence[Path], graders: Sequence[RubricGrader], *, tasks: Sequence[str] = (),
               partial: bool = False, progress: Progress | None = None) -> RubricJury:
    models: dict[str, str] = {}
    examples: list[StoredExample] = []
    for path in runs:
        model, key, got = read_rubric_run(path, tasks)
        if key in models:
            raise HarnessError(f"two runs share the folder name {key!r}")
        models[key] = model
        examples += got
    queries = [GradeQuery(f"{ex.run}/{ex.key}/{k}", ex.conversation, ex.response, item)
               for ex in examples for k, item in enumerate(ex.items)]
    scores, ungraded, infos, usages = [], {}, [], []
    for position, g in enumerate(graders):
        decisions = g.grade(queries, progress)
        pos = 0
        per: dict[tuple[str, str], float | None] = {}
        for ex in examples:
            met = [d.met for d in decisions[pos:pos + len(ex.items)]]
            pos += len(ex.items)
            per[(ex.run, ex.key)] = score_example(ex.items, met, ex.example_tags, partial=partial).score
        ungraded[g.name] = sum(d.met is None for d in decisions)
        info = dict(g.info())
        usage = getattr(g, "usage", None)
        if usage is not None:  # tokens in and out of this grader's requests (for its cost)
            info["usage"] = dict(usage.__dict__)
        infos.append(info)
        if not info.get("scripted"):  # a model grader: its tokens, for the cost
            usages.append(judge_usage(judge_role(position), str(info.get("model_label", g.name)), decisions))
        scores.append(JudgeScores(g.name, per, model=str(info.get("model_label", g.name)),
                                  fingerprint=str(info.get("fingerprint", ""))))
    report = combine(scores, models, aggregate=_clipped)
    fingerprint = stable_hash({"graders": [i.get("fingerprint") for i in infos], "runs": sorted(models),
                               "partial": partial, "n": len(queries)})
    return RubricJury(report, ungraded, infos, fingerprint, tuple(usages))
