"""HealthBench meta-evaluation: a rubric grader checked against physicians.

Rows in upstream's meta-evaluation schema (openai/simple-evals `healthbench_meta_eval.py`,
file `2025-05-07-06-14-12_oss_meta_eval.jsonl`): `prompt` (chat messages), `completion` (the
response), `rubric` (the criterion text), `binary_labels` (one met / not-met per physician),
`anonymized_physician_ids`, `category` (`cluster:*`), `prompt_id`, `completion_id`, `canary`.
Label-only projections of it (no prompt, completion, rubric; with `item_id` and `dataset`, like
shared/data/healthbench/meta_eval_physician_labels_gold120.jsonl) serve the physician ceiling.

Numbers, per rater:
- upstream's headline, `pairwise_*_f1_balanced`: every (rater label, other physician's label)
  pair counts; precision of "met" over pairs where the rater said met, recall over pairs where
  the other said met (likewise for "not met"); F1 per class; balanced F1 = their mean (None
  when a class is never predicted or never present; `compute_metrics_for_rater_by_class`);
- agreement with the physician majority (rows with a strict majority; a split is left out and
  counted) and Cohen's kappa against it;
- physicians (the ceiling): each physician's label against the *other* physicians' labels on
  the same row (leave one out), pooled over physicians, as upstream's "physician" rater; the
  mean of the per-physician balanced F1 (upstream keeps one value per physician) is given too,
  with the number of physicians it is defined for; Krippendorff's alpha across physicians.
Baselines (always met, never met, seeded random) go through the same code as the grader.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.scoring.intervals import MetricValue, format_value_ci, mean_with_ci
from harness.types import stable_hash
from judges.agreement import cohen_kappa as agreement_kappa
from judges.healthbench_rows import MetaRow, majority
from judges.judge import Progress
from judges.results import write_json, write_jsonl
from judges.rubric_grader import BASELINES, SCRIPTED, GradeDecision, GradeQuery, RubricGrader


@dataclass(frozen=True)
class PairwiseF1:
    """Upstream's `compute_metrics_for_rater_by_class` for one rater (values None = undefined)."""

    precision_pos: float | None
    precision_neg: float | None
    recall_pos: float | None
    recall_neg: float | None
    f1_pos: float | None
    f1_neg: float | None
    f1_balanced: float | None
    agreement: float | None  # share of agreeing (rater, other) pairs
    n_pairs: int
    n_precision_pos: int
    n_precision_neg: int
    n_recall_pos: int
    n_recall_neg: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ratio(hits: int, n: int) -> float | None:
    return hits / n if n else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    if precision == 0 and recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def pairwise_f1(self_preds: Sequence[bool], other_preds: Sequence[Sequence[bool]]) -> PairwiseF1:
    """Every (self, other) pair counts once; precision by the rater's label, recall by the other's."""
    if len(self_preds) != len(other_preds):
        raise ValueError(f"{len(self_preds)} labels but {len(other_preds)} lists of other labels")
    counts = {"pp": [0, 0], "pn": [0, 0], "rp": [0, 0], "rn": [0, 0]}  # [agreeing pairs, pairs]
    for s, others in zip(self_preds, other_preds, strict=True):
        for o in others:
            agree = int(s == o)
            for key in ("pp" if s else "pn", "rp" if o else "rn"):
                counts[key][0] += agree
                counts[key][1] += 1
    pp, pn, rp, rn = (_ratio(*counts[k]) for k in ("pp", "pn", "rp", "rn"))
    f1_pos, f1_neg = _f1(pp, rp), _f1(pn, rn)
    n_pairs = counts["pp"][1] + counts["pn"][1]
    return PairwiseF1(pp, pn, rp, rn, f1_pos, f1_neg,
                      None if f1_pos is None or f1_neg is None else (f1_pos + f1_neg) / 2,
                      _ratio(counts["pp"][0] + counts["pn"][0], n_pairs), n_pairs,
                      counts["pp"][1], counts["pn"][1], counts["rp"][1], counts["rn"][1])


def cohen_kappa(a: Sequence[bool | None], b: Sequence[bool | None]) -> float | None:
    """Kappa of met / not-met labels (judges.agreement's, on 0/1)."""
    return agreement_kappa([None if x is None else int(x) for x in a], [None if y is None else int(y) for y in b],
                           labels=(0, 1))


# -- raters --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetaRaterRow:
    """One rater (a grader, a baseline, or the physicians) against physician labels."""

    rater: str
    kind: str  # "grader" | "baseline" | "physicians"
    fingerprint: str
    n: int  # rows (physicians: labels) rated
    n_ungraded: int
    pairwise: PairwiseF1  # upstream's numbers (balanced F1 is the headline)
    majority_agreement: MetricValue  # vs the physician majority (physicians: of the others)
    majority_kappa: float | None
    n_no_majority: int  # left out of the majority numbers: a split vote
    pairwise_kappa: float | None  # kappa over every (rater, other physician) pair
    by_category: dict[str, float | None] = field(default_factory=dict)  # category -> balanced F1
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"rater": self.rater, "kind": self.kind, "fingerprint": self.fingerprint, "n": self.n,
                "n_ungraded": self.n_ungraded, "pairwise": self.pairwise.to_json(),
                "balanced_f1": self.pairwise.f1_balanced,
                "majority_agreement": self.majority_agreement.to_json(), "majority_kappa": self.majority_kappa,
                "n_no_majority": self.n_no_majority, "pairwise_kappa": self.pairwise_kappa,
                "by_category_balanced_f1": dict(self.by_category), **dict(self.extra)}


def _by_category(cats: Sequence[str], preds: Sequence[bool],
                 others: Sequence[Sequence[bool]]) -> dict[str, float | None]:
    groups: dict[str, tuple[list[bool], list[Sequence[bool]]]] = defaultdict(lambda: ([], []))
    for c, p, o in zip(cats, preds, others, strict=True):
        groups[c][0].append(p)
        groups[c][1].append(o)
    return {c: pairwise_f1(p, o).f1_balanced for c, (p, o) in sorted(groups.items())}


def rater_row(name: str, kind: str, fingerprint: str, rows: Sequence[MetaRow],
              preds: Sequence[bool | None]) -> MetaRaterRow:
    """A grader's (or baseline's) decisions, one per row (None = ungraded, left out)."""
    kept = [(r, p) for r, p in zip(rows, preds, strict=True) if p is not None]
    self_preds = [p for _, p in kept]
    others = [list(r.labels) for r, _ in kept]
    pw = pairwise_f1(self_preds, others)
    maj = [r.majority for r in rows]
    agree: list[float | None] = [None if p is None or m is None else float(p == m) for p, m in zip(preds, maj,
                                                                                                     strict=True)]
    pair_a = [p for r, p in kept for _ in r.labels]
    pair_b = [o for r, _ in kept for o in r.labels]
    return MetaRaterRow(
        rater=name, kind=kind, fingerprint=fingerprint, n=len(rows), n_ungraded=len(rows) - len(kept), pairwise=pw,
        majority_agreement=mean_with_ci("majority_agreement", agree),
        majority_kappa=cohen_kappa(list(preds), maj), n_no_majority=sum(m is None for m in maj),
        pairwise_kappa=cohen_kappa(pair_a, pair_b),
        by_category=_by_category([r.category for r, _ in kept], self_preds, others),
    )


def physician_row(rows: Sequence[MetaRow]) -> MetaRaterRow:
    """The physicians as one rater: each label against the others on its row (leave one out)."""
    self_preds: list[bool] = []
    others: list[list[bool]] = []
    cats: list[str] = []
    per_physician: dict[str, tuple[list[bool], list[list[bool]]]] = defaultdict(lambda: ([], []))
    agree: list[float | None] = []
    loo_self: list[bool | None] = []
    loo_majority: list[bool | None] = []
    for r in rows:
        for k, (pid, label) in enumerate(zip(r.physicians, r.labels, strict=True)):
            rest = [*r.labels[:k], *r.labels[k + 1:]]
            if not rest:
                continue
            self_preds.append(label)
            others.append(rest)
            cats.append(r.category)
            per_physician[pid][0].append(label)
            per_physician[pid][1].append(rest)
            m = majority(rest)
            agree.append(None if m is None else float(label == m))
            loo_self.append(label)
            loo_majority.append(m)
    pw = pairwise_f1(self_preds, others)
    per = {pid: pairwise_f1(p, o).f1_balanced for pid, (p, o) in per_physician.items()}
    defined = [v for v in per.values() if v is not None]
    pair_a = [s for s, o in zip(self_preds, others, strict=True) for _ in o]
    pair_b = [x for o in others for x in o]
    return MetaRaterRow(
        rater="physicians (each vs the others)", kind="physicians", fingerprint="physicians", n=len(self_preds),
        n_ungraded=0, pairwise=pw, majority_agreement=mean_with_ci("majority_agreement", agree),
        majority_kappa=cohen_kappa(loo_self, loo_majority), n_no_majority=sum(m is None for m in loo_majority),
        pairwise_kappa=cohen_kappa(pair_a, pair_b), by_category=_by_category(cats, self_preds, others),
        extra={"n_physicians": len(per), "mean_physician_balanced_f1": (math.fsum(defined) / len(defined)
                                                                         if defined else None),
               "n_physicians_balanced_f1_defined": len(defined)},
    )


def physician_alpha(rows: Sequence[MetaRow]) -> float | None:
    """Nominal Krippendorff's alpha with each physician a rater (most cells missing)."""
    from judges.jury import krippendorff_alpha

    ids = sorted({p for r in rows for p in r.physicians})
    col = {p: k for k, p in enumerate(ids)}
    table: list[list[float | None]] = [[None] * len(rows) for _ in ids]
    for u, r in enumerate(rows):
        for pid, label in zip(r.physicians, r.labels, strict=True):
            table[col[pid]][u] = float(label)
    return krippendorff_alpha(table, "nominal")


# -- the study -----------------------------------------------------------------------------

@dataclass(frozen=True)
class MetaReport:
    name: str
    description: str
    file: str
    rows: list[MetaRow]
    grader_info: dict[str, Any] | None
    raters: list[MetaRaterRow]  # the grader first (when given), the baselines, the physicians last
    decisions: dict[str, list[GradeDecision]]  # rater name -> decisions, row order
    physician_alpha: float | None
    seed: int

    @property
    def data_fingerprint(self) -> str:
        return stable_hash([[r.id, list(r.labels), list(r.physicians), r.category, r.rubric, r.completion]
                            for r in self.rows])

    def ceiling(self) -> MetaRaterRow:
        return self.raters[-1]

    def to_json(self) -> dict[str, Any]:
        labels = [v for r in self.rows for v in r.labels]
        return {
            "dataset": self.name, "description": self.description, "file": self.file, "n_items": len(self.rows),
            "data_fingerprint": self.data_fingerprint, "seed": self.seed, "judge": self.grader_info,
            "humans": {"physician_labels": len(labels), "met_share": sum(labels) / len(labels) if labels else None,
                       "physicians": len({p for r in self.rows for p in r.physicians}),
                       "alpha_between_physicians": self.physician_alpha,
                       "rows_with_majority": sum(r.majority is not None for r in self.rows)},
            "rows": [r.to_json() for r in self.raters],
        }

    def markdown(self) -> str:
        def num(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        header = ["rater", "n", "ungraded", "balanced F1 (upstream)", "F1 met", "F1 not met", "pairwise agreement",
                  "pairwise κ", "agreement with majority", "κ with majority"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in self.raters:
            m = r.majority_agreement
            lines.append("| " + " | ".join([
                r.rater, str(r.n), str(r.n_ungraded), num(r.pairwise.f1_balanced), num(r.pairwise.f1_pos),
                num(r.pairwise.f1_neg), num(r.pairwise.agreement), num(r.pairwise_kappa),
                f"{format_value_ci(m.value, m.ci_low, m.ci_high)} ({m.n_scored})", num(r.majority_kappa)]) + " |")
        ceiling = self.ceiling()
        labels = sum(len(r.labels) for r in self.rows)
        title = (f"Rubric grader meta-evaluation on {self.name} ({self.description}): {len(self.rows)} rows, "
                 f"{labels} physician labels. Balanced F1 = mean of the met and not-met F1 over every (rater, "
                 "physician) label pair (upstream's headline); the physicians row scores each physician against "
                 f"the others on the same row. Mean per-physician balanced F1 "
                 f"{num(ceiling.extra.get('mean_physician_balanced_f1'))} over "
                 f"{ceiling.extra.get('n_physicians_balanced_f1_defined')} of {ceiling.extra.get('n_physicians')} "
                 f"physicians; Krippendorff's α between physicians {num(self.physician_alpha)}. "
                 "Agreement with majority: rows with a strict majority, 95% Wilson CI.\n\n")
        return title + "\n".join(lines) + "\n"


def run_meta_study(name: str, description: str, file: str, rows: Sequence[MetaRow], grader: RubricGrader | None, *,
                   seed: int = 0, progress: Progress | None = None) -> MetaReport:
    """The grader (if any) and the baselines on the rows, and the physician ceiling."""
    if not rows:
        raise HarnessError(f"meta-evaluation data {name!r} has no rows")
    raters: list[MetaRaterRow] = []
    decisions: dict[str, list[GradeDecision]] = {}
    graders: list[tuple[RubricGrader, str]] = []
    if grader is not None:
        missing = next((r for r in rows if not r.has_texts), None)
        if missing is not None:
            raise HarnessError(f"row {missing.id} has no prompt, completion or rubric: a grader needs the texts "
                               "(the physician ceiling does not)")
        graders.append((grader, "grader"))
    graders += [(SCRIPTED[b](seed), "baseline") for b in BASELINES]  # they need no texts
    for g, kind in graders:
        queries = [GradeQuery(r.id, r.prompt or (), r.completion or "", r.rubric or "") for r in rows]
        got = g.grade(queries, progress if kind == "grader" else None)
        decisions[g.name] = got
        raters.append(rater_row(g.name, kind, g.fingerprint(), rows, [d.met for d in got]))
    raters.append(physician_row(rows))
    info = None
    if grader is not None:
        info = dict(grader.info())
        usage = getattr(grader, "usage", None)
        if usage is not None:  # tokens in and out of the grader's requests (for its cost)
            info["usage"] = dict(usage.__dict__)
    return MetaReport(name, description, file, list(rows), info, raters, decisions, physician_alpha(rows), seed)


def calibration_results(report: MetaReport, settings: dict[str, Any], source: str | None = None) -> list[Any]:
    """The grader's headline numbers as a generic result of kind "calibration" for the results
    store: balanced F1 (the value), agreement and Cohen's kappa against the physician majority,
    the pairwise ones, n, the dataset, the grader's model fingerprint, prompt hash, parser and
    generation settings (what a rubric task's record keeps of its grader, so the leaderboard can
    match the two) and the study's settings. [] for a baselines-only study or a scripted grader
    (no model to calibrate)."""
    from leaderboard.calibration import CALIBRATION
    from leaderboard.entries import GenericResult

    info = report.grader_info
    if info is None or not report.raters or report.raters[0].kind != "grader" or not info.get("model"):
        return []
    row, ceiling = report.raters[0], report.ceiling()
    m = row.majority_agreement
    details = {
        "study": "healthbench_meta", "dataset": report.name, "description": report.description, "file": report.file,
        "data_fingerprint": report.data_fingerprint, "n_items": len(report.rows),
        "judge_fingerprint": info["fingerprint"], "grader_fingerprint": info["fingerprint"],
        "model_fingerprint": info["model"], "model_label": info.get("model_label"), "prompt": info.get("prompt"),
        "parser": info.get("parser"), "generation": info.get("generation"),
        "balanced_f1": row.pairwise.f1_balanced, "f1_met": row.pairwise.f1_pos, "f1_not_met": row.pairwise.f1_neg,
        "pairwise_agreement": row.pairwise.agreement, "pairwise_kappa": row.pairwise_kappa,
        "agreement": m.value, "agreement_ci": [m.ci_low, m.ci_high], "agreement_n": m.n_scored,
        "kappa": row.majority_kappa, "n_no_majority": row.n_no_majority, "n_ungraded": row.n_ungraded,
        "by_category_balanced_f1": dict(row.by_category),
        "physician_ceiling": {"balanced_f1": ceiling.pairwise.f1_balanced, "kappa": ceiling.majority_kappa,
                              "n_labels": ceiling.n},
        "settings": settings,  # not the token usage: a rerun served by the request cache is the same study
    }
    return [GenericResult(
        kind=CALIBRATION, name=report.name, model_name=str(info.get("model_label")),
        model_fingerprint=str(info["model"]),
        fingerprint=stable_hash([info["fingerprint"], report.data_fingerprint, settings]),
        value=row.pairwise.f1_balanced, n=row.n - row.n_ungraded, n_unscored=row.n_ungraded, source=source,
        details=details,
    )]


def write_meta(report: MetaReport, folder: Path) -> Path:
    """calibration.md, calibration.json and the grader's per-row decisions (items.jsonl)."""
    write_json(folder / "calibration.json", report.to_json())
    (folder / "calibration.md").write_text(report.markdown(), encoding="utf-8")
    if report.grader_info is not None and report.raters and report.raters[0].kind == "grader":
        name = report.raters[0].rater
        write_jsonl(folder / "items.jsonl", [{"id": r.id, "category": r.category, "physician_labels": list(r.labels),
                                              "majority": r.majority, **d.to_json()}
                                             for r, d in zip(report.rows, report.decisions[name], strict=True)])
    return folder
