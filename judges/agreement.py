"""Agreement of pairwise verdicts with human labels, and the judge's biases.

Labels: 1 (the first answer of the data set is better), 2 (the second), 0 (tie). Cohen's kappa
comes from scikit-learn, Krippendorff's alpha (nominal, missing judgements allowed) from the
`krippendorff` package, proportions and their Wilson CIs from harness.scoring.metrics.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.scoring.intervals import MetricValue, mean_with_ci
from judges.judge import JudgeUsage
from judges.pairs import PairOutcome, first_position_values

LABELS = (0, 1, 2)
_SIDE_LABEL = {"x": 1, "y": 2, "tie": 0}


def label_of(outcome: PairOutcome) -> int | None:
    final = outcome.final
    return None if final is None else _SIDE_LABEL[final]


def cohen_kappa(human: Sequence[int | None], judge: Sequence[int | None],
                labels: Sequence[int] = LABELS) -> float | None:
    """Kappa over the items both labelled; None where it is undefined (e.g. one shared label)."""
    pairs = [(h, j) for h, j in zip(human, judge, strict=True) if h is not None and j is not None]
    if not pairs:
        return None
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = float(cohen_kappa_score([h for h, _ in pairs], [j for _, j in pairs], labels=list(labels)))
    return None if math.isnan(k) else k


def krippendorff_alpha(raters: Sequence[Sequence[int | None]]) -> float | None:
    """Nominal alpha across raters (one row each; None = missing); None where undefined."""
    import numpy as np

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in raters], dtype=float)
    if data.shape[0] < 2 or data.shape[1] == 0:
        return None
    import krippendorff

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal",
                                         value_domain=list(LABELS)))
    except ValueError:  # fewer than two pairable values
        return None
    return None if math.isnan(a) else a


def prefer_longer(labels: Sequence[int | None], lengths: Sequence[tuple[int, int]]) -> MetricValue:
    """Among decisive labels on pairs of unequal length: the share that chose the longer."""
    values: list[float | None] = []
    for lab, (l1, l2) in zip(labels, lengths, strict=True):
        if lab in (1, 2) and l1 != l2:
            values.append(1.0 if (lab == 1) == (l1 > l2) else 0.0)
    return mean_with_ci("prefer_longer", values)


@dataclass(frozen=True)
class JudgeRow:
    """One judge (or baseline) against the human labels of one study."""

    judge: str
    fingerprint: str
    n: int
    n_unscored: int
    agreement: MetricValue  # final verdict == human label, ties a class of their own
    agreement_no_ties: MetricValue  # over items where neither the judge nor the humans said tie
    agreement_per_order: MetricValue  # each single-order verdict against the human label (LLMBar's "Acc")
    kappa: float | None
    alpha: float | None  # annotators and the judge
    consistency: MetricValue
    prefer_first: MetricValue
    prefer_longer: MetricValue
    seconds_per_judgement: float | None  # over judgements computed now (not served by the cache)
    tokens_per_judgement: float | None
    n_cached: int  # judgements served by the request cache
    baseline: bool

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            out[k] = v.to_json() if isinstance(v, MetricValue) else v
        return out


def judge_row(name: str, fingerprint: str, outcomes: Sequence[PairOutcome], human: Sequence[int],
              annotators: Sequence[Sequence[int]], lengths: Sequence[tuple[int, int]], *, baseline: bool,
              usage: JudgeUsage | None = None) -> JudgeRow:
    labels = [label_of(o) for o in outcomes]
    agree = [None if j is None else float(j == h) for j, h in zip(labels, human, strict=True)]
    no_ties = [None if j in (None, 0) or h == 0 else float(j == h) for j, h in zip(labels, human, strict=True)]
    # Before the swap rule turns order-dependent verdicts into ties: a position-biased judge
    # scores 0.5 here on balanced data, where `agreement` gives it 0.
    per_order = [None if side is None else float(_SIDE_LABEL[side] == h)
                 for o, h in zip(outcomes, human, strict=True) for side in (o.forward_side, o.backward_side)]
    judgements = [v.judgement for o in outcomes for v in (o.forward, o.backward) if v.judgement.attempts > 0]
    tokens = None
    if judgements:
        tokens = sum(j.prompt_tokens + j.completion_tokens for j in judgements) / len(judgements)
    return JudgeRow(
        judge=name, fingerprint=fingerprint, n=len(outcomes), n_unscored=sum(lab is None for lab in labels),
        agreement=mean_with_ci("agreement", agree),
        agreement_no_ties=mean_with_ci("agreement_no_ties", no_ties),
        agreement_per_order=mean_with_ci("agreement_per_order", per_order),
        kappa=cohen_kappa(human, labels),
        alpha=krippendorff_alpha([*[list(a) for a in annotators], labels]),
        consistency=mean_with_ci("consistency", [None if o.consistent is None else float(o.consistent)
                                                 for o in outcomes]),
        prefer_first=mean_with_ci("prefer_first", first_position_values(outcomes)),
        prefer_longer=prefer_longer(labels, lengths),
        seconds_per_judgement=usage.seconds_per_fresh() if usage else None, tokens_per_judgement=tokens,
        n_cached=usage.requests - usage.fresh if usage else 0, baseline=baseline,
    )
