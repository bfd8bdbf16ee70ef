"""Juries: several judges (or rubric graders) score the same items independently; combine them.

Input: per judge, a score per (candidate, item) (None = the judge failed on it: counted, never
dropped silently; a key the judge never saw is "missing"). Output:

- per judge: each candidate's score (mean over items by default, or any aggregator, e.g.
  HealthBench's clipped mean), and its failure counts;
- the jury: per item, the mean of the judges that scored it (unscored when none did); per
  candidate, the aggregate of those item means;
- inter-judge agreement: Krippendorff's alpha over the (candidate, item) units (`krippendorff`
  package; interval level for scores, nominal for met / not met);
- leave-one-judge-out rank stability: Kendall's tau-b (scipy) between the candidates' jury
  ranking and the ranking without each judge in turn;
- self-preference risk: a judge whose model is of the same family as a candidate is flagged
  (family from the model name, by `model_families`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.scoring.intervals import MetricValue, format_value_ci, mean_with_ci
from harness.scoring.jury import (  # the shared statistics live below the judges (the run's grader juries use them)
    FAMILY_PATTERNS,
    Level,
    krippendorff_alpha,
    model_families,
    normalise_model_name,
    same_family,
)

__all__ = ["FAMILY_PATTERNS", "Aggregate", "FamilyFlag", "JudgeScores", "JuryReport", "Key", "Level", "combine",
           "krippendorff_alpha", "model_families", "normalise_model_name", "same_family"]

Key = tuple[str, str]  # (candidate, item id)
Aggregate = Callable[[str, Sequence[float | None]], MetricValue]


@dataclass(frozen=True)
class JudgeScores:
    """One judge's per-item scores. `model` names its model for the family check."""

    judge: str
    scores: Mapping[Key, float | None]
    model: str | None = None
    fingerprint: str = ""


@dataclass(frozen=True)
class FamilyFlag:
    judge: str
    candidate: str
    families: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"judge": self.judge, "candidate": self.candidate, "families": list(self.families)}


@dataclass(frozen=True)
class JuryReport:
    judges: tuple[str, ...]
    candidates: tuple[str, ...]
    per_judge: dict[str, dict[str, MetricValue]]  # judge -> candidate -> score
    failures: dict[str, dict[str, int]]  # judge -> candidate -> items it failed on
    missing: dict[str, int]  # judge -> (candidate, item) keys it never scored
    jury: dict[str, MetricValue]  # candidate -> jury score
    item_means: dict[Key, float | None]
    alpha: float | None
    alpha_level: str
    leave_one_out_tau: dict[str, float | None]  # judge left out -> Kendall tau-b vs the full ranking
    family_flags: tuple[FamilyFlag, ...]
    details: Mapping[str, Any] = field(default_factory=dict)

    def failure_total(self, judge: str) -> int:
        return sum(self.failures[judge].values())

    def to_json(self) -> dict[str, Any]:
        return {
            "judges": list(self.judges), "candidates": list(self.candidates),
            "per_judge": {j: {c: v.to_json() for c, v in row.items()} for j, row in self.per_judge.items()},
            "failures": {j: {"total": self.failure_total(j), "by_candidate": dict(row)}
                         for j, row in self.failures.items()},
            "missing": dict(self.missing),
            "jury": {c: v.to_json() for c, v in self.jury.items()},
            "krippendorff_alpha": self.alpha, "alpha_level": self.alpha_level,
            "leave_one_judge_out_kendall_tau": dict(self.leave_one_out_tau),
            "same_family": [f.to_json() for f in self.family_flags], **dict(self.details),
        }

    def markdown(self) -> str:
        def num(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        head = ["candidate", "jury", *self.judges]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        order = sorted(self.candidates, key=lambda c: -(self.jury[c].value or -math.inf))
        for c in order:
            j = self.jury[c]
            cells = [c, format_value_ci(j.value, j.ci_low, j.ci_high)]
            for judge in self.judges:
                v = self.per_judge[judge][c]
                fail = self.failures[judge][c]
                cells.append(format_value_ci(v.value, v.ci_low, v.ci_high) + (f" ({fail} failed)" if fail else ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| judge | failures | missing | Kendall τ without it | same family as |", "|---|---|---|---|---|"]
        for judge in self.judges:
            flagged = ", ".join(f"{f.candidate} ({'/'.join(f.families)})" for f in self.family_flags
                                if f.judge == judge) or "-"
            lines.append(f"| {judge} | {self.failure_total(judge)} | {self.missing[judge]} | "
                         f"{num(self.leave_one_out_tau[judge])} | {flagged} |")
        lines.append(f"\nKrippendorff's α ({self.alpha_level}) across judges: {num(self.alpha)}")
        return "\n".join(lines) + "\n"


def _default_aggregate(name: str, values: Sequence[float | None]) -> MetricValue:
    return mean_with_ci(name, values)


def _item_means(judges: Sequence[JudgeScores], keys: Sequence[Key]) -> dict[Key, float | None]:
    out: dict[Key, float | None] = {}
    for key in keys:
        got = [s for j in judges if (s := j.scores.get(key)) is not None]
        out[key] = math.fsum(got) / len(got) if got else None
    return out


def _candidate_scores(means: Mapping[Key, float | None], candidates: Sequence[str],
                      aggregate: Aggregate, name: str) -> dict[str, MetricValue]:
    return {c: aggregate(name, [v for (cand, _), v in means.items() if cand == c]) for c in candidates}


def _kendall(full: Mapping[str, MetricValue], part: Mapping[str, MetricValue]) -> float | None:
    pairs = [(full[c].value, part[c].value) for c in full if full[c].value is not None and part[c].value is not None]
    if len(pairs) < 2:
        return None
    from scipy.stats import kendalltau

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = kendalltau([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def combine(judges: Sequence[JudgeScores], candidate_models: Mapping[str, str] | None = None, *,
            aggregate: Aggregate = _default_aggregate, alpha_level: Level = "interval") -> JuryReport:
    """Combine the judges' scores. `candidate_models` maps a candidate key to its model name
    (for the family flags; a candidate without one is checked by its key)."""
    names = [j.judge for j in judges]
    if len(set(names)) != len(names):
        raise ValueError(f"judge names must be distinct, got {names}")
    if not judges:
        raise ValueError("a jury needs at least one judge")
    keys = sorted({k for j in judges for k in j.scores})
    candidates = tuple(sorted({c for c, _ in keys}))
    per_judge: dict[str, dict[str, MetricValue]] = {}
    failures: dict[str, dict[str, int]] = {}
    missing: dict[str, int] = {}
    for j in judges:
        per_judge[j.judge] = {c: aggregate(f"{j.judge}", [v for (cand, _), v in j.scores.items() if cand == c])
                              for c in candidates}
        failures[j.judge] = {c: sum(1 for (cand, _), v in j.scores.items() if cand == c and v is None)
                             for c in candidates}
        missing[j.judge] = sum(1 for k in keys if k not in j.scores)
    means = _item_means(judges, keys)
    jury = _candidate_scores(means, candidates, aggregate, "jury")
    loo: dict[str, float | None] = {}
    for j in judges:
        rest = [x for x in judges if x.judge != j.judge]
        loo[j.judge] = _kendall(jury, _candidate_scores(_item_means(rest, keys), candidates, aggregate, "jury"))
        if not rest:
            loo[j.judge] = None
    alpha = krippendorff_alpha([[j.scores.get(k) for k in keys] for j in judges], alpha_level)
    flags = []
    models = candidate_models or {}
    for j in judges:
        if not j.model:
            continue
        for c in candidates:
            shared = same_family(j.model, models.get(c, c))
            if shared:
                flags.append(FamilyFlag(j.judge, c, shared))
    return JuryReport(tuple(names), candidates, per_judge, failures, missing, jury, means, alpha, alpha_level, loo,
                      tuple(flags), {"n_items": len(keys)})
