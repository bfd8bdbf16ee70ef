"""Judge calibration against a campaign's own human labels (`harness judge calibrate
--human-campaign NAME`).

- Pairwise campaigns go through the existing study (judges.calibration.run_study): the judge
  and the baselines see each pair in both orders and are scored on agreement (with and
  without ties), Cohen's kappa, Krippendorff's alpha, position and length bias. Labels map to
  the study's codes: the item's first answer 1, the second 2, tie and "both bad" 0 (the LLM
  judge has no "both bad"). One annotation column per annotator, None where they did not
  label an item; the human label of an item is the majority of the labels it has.
- Pointwise campaigns: the pointwise judge scores the same answers; per dimension, Spearman's
  rho and the mean absolute difference against the humans' mean, and Krippendorff's alpha
  (ordinal) with the judge as one more rater.
- Rubric campaigns: `rubric_agreement` compares a grader's met / not-met decisions with the
  humans', criterion by criterion.
Gold items are left out. Results can be stored (kind "judge_human_agreement") so the
leaderboard shows each judge with its measured agreement with these humans.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.scoring.intervals import MetricValue, mean_with_ci
from harness.types import stable_hash
from judges.human.annotations import AnnotationStore
from judges.human.campaigns import prompt_text
from judges.human.entities import Campaign, Item, Label
from judges.human.exports import majority
from judges.human.protocols import OVERALL
from judges.human.report import alpha

JUDGE_HUMAN_AGREEMENT = "judge_human_agreement"
_PAIR_CODE = {"x": 1, "y": 2, "tie": 0, "both_bad": 0}


def _load(store: str | Path | AnnotationStore, name: str) -> tuple[Campaign, dict[int, Item], list[Label]]:
    db = store if isinstance(store, AnnotationStore) else AnnotationStore(store)
    try:
        campaign = db.campaign(name)
        items = {i.item_id: i for i in db.items(campaign)}
        labels = [lab for lab in db.labels(campaign) if not items[lab.item_id].is_gold]
    finally:
        if db is not store:
            db.close()
    return campaign, items, labels


def human_pairwise_items(store: str | Path | AnnotationStore, name: str, *, criterion: str = OVERALL,
                         role: str | None = None) -> tuple[Any, list[Any]]:
    """(CalibrationDataset, CalibrationItems) of a pairwise campaign, for run_study."""
    from judges.calibration import CalibrationDataset, CalibrationItem

    campaign, items, labels = _load(store, name)
    if campaign.protocol_name != "pairwise":
        raise HarnessError(f"campaign {name!r} is {campaign.protocol_name}; pairwise calibration needs a "
                           "pairwise campaign")
    labels = [lab for lab in labels if criterion in lab.values and (role is None or lab.role == role)]
    if not labels:
        who = f" by {role} annotators" if role else ""
        raise HarnessError(f"campaign {name!r} has no labels{who} for {criterion!r} yet")
    raters = sorted({lab.annotator for lab in labels})
    by_item: dict[int, dict[str, int]] = defaultdict(dict)
    for lab in labels:
        by_item[lab.item_id][lab.annotator] = _PAIR_CODE[str(lab.values[criterion])]
    out = []
    for item_id in sorted(by_item, key=lambda i: items[i].ordinal):
        item = items[item_id]
        a, b = item.payload["answers"]
        out.append(CalibrationItem(f"{name}-{item.item_key[:12]}", prompt_text(item.payload["prompt"]), a["text"],
                                   b["text"], tuple(by_item[item_id].get(r) for r in raters)))
    desc = (f"human campaign {name}: {len(out)} pairs, {len(raters)} annotator(s)"
            f"{', ' + role if role else ''}, criterion {criterion}; both bad counts as tie")
    ds = CalibrationDataset(f"human-{name}", f"store campaign {name} ({campaign.fingerprint[:12]})", "human", desc)
    return ds, out


def calibrate_pairwise(store: str | Path | AnnotationStore, name: str, judge: Any, *, criterion: str = OVERALL,
                       role: str | None = None, seed: int = 0, progress: Any = None) -> Any:
    """The existing calibration table (judges.calibration.CalibrationReport) on the campaign's
    labels; `judge` is a PairJudge (judges.pairs.LLMPairJudge) or None for the baselines."""
    from judges.calibration import run_study

    ds, items = human_pairwise_items(store, name, criterion=criterion, role=role)
    return run_study(ds, items, judge, seed=seed, progress=progress)


@dataclass(frozen=True)
class PointwiseCalibration:
    campaign: str
    judge_info: dict[str, Any]
    rows: list[dict[str, Any]]  # per dimension
    n_items: int
    n_unscored: int

    def markdown(self) -> str:
        from judges.results import markdown_table

        def num(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        rows = [[r["dimension"], str(r["n"]), num(r["spearman"]), num(r["mean_abs_diff"]), num(r["alpha"]),
                 num(r["judge_mean"]), num(r["human_mean"])] for r in self.rows]
        head = (f"Pointwise judge {self.judge_info.get('model_label')} (fingerprint "
                f"{str(self.judge_info.get('fingerprint'))[:12]}) against campaign {self.campaign}: "
                f"{self.n_items} answers, {self.n_unscored} unscored by the judge.\n\n")
        return head + markdown_table(["dimension", "n", "Spearman ρ", "mean |judge − human|",
                                      "Krippendorff α (humans + judge)", "judge mean", "human mean"], rows)

    def to_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "judge": self.judge_info, "rows": self.rows, "n_items": self.n_items,
                "n_unscored": self.n_unscored}


def calibrate_pointwise(store: str | Path | AnnotationStore, name: str, judge: Any, *, role: str | None = None,
                        progress: Any = None) -> PointwiseCalibration:
    """A pointwise judge (judges.judge.Judge with a pointwise prompt) on the campaign's answers."""
    from scipy.stats import spearmanr

    from judges.pointwise import pointwise_messages
    from judges.prompt import render_conversation

    campaign, items, labels = _load(store, name)
    if campaign.protocol_name != "pointwise":
        raise HarnessError(f"campaign {name!r} is {campaign.protocol_name}; pointwise calibration needs a "
                           "pointwise campaign")
    labels = [lab for lab in labels if role is None or lab.role == role]
    if not labels:
        raise HarnessError(f"campaign {name!r} has no labels yet")
    judged = sorted({lab.item_id for lab in labels}, key=lambda i: items[i].ordinal)
    msgs = [pointwise_messages(judge, render_conversation(items[i].payload["prompt"]),
                               items[i].payload["answers"][0]["text"]) for i in judged]
    verdicts = dict(zip(judged, judge.judge(msgs, progress), strict=True))
    raters = sorted({lab.annotator for lab in labels})
    rows = []
    for dim in campaign.spec.dimensions:
        per = {(lab.annotator, lab.item_id): float(lab.values[dim]) for lab in labels if dim in lab.values}
        units = [i for i in judged if any((r, i) in per for r in raters)]
        if not units:
            continue
        human_mean = {i: sum(per[(r, i)] for r in raters if (r, i) in per) /
                      sum((r, i) in per for r in raters) for i in units}
        judge_score = {i: float(verdicts[i].values[dim]) for i in units
                       if verdicts[i].values is not None and dim in verdicts[i].values}
        both = [i for i in units if i in judge_score]
        rho = None
        if len(both) >= 3:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = spearmanr([judge_score[i] for i in both], [human_mean[i] for i in both]).statistic
            rho = None if r is None or math.isnan(float(r)) else float(r)
        matrix = [[per.get((r, i)) for i in units] for r in raters] + [[judge_score.get(i) for i in units]]
        rows.append({
            "dimension": dim, "n": len(both), "spearman": rho,
            "mean_abs_diff": (sum(abs(judge_score[i] - human_mean[i]) for i in both) / len(both)) if both else None,
            "alpha": alpha(matrix, "ordinal", [1.0, 2.0, 3.0, 4.0, 5.0]),
            "judge_mean": (sum(judge_score[i] for i in both) / len(both)) if both else None,
            "human_mean": sum(human_mean.values()) / len(human_mean),
        })
    return PointwiseCalibration(name, judge.info(), rows, len(judged),
                                sum(verdicts[i].values is None for i in judged))


@dataclass(frozen=True)
class RubricAgreement:
    n: int
    agreement: MetricValue
    kappa: float | None
    per_criterion: list[dict[str, Any]]


def human_rubric_decisions(store: str | Path | AnnotationStore, name: str) -> list[dict[str, Any]]:
    """Per (item, criterion): prompt, answer, criterion, points and the humans' majority
    decision (True = met; None where they split evenly)."""
    campaign, items, labels = _load(store, name)
    if campaign.protocol_name != "rubric":
        raise HarnessError(f"campaign {name!r} is {campaign.protocol_name}, not rubric")
    by: dict[tuple[int, str], list[str]] = defaultdict(list)
    for lab in labels:
        for k, v in lab.values.items():
            by[(lab.item_id, k)].append(str(v))
    out = []
    for (item_id, k), votes in sorted(by.items(), key=lambda kv: (items[kv[0][0]].ordinal, int(kv[0][1]))):
        item = items[item_id]
        crit = item.payload["rubric"][int(k)]
        m = majority(votes)
        out.append({"item_key": item.item_key, "sample_id": item.sample_id, "prompt": item.payload["prompt"],
                    "answer": item.payload["answers"][0]["text"], "criterion": crit["criterion"],
                    "points": crit.get("points"), "votes": votes, "met": None if m is None else m == "met"})
    return out


def rubric_agreement(store: str | Path | AnnotationStore, name: str,
                     grade: Callable[[dict[str, Any]], bool | None]) -> RubricAgreement:
    """A grader's decisions (grade(decision row) -> met?, None = grader failure, counted and
    left out) against the humans' majority, item by item and criterion by criterion."""
    from judges.agreement import cohen_kappa

    rows = [r for r in human_rubric_decisions(store, name) if r["met"] is not None]
    pairs = [(r, grade(r)) for r in rows]
    agree = [None if g is None else float(g == r["met"]) for r, g in pairs]
    per = [{"criterion": r["criterion"], "sample_id": r["sample_id"], "human": r["met"], "grader": g}
           for r, g in pairs]
    return RubricAgreement(len(rows), mean_with_ci("agreement", agree, proportion=True),
                           cohen_kappa([int(r["met"]) for r, _ in pairs],
                                       [None if g is None else int(g) for _, g in pairs]),
                           per)


def agreement_results(campaign: str, report: Any, *, criterion: str = OVERALL) -> list[Any]:
    """The judge's agreement with the campaign's humans as generic results for the store
    (kind judge_human_agreement, one per judge, baselines excluded)."""
    from leaderboard.entries import GenericResult

    info = report.judge_info
    if info is None or not report.rows or report.rows[0].baseline:
        return []
    row = report.rows[0]
    m = row.agreement
    return [GenericResult(
        kind=JUDGE_HUMAN_AGREEMENT, name=f"agreement with {campaign} humans ({criterion})",
        model_name=str(info.get("model_label")), model_fingerprint=str(info.get("model") or info["fingerprint"]),
        fingerprint=stable_hash([info["fingerprint"], report.data_fingerprint]), value=m.value,
        ci=(m.ci_low, m.ci_high), n=m.n_scored, n_unscored=m.n_unscored, source=f"campaign:{campaign}",
        details={"campaign": campaign, "criterion": criterion, "judge_fingerprint": info["fingerprint"],
                 "kappa": row.kappa, "alpha": row.alpha, "ci_method": m.ci_method,
                 "agreement_no_ties": row.agreement_no_ties.value})]


def calibrate_command(store: str, name: str, config: Any, *, prompt: str | Path | None = None,
                      criterion: str = OVERALL, role: str | None = None, seed: int = 0, output: Path | None = None,
                      publish: bool = False, progress: Callable[[str, int, int], Any] | None = None) -> str:
    """What `harness judge calibrate --human-campaign NAME` does: build the judge from
    `config` (judges.judge.JudgeConfig; None = baselines only), run the study that fits the
    campaign's protocol, write the tables (default runs/calibration/human-NAME-JUDGE) and, with
    `publish`, store the agreement. Returns the text to print."""
    from judges.calibration import write_calibration
    from judges.commands import _bar
    from judges.judge import Judge
    from judges.pairs import LLMPairJudge
    from judges.results import import_results, write_json

    with AnnotationStore(store) as db:
        campaign = db.campaign(name)
        if campaign.protocol_name == "pointwise":
            if config is None:
                raise HarnessError("a pointwise campaign has no baselines: name a judge")
            n = len({lab.item_id for lab in db.labels(campaign)})
            with Judge.create(config, prompt or "pointwise") as judge, _bar(progress, f"judge {name}", n) as tick:
                result = calibrate_pointwise(db, name, judge, role=role, progress=tick)
            folder = output or Path("runs") / "calibration" / f"human-{name}-{result.judge_info['fingerprint'][:12]}"
            write_json(folder / "calibration.json", result.to_json())
            (folder / "calibration.md").write_text(result.markdown(), encoding="utf-8")
            return result.markdown() + f"\nwritten: {folder / 'calibration.md'}, {folder / 'calibration.json'}\n"
        if config is None:
            report = calibrate_pairwise(db, name, None, criterion=criterion, role=role, seed=seed)
        else:
            n = len(human_pairwise_items(db, name, criterion=criterion, role=role)[1])
            with Judge.create(config, prompt or "pairwise") as judge, _bar(progress, f"judge {name}", 2 * n) as tick:
                report = calibrate_pairwise(db, name, LLMPairJudge(judge), criterion=criterion, role=role, seed=seed,
                                            progress=tick)
    folder = write_calibration(report, output)
    text = report.markdown() + f"\nwritten: {folder / 'calibration.md'}, {folder / 'calibration.json'}\n"
    if publish:
        results = agreement_results(name, report, criterion=criterion)
        text += f"store: {import_results(store, results)} new result(s) in {store}\n"
    return text
