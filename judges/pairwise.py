"""Pairwise judging of two runs: on every sample both runs answered, the judge compares the two
outputs in both orders (judges.pairs). Reports run A's win / tie / loss rates with Wilson CIs,
the share of order-stable verdicts and the judge's first-position preference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.scoring.cost import RoleUsage
from harness.types import stable_hash
from judges.judge import Progress
from judges.pairs import PairJudge, PairOutcome, PairQuery, PairStats, judge_pairs, pair_stats
from judges.prompt import render_conversation
from judges.results import (
    JUDGE_PAIRWISE,
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
from judges.runs import JudgedRun, common_outputs
from leaderboard.store import GenericResult


def run_label(run: JudgedRun) -> str:
    return f"{run.model_name} [{run.path.name}]"


@dataclass(frozen=True)
class PairwiseReport:
    run_a: JudgedRun
    run_b: JudgedRun
    judge_info: dict[str, Any]
    fingerprint: str  # comparability: judge + tasks + the two models
    outcomes: list[PairOutcome]
    n_missing: int  # samples where a run has no output: not judged
    stats: PairStats
    folder: Path
    stem: str
    results: list[GenericResult]
    usage: tuple[RoleUsage, ...] = ()  # tokens in and out of a model judge, both orders; () for a baseline

    @property
    def results_path(self) -> Path:
        return self.folder / f"{self.stem}.json"

    def markdown(self) -> str:
        s = self.stats
        rows = [
            [f"{run_label(self.run_a)} wins", fmt(s.win)],
            ["tie (incl. order-dependent)", fmt(s.tie)],
            [f"{run_label(self.run_b)} wins", fmt(s.loss)],
            ["consistency (order-stable verdicts)", fmt(s.consistency)],
            ["first-position preference", fmt(s.first_position)],
        ]
        head = (f"Pairwise judge {self.judge_info['model_label']} (fingerprint {self.judge_info['fingerprint'][:12]}): "
                f"{s.n} pairs judged in both orders, {s.n_unscored} unscored, {self.n_missing} without an output\n\n")
        return head + markdown_table(["", "rate [95% CI]"], rows)


def run_pairwise(run_a: JudgedRun, run_b: JudgedRun, judge: PairJudge,
                 progress: Progress | None = None) -> PairwiseReport:
    keys = common_outputs([run_a, run_b])
    queries, missing = [], 0
    for key in keys:
        a, b = run_a.outputs[key], run_b.outputs[key]
        if a.text is None or b.text is None:
            missing += 1
            continue
        queries.append(PairQuery(f"{key[0]}/{key[1]}", render_conversation(a.prompt), a.text, b.text))
    outcomes = judge_pairs(judge, queries, progress)
    stats = pair_stats(outcomes)
    info = judge.info()
    jfp = info["fingerprint"]
    tasks = run_a.task_fingerprints()
    tasks = {k: v for k, v in tasks.items() if any(k == t for t, _ in keys)}
    fingerprint = stable_hash({"judge": jfp, "tasks": tasks,
                               "models": sorted([run_a.model_fingerprint, run_b.model_fingerprint])})
    folder = run_a.judgements_dir(jfp)
    stem = f"pairwise-{run_b.record.run_id}"
    source = folder / f"{stem}.json"
    results = []
    for me, other, win, loss in ((run_a, run_b, stats.win, stats.loss), (run_b, run_a, stats.loss, stats.win)):
        details = {"opponent": other.model_name, "opponent_fingerprint": other.model_fingerprint,
                   "tie_rate": stats.tie.value, "loss_rate": loss.value, "consistency": stats.consistency.value,
                   "first_position_rate": stats.first_position.value, "judge_fingerprint": jfp,
                   "judge_model": info["model_label"], "tasks": sorted(tasks), "run_id": me.record.run_id}
        results.append(generic(JUDGE_PAIRWISE, "win_rate", me.model_name, me.model_fingerprint, fingerprint, win,
                               source, details))
    usage = () if judge.usage() is None else (
        judge_usage(judge_role(0), str(info["model_label"]),
                    [v.judgement for o in outcomes for v in (o.forward, o.backward)]),)
    return PairwiseReport(run_a, run_b, info, fingerprint, outcomes, missing, stats, folder, stem, results, usage)


def write_pairwise(report: PairwiseReport) -> Path:
    """judge.json, the per-pair verdicts (both orders, raw replies), the results file and its
    .tokens.json (the judge's tokens) in run A's judgements folder; returns the results file."""
    write_json(report.folder / "judge.json", report.judge_info)
    write_jsonl(report.folder / f"{report.stem}.jsonl",
                [{"run_a": str(report.run_a.path), "run_b": str(report.run_b.path), **o.to_json()}
                 for o in report.outcomes])
    write_json(report.folder / f"{report.stem}.summary.json", {
        "run_a": str(report.run_a.path), "run_b": str(report.run_b.path), "fingerprint": report.fingerprint,
        "n_missing": report.n_missing, **report.stats.to_json(),
    })
    (report.folder / f"{report.stem}.md").write_text(report.markdown(), encoding="utf-8")
    write_tokens(report.results_path, report.usage)
    return write_results(report.results_path, report.results)
