"""A campaign's results: per-dimension means with CIs (experts and lay apart), human win / tie
/ loss with CIs, rubric scores, agreement between annotators, gold-item accuracy and time per
item; exports in the MT-bench human-judgment and LLMBar formats; generic results for the
leaderboard store.

Units: a mean or a rate is over labels (one per annotator and item), so with K annotators per
item an item counts K times; the CIs (bootstrap for 1–5 means, Wilson for rates) treat labels
as independent and are therefore optimistic when annotators agree. Gold items never enter
means, rates or agreement.

Agreement: Krippendorff's alpha per dimension (the `krippendorff` package; ordinal for 1–5
scores, nominal for choices) over the annotators × items matrix of one role, and Cohen's kappa
(scikit-learn; quadratic weights for 1–5 scores) for every pair of annotators over the items
both labelled.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from harness.scoring.intervals import MetricValue, format_value_ci, mean_with_ci
from harness.types import stable_hash
from judges.human.annotations import AnnotationStore
from judges.human.campaigns import model_labels
from judges.human.entities import Campaign, Label
from judges.human.protocols import ANNOTATING_ROLES, OVERALL, SCALE

PAIR_CODES = {"x": 1, "y": 2, "tie": 0, "both_bad": 3}
HUMAN_POINTWISE = "human_pointwise"
HUMAN_PAIRWISE = "human_pairwise"
HUMAN_RUBRIC = "human_rubric"


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        from judges.results import markdown_table

        text = f"### {self.title}\n\n"
        text += markdown_table(self.header, self.rows) if self.rows else "(none yet)\n"
        return text + (f"\n{self.note}\n" if self.note else "")


@dataclass
class CampaignReport:
    campaign: str
    protocol: str
    fingerprint: str
    n_items: int
    n_gold: int
    n_labels: int
    annotators: dict[str, str]  # name -> role
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the numbers, for JSON and the store

    def markdown(self) -> str:
        head = (f"## Campaign {self.campaign} ({self.protocol})\n\n{self.n_items} items, {self.n_gold} gold, "
                f"{self.n_labels} labels from {len(self.annotators)} annotators "
                f"({', '.join(f'{n} ({r})' for n, r in sorted(self.annotators.items())) or 'none'}); "
                f"fingerprint {self.fingerprint[:12]}.\n\n")
        return head + "\n".join(t.markdown() for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "protocol": self.protocol, "fingerprint": self.fingerprint,
                "n_items": self.n_items, "n_gold": self.n_gold, "n_labels": self.n_labels,
                "annotators": self.annotators, **self.data}


# -- agreement ----------------------------------------------------------------------------


def alpha(matrix: Sequence[Sequence[float | None]], level: str, domain: Sequence[float] | None = None) -> float | None:
    """Krippendorff's alpha over raters (rows) × units (columns); None where undefined."""
    import numpy as np

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float)
    if data.shape[0] < 2 or data.shape[1] == 0:
        return None
    pairable = (np.sum(~np.isnan(data), axis=0) >= 2).sum()
    if pairable == 0:
        return None
    import krippendorff

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level,  # type: ignore[arg-type]
                                         value_domain=list(domain) if domain is not None else None))
    except (ValueError, ZeroDivisionError):
        return None
    return None if math.isnan(a) else a


def kappa(a: Sequence[float], b: Sequence[float], *, weights: str | None, labels: Sequence[float]) -> float | None:
    if not a:
        return None
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = float(cohen_kappa_score(list(a), list(b), labels=list(labels), weights=weights))
    return None if math.isnan(k) else k


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fmt(m: MetricValue) -> str:
    return format_value_ci(m.value, m.ci_low, m.ci_high, missing="-")


# -- the report ---------------------------------------------------------------------------


class CampaignContext:
    def __init__(self, db: AnnotationStore, campaign: Campaign):
        self.campaign = campaign
        self.items = {i.item_id: i for i in db.items(campaign)}
        self.labels = db.labels(campaign)
        self.models = model_labels(list(self.items.values()))
        self.regular = [lab for lab in self.labels if not self.items[lab.item_id].is_gold]
        self.gold = [lab for lab in self.labels if self.items[lab.item_id].is_gold]

    def roles(self) -> list[str]:
        present = {lab.role for lab in self.regular}
        return [r for r in ANNOTATING_ROLES if r in present]

    def model_of(self, label: Label, index: int = 0) -> str:
        return str(self.models[self.items[label.item_id].payload["answers"][index]["model_fingerprint"]])


def _agreement_tables(ctx: CampaignContext, keys: Sequence[str], code: Callable[[Any], float | None], *, level: str,
                      domain: Sequence[float], weights: str | None, what: str) -> tuple[list[Table], dict[str, Any]]:
    alpha_rows: list[list[str]] = []
    kappa_rows: list[list[str]] = []
    data: dict[str, Any] = {"alpha": {}, "kappa": {}}
    for role in ctx.roles():
        labs = [lab for lab in ctx.regular if lab.role == role]
        raters = sorted({lab.annotator for lab in labs})
        units = sorted({lab.item_id for lab in labs})
        for key in keys:
            per = {(lab.annotator, lab.item_id): code(lab.values.get(key)) for lab in labs if key in lab.values}
            if not per:
                continue
            matrix = [[per.get((r, u)) for u in units] for r in raters]
            a = alpha(matrix, level, domain)
            n_units = sum(1 for u in units if sum(per.get((r, u)) is not None for r in raters) >= 2)
            alpha_rows.append([role, key, str(len(raters)), str(n_units), _num(a)])
            data["alpha"][f"{role}:{key}"] = {"alpha": a, "raters": len(raters), "units_pairable": n_units}
            for r1, r2 in itertools.combinations(raters, 2):
                shared = [u for u in units if per.get((r1, u)) is not None and per.get((r2, u)) is not None]
                k = kappa([per[(r1, u)] for u in shared], [per[(r2, u)] for u in shared],  # type: ignore[misc]
                          weights=weights, labels=domain)
                kappa_rows.append([role, key, f"{r1} · {r2}", str(len(shared)), _num(k)])
                data["kappa"][f"{role}:{key}:{r1}|{r2}"] = {"kappa": k, "n": len(shared)}
    note = (f"Krippendorff's alpha ({level}) over the {what} of annotators of one role; pairable units have two "
            "or more labels.")
    kw = f"Cohen's kappa{' (' + weights + ' weights)' if weights else ''} over the items both annotators labelled."
    return [Table("Agreement between annotators: Krippendorff's alpha", ["role", "dimension", "annotators",
                                                                          "pairable items", "alpha"], alpha_rows, note),
            Table("Agreement per annotator pair: Cohen's kappa", ["role", "dimension", "pair", "shared items",
                                                                    "kappa"], kappa_rows, kw)], data


def _gold_table(ctx: CampaignContext) -> tuple[Table, dict[str, Any]]:
    per: dict[str, list[float]] = defaultdict(list)
    for lab in ctx.gold:
        expected = ctx.items[lab.item_id].payload.get("expected") or {}
        checks = []
        for key, want in expected.items():
            got = lab.values.get(key)
            if got is None:
                continue  # not asked of this role
            if isinstance(want, list):
                checks.append(want[0] <= int(got) <= want[1])
            else:
                checks.append(got == want)
        if checks:
            per[lab.annotator].append(float(all(checks)))
    rows, data = [], {}
    for name in sorted(per):
        m = mean_with_ci("gold_accuracy", per[name], proportion=True)
        rows.append([name, str(len(per[name])), _fmt(m)])
        data[name] = m.to_json()
    return Table("Gold items: accuracy per annotator", ["annotator", "gold items", "accuracy [95% CI]"], rows,
                 "A gold item counts as right when every expected answer shown to the annotator matches."), data


def _time_table(ctx: CampaignContext) -> Table:
    per: dict[str, list[float]] = defaultdict(list)
    for lab in ctx.labels:
        if lab.seconds is not None:
            per[lab.annotator].append(lab.seconds)
    rows = [[n, str(len(v)), f"{median(v):.1f}", f"{sum(v) / 60:.1f}"] for n, v in sorted(per.items())]
    return Table("Time spent", ["annotator", "timed items", "median s / item", "total min"], rows)


def _pointwise(ctx: CampaignContext, report: CampaignReport) -> None:
    dims = list(ctx.campaign.spec.dimensions)
    for role in ctx.roles():
        rows, data = [], {}
        asked = [d for d in dims if any(d in lab.values for lab in ctx.regular if lab.role == role)]
        models = sorted({ctx.model_of(lab) for lab in ctx.regular if lab.role == role})
        for model in models:
            row = [model]
            for d in asked:
                vals = [float(lab.values[d]) for lab in ctx.regular
                        if lab.role == role and d in lab.values and ctx.model_of(lab) == model]
                m = mean_with_ci(d, vals, proportion=False)
                row.append(f"{_fmt(m)} (n={m.n_scored})")
                data[f"{model}:{d}"] = m.to_json()
            rows.append(row)
        report.tables.append(Table(f"Mean score per dimension, {role} annotators (1–5, 95% CI)", ["model", *asked],
                                   rows, "Bootstrap CIs over labels."))
        report.data.setdefault("means", {})[role] = data
    tables, agreement = _agreement_tables(
        ctx, dims, lambda v: None if v is None else float(v), level="ordinal",
        domain=[float(v) for v in range(SCALE[0], SCALE[1] + 1)], weights="quadratic", what="1–5 scores")
    report.tables += tables
    report.data["agreement"] = agreement


def pair_outcomes(ctx: CampaignContext) -> dict[tuple[str, str, str, str], list[str]]:
    """(role, criterion, model x, model y) -> the labels' sides, in label order."""
    out: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for lab in ctx.regular:
        x, y = ctx.model_of(lab, 0), ctx.model_of(lab, 1)
        for key, side in lab.values.items():
            out[(lab.role, key, x, y)].append(str(side))
    return out


def _pairwise(ctx: CampaignContext, report: CampaignReport) -> None:
    rows, data = [], {}
    for (role, key, x, y), sides in sorted(pair_outcomes(ctx).items()):
        n = len(sides)
        rates = {s: mean_with_ci(s, [float(v == s) for v in sides], proportion=True) for s in PAIR_CODES}
        rows.append([role, key, x, y, str(n), _fmt(rates["x"]), _fmt(rates["tie"]), _fmt(rates["y"]),
                     _fmt(rates["both_bad"])])
        data[f"{role}:{key}:{x}|{y}"] = {"role": role, "criterion": key, "model_x": x, "model_y": y, "n": n,
                                         **{s: rates[s].to_json() for s in PAIR_CODES}}
    report.tables.append(Table("Human win / tie / loss (95% Wilson CIs)",
                               ["role", "criterion", "model X", "model Y", "labels", "X wins", "tie", "Y wins",
                                "both bad"], rows,
                               "Shares of labels; the answers' left/right placement was random per annotator."))
    report.data["pairwise"] = data
    keys = [OVERALL, *[d for d in ctx.campaign.spec.dimensions if d != OVERALL]]
    keys = [k for k in dict.fromkeys(keys) if k in ctx.campaign.spec.dimensions]
    tables, agreement = _agreement_tables(ctx, keys, lambda v: None if v is None else float(PAIR_CODES[str(v)]),
                                          level="nominal", domain=[0.0, 1.0, 2.0, 3.0], weights=None,
                                          what="choices (X, Y, tie, both bad)")
    report.tables += tables
    report.data["agreement"] = agreement


def rubric_score(rubric: Sequence[dict[str, Any]], values: dict[str, Any]) -> float | None:
    """HealthBench's score of one answer: points of the criteria met over the positive points,
    clipped to [0, 1]; None when the rubric has no positive points."""
    possible = sum(float(c.get("points") or 0) for c in rubric if float(c.get("points") or 0) > 0)
    if possible <= 0:
        return None
    got = sum(float(c.get("points") or 0) for i, c in enumerate(rubric) if values.get(str(i)) == "met")
    return max(0.0, min(1.0, got / possible))


def _rubric(ctx: CampaignContext, report: CampaignReport) -> None:
    rows, data = [], {}
    for role in ctx.roles():
        for model in sorted({ctx.model_of(lab) for lab in ctx.regular if lab.role == role}):
            labs = [lab for lab in ctx.regular if lab.role == role and ctx.model_of(lab) == model]
            scores = [rubric_score(ctx.items[lab.item_id].payload["rubric"], lab.values) for lab in labs]
            met = [float(v == "met") for lab in labs for v in lab.values.values()]
            s, m = mean_with_ci("rubric_score", scores, proportion=False), mean_with_ci("met", met, proportion=True)
            rows.append([role, model, str(len(labs)), _fmt(s), _fmt(m)])
            data[f"{role}:{model}"] = {"score": s.to_json(), "met_rate": m.to_json()}
    report.tables.append(Table("Rubric: score and criteria met (95% CI)",
                               ["role", "model", "labels", "score", "criteria met"], rows,
                               "Score: points met / positive points, clipped to [0, 1] (HealthBench)."))
    report.data["rubric"] = data
    # agreement per criterion decision: units are (item, criterion)
    alpha_rows = []
    for role in ctx.roles():
        labs = [lab for lab in ctx.regular if lab.role == role]
        raters = sorted({lab.annotator for lab in labs})
        per = {(lab.annotator, lab.item_id, k): float(v == "met") for lab in labs for k, v in lab.values.items()}
        units = sorted({(i, k) for _, i, k in per})
        matrix = [[per.get((r, i, k)) for i, k in units] for r in raters]
        a = alpha(matrix, "nominal", [0.0, 1.0])
        alpha_rows.append([role, str(len(raters)), str(len(units)), _num(a)])
        report.data.setdefault("agreement", {})[role] = {"alpha": a}
    report.tables.append(Table("Agreement on criterion decisions: Krippendorff's alpha (nominal)",
                               ["role", "annotators", "criterion decisions", "alpha"], alpha_rows))


def _case_study(ctx: CampaignContext, report: CampaignReport) -> None:
    per = Counter(lab.annotator for lab in ctx.regular)
    report.tables.append(Table("Case-study notes", ["annotator", "items with notes"],
                               [[n, str(c)] for n, c in sorted(per.items())],
                               "Notes are free text: read them in the export (format labels)."))


PROTOCOL_REPORTS: dict[str, Callable[[CampaignContext, CampaignReport], None]] = {
    "pointwise": _pointwise, "pairwise": _pairwise, "rubric": _rubric, "case-study": _case_study,
}


def campaign_report(store: str | Path | AnnotationStore, name: str) -> CampaignReport:
    return build_report(open_context(store, name))


def build_report(ctx: CampaignContext) -> CampaignReport:
    campaign = ctx.campaign
    report = CampaignReport(
        campaign=campaign.name, protocol=campaign.protocol_name, fingerprint=campaign.fingerprint,
        n_items=sum(not i.is_gold for i in ctx.items.values()), n_gold=sum(i.is_gold for i in ctx.items.values()),
        n_labels=len(ctx.labels), annotators={lab.annotator: lab.role for lab in ctx.labels},
    )
    PROTOCOL_REPORTS[campaign.protocol_name](ctx, report)
    if ctx.gold:
        table, gold = _gold_table(ctx)
        report.tables.append(table)
        report.data["gold_accuracy"] = gold
    report.tables.append(_time_table(ctx))
    report.data["labels_fingerprint"] = stable_hash(sorted([lab.item_key, lab.annotator, lab.values, lab.revision]
                                                           for lab in ctx.labels))
    return report


def open_context(store: str | Path | AnnotationStore, name: str) -> CampaignContext:
    """A campaign's items and labels, read once (a store given by path is opened and closed)."""
    db = store if isinstance(store, AnnotationStore) else AnnotationStore(store)
    try:
        return CampaignContext(db, db.campaign(name))
    finally:
        if db is not store:
            db.close()
