"""Style-controlled Bradley–Terry ratings, as Chatbot Arena's style control does
(lm-sys/FastChat `fastchat/serve/monitor/elo_analysis.py`, `construct_style_matrices`,
`fit_mle_elo`; Markdown counts from `add_markdown_info.py`).

Each battle's two answers are measured: length (characters by default; pass a token counter
to use tokens as the arena does), Markdown headers (`#`..`######` lines), list items (ordered
and unordered) and bold spans (`**..**`, `__..__`), after removing ``` code blocks. A feature
enters the model as the normalised difference (a - b) / (a + b + 1), standardised over the
battles (z-score; a constant column stays 0). The logistic model is

    P(a beats b) = sigmoid(beta_a - beta_b + gamma · z)

fitted by maximum likelihood (scipy L-BFGS-B, analytic gradient) with the same weak ridge as the
plain fit in judges.ranking, a tie counting half a win each way (the arena's duplicated-battle
trick is the same likelihood). The controlled ratings are beta on the Elo scale; gamma (logits
per standard deviation of the normalised difference) says how much each style feature moves a
verdict. Raw ratings come from judges.ranking.bradley_terry on the same battles and bootstrap
draws (the same seed), so the two columns are paired. CIs: percentile bootstrap over battles,
the z-scores computed once on all battles, as the arena does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.scoring.intervals import CONFIDENCE, MetricValue, format_value_ci
from judges.ranking import BOOTSTRAP_ROUNDS, ELO_BASE, ELO_SCALE, RIDGE, Battle, bradley_terry

FEATURES = ("length", "headers", "lists", "bold")

_CODE_BLOCK = re.compile(r"```[^`]*```")
_HEADER = re.compile(r"^#{1,6}\s", re.M)
_ORDERED = re.compile(r"^\s*\d+\.\s", re.M)
_UNORDERED = re.compile(r"^\s*[-*+]\s", re.M)
_BOLD_STARS = re.compile(r"\*\*[^*\n]+\*\*")
_BOLD_UNDERSCORES = re.compile(r"__[^_\n]+__")


def style_counts(text: str, length: Callable[[str], int] = len) -> dict[str, int]:
    """The four style features of one answer (code blocks removed before counting Markdown;
    the length is of the whole answer)."""
    body = _CODE_BLOCK.sub("", text)
    return {
        "length": int(length(text)),
        "headers": len(_HEADER.findall(body)),
        "lists": len(_ORDERED.findall(body)) + len(_UNORDERED.findall(body)),
        "bold": len(_BOLD_STARS.findall(body)) + len(_BOLD_UNDERSCORES.findall(body)),
    }


def style_matrix(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-scored normalised differences (n battles x k features), with the means and standard
    deviations of the normalised differences (a column with no spread is left at 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ratio = (a - b) / (a + b + 1.0)
    mean, std = ratio.mean(axis=0), ratio.std(axis=0)
    z = np.zeros_like(ratio)
    spread = std > 0
    z[:, spread] = (ratio[:, spread] - mean[spread]) / std[spread]
    return z, mean, std


def _fit(n: int, i: np.ndarray, j: np.ndarray, w: np.ndarray, z: np.ndarray, ridge: float,
         start: np.ndarray | None = None) -> np.ndarray:
    """MAP (beta, gamma) of the style-augmented Bradley–Terry model; beta has mean zero."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    k = z.shape[1]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        beta, gamma = theta[:n], theta[n:]
        d = beta[i] - beta[j] + z @ gamma
        nll = -float(np.sum(w * log_expit(d) + (1.0 - w) * log_expit(-d))) + ridge * float(theta @ theta)
        g = expit(d) - w
        grad = np.empty(n + k)
        grad[:n] = np.bincount(i, g, minlength=n) - np.bincount(j, g, minlength=n)
        grad[n:] = z.T @ g
        return nll, grad + 2.0 * ridge * theta

    res = minimize(objective, np.zeros(n + k) if start is None else start, jac=True, method="L-BFGS-B")
    if not res.success:
        raise HarnessError(f"style-controlled Bradley–Terry fit did not converge: {res.message}")
    theta = np.asarray(res.x, dtype=np.float64)
    theta[:n] -= theta[:n].mean()
    return theta


@dataclass(frozen=True)
class StyleControlResult:
    models: tuple[str, ...]
    raw: dict[str, MetricValue]  # plain Bradley–Terry (judges.ranking), Elo scale
    controlled: dict[str, MetricValue]  # style-controlled, Elo scale
    coefficients: dict[str, MetricValue]  # feature -> logits per SD of its normalised difference
    feature_mean: dict[str, float]  # mean normalised difference (a - b) / (a + b + 1)
    feature_std: dict[str, float]
    n_battles: int
    rounds: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "method": "bradley-terry with style covariates (Chatbot Arena style control)", "scale": "elo",
            "features": list(self.coefficients), "n_battles": self.n_battles, "bootstrap_rounds": self.rounds,
            "seed": self.seed, "confidence": CONFIDENCE,
            "raw": {m: v.to_json() for m, v in self.raw.items()},
            "controlled": {m: v.to_json() for m, v in self.controlled.items()},
            "coefficients": {f: v.to_json() for f, v in self.coefficients.items()},
            "normalised_difference": {f: {"mean": self.feature_mean[f], "std": self.feature_std[f]}
                                      for f in self.coefficients},
        }

    def markdown(self, labels: Mapping[str, str] | None = None) -> str:
        names = labels or {}
        order = sorted(self.models, key=lambda m: -(self.controlled[m].value or 0.0))
        lines = ["| # | model | raw rating [95% CI] | style-controlled [95% CI] | change |",
                 "|---|---|---|---|---|"]
        for k, m in enumerate(order, 1):
            raw, ctl = self.raw[m], self.controlled[m]
            change = (ctl.value or 0.0) - (raw.value or 0.0)
            lines.append(f"| {k} | {names.get(m, m)} | {format_value_ci(raw.value, raw.ci_low, raw.ci_high, digits=0)}"
                         f" | {format_value_ci(ctl.value, ctl.ci_low, ctl.ci_high, digits=0)} | {change:+.0f} |")
        lines += ["", "| style feature | coefficient (logits per SD) [95% CI] |", "|---|---|"]
        for f, c in self.coefficients.items():
            lines.append(f"| {f} | {format_value_ci(c.value, c.ci_low, c.ci_high)} |")
        return "\n".join(lines) + "\n"


def _percentiles(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    return low, high


def fit_style_control(models: Sequence[str], battles: Sequence[Battle], a_features: np.ndarray,
                      b_features: np.ndarray, feature_names: Sequence[str] = FEATURES, *,
                      rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0, ridge: float = RIDGE) -> StyleControlResult:
    """Raw and style-controlled ratings with bootstrap CIs, and the feature coefficients.
    `a_features[k]` / `b_features[k]` hold battle k's answer features for sides a and b."""
    if len(models) < 2:
        raise HarnessError("a ranking needs at least two models")
    if not battles:
        raise HarnessError("no scored battles to rank")
    a_features, b_features = np.asarray(a_features, dtype=np.float64), np.asarray(b_features, dtype=np.float64)
    if a_features.shape != (len(battles), len(feature_names)) or b_features.shape != a_features.shape:
        raise ValueError(f"features must be {len(battles)} x {len(feature_names)} for both sides")
    index = {m: k for k, m in enumerate(models)}
    unknown = sorted({x for b in battles for x in (b.a, b.b)} - set(index))
    if unknown:
        raise HarnessError(f"battles name models not in the list: {', '.join(unknown)}")
    i = np.array([index[b.a] for b in battles], dtype=int)
    j = np.array([index[b.b] for b in battles], dtype=int)
    w = np.array([b.outcome for b in battles], dtype=np.float64)
    z, mean, std = style_matrix(a_features, b_features)
    n = len(models)
    theta = _fit(n, i, j, w, z, ridge)
    rng = np.random.default_rng(seed)
    draws = np.empty((rounds, len(theta)))
    for r in range(rounds):
        pick = rng.integers(0, len(battles), len(battles))  # the draws judges.ranking makes with this seed
        draws[r] = _fit(n, i[pick], j[pick], w[pick], z[pick], ridge, theta)
    raw = bradley_terry(list(models), list(battles), rounds=rounds, seed=seed, ridge=ridge)
    low, high = _percentiles(draws)
    counts = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    controlled = {m: MetricValue("rating_style_controlled", float(ELO_BASE + ELO_SCALE * theta[k]),
                                 float(ELO_BASE + ELO_SCALE * low[k]), float(ELO_BASE + ELO_SCALE * high[k]),
                                 int(counts[k]), 0, "bootstrap")
                  for k, m in enumerate(models)}
    coefficients = {f: MetricValue(f"style_{f}", float(theta[n + q]), float(low[n + q]), float(high[n + q]),
                                   len(battles), 0, "bootstrap" if std[q] > 0 else "degenerate",
                                   {} if std[q] > 0 else {"note": "no spread in this feature: not estimated"})
                    for q, f in enumerate(feature_names)}
    return StyleControlResult(
        models=tuple(models), raw=raw, controlled=controlled, coefficients=coefficients,
        feature_mean={f: float(mean[q]) for q, f in enumerate(feature_names)},
        feature_std={f: float(std[q]) for q, f in enumerate(feature_names)},
        n_battles=len(battles), rounds=rounds, seed=seed,
    )


def style_control(models: Sequence[str], battles: Sequence[Battle], texts: Sequence[tuple[str, str]], *,
                  rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0, ridge: float = RIDGE,
                  length: Callable[[str], int] = len) -> StyleControlResult:
    """`fit_style_control` from the answers' texts: `texts[k]` = (answer of battles[k].a,
    answer of battles[k].b)."""
    if len(texts) != len(battles):
        raise ValueError(f"{len(battles)} battles but {len(texts)} answer pairs")
    a = np.array([[style_counts(x, length)[f] for f in FEATURES] for x, _ in texts], dtype=np.float64)
    b = np.array([[style_counts(y, length)[f] for f in FEATURES] for _, y in texts], dtype=np.float64)
    return fit_style_control(models, battles, a.reshape(len(texts), len(FEATURES)),
                             b.reshape(len(texts), len(FEATURES)), FEATURES, rounds=rounds, seed=seed, ridge=ridge)


def battles_with_texts(pairs: Sequence[Any]) -> tuple[list[Battle], list[tuple[str, str]]]:
    """The scored battles of pairwise reports (judges.pairwise.PairwiseReport) with the two
    answers of each, in judges.ranking.battles_from's order."""
    battles, texts = [], []
    for report in pairs:
        a, b = report.run_a.model_fingerprint, report.run_b.model_fingerprint
        for o in report.outcomes:
            if o.final is not None:
                battles.append(Battle(a, b, {"x": 1.0, "tie": 0.5, "y": 0.0}[o.final]))
                texts.append((o.query.x, o.query.y))
    return battles, texts


def style_control_for_rank(report: Any, *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> StyleControlResult:
    """Style control over a `harness judge rank` report (judges.ranking.RankReport): the same
    battles, with the answers' style features."""
    battles, texts = battles_with_texts(report.pairs)
    models = [r.model_fingerprint for r in report.runs]
    return style_control(models, battles, texts, rounds=rounds, seed=seed)
