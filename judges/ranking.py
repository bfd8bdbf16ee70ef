"""Many models' pairwise battles -> a Bradley–Terry ranking on the Elo scale with bootstrap CIs.

P(i beats j) = sigmoid(b_i - b_j). The log-strengths b maximise the battles' log-likelihood
(scipy.optimize.minimize, L-BFGS-B with the analytic gradient); a tie counts half a win for each
side. A weak Gaussian prior (ridge) keeps ratings finite when one model wins every battle, and
fixes the free offset. Ratings are reported as 1000 + 400·log10(e)·(b - mean b), so a 400-point
gap is 10:1 odds. CIs: percentile bootstrap over battles (seeded).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.scoring.intervals import CONFIDENCE, MetricValue
from harness.types import stable_hash
from judges.judge import Progress
from judges.pairs import PairJudge
from judges.pairwise import PairwiseReport, run_label, run_pairwise, write_pairwise
from judges.results import BRADLEY_TERRY, fmt, generic, markdown_table, write_json, write_jsonl, write_results
from judges.runs import JudgedRun
from leaderboard.store import GenericResult

ELO_BASE = 1000.0
ELO_SCALE = 400.0 / math.log(10.0)
RIDGE = 0.01  # Gaussian prior on log-strengths with sd ~7 logits: weak, yet finite under separation
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class Battle:
    """One judged sample: `a` vs `b` (model keys), outcome 1.0 a wins, 0.5 tie, 0.0 b wins."""

    a: str
    b: str
    outcome: float


def _arrays(models: Sequence[str], battles: Sequence[Battle]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = {m: k for k, m in enumerate(models)}
    return (np.array([index[b.a] for b in battles], dtype=int), np.array([index[b.b] for b in battles], dtype=int),
            np.array([b.outcome for b in battles], dtype=float))


def _log_strengths(n: int, i: np.ndarray, j: np.ndarray, w: np.ndarray, ridge: float,
                   start: np.ndarray | None = None) -> np.ndarray:
    """Maximum a posteriori log-strengths (mean zero) of n models from battles i vs j."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    def objective(beta: np.ndarray) -> tuple[float, np.ndarray]:
        d = beta[i] - beta[j]
        nll = -float(np.sum(w * log_expit(d) + (1.0 - w) * log_expit(-d))) + ridge * float(beta @ beta)
        g = expit(d) - w  # d(nll)/d(d)
        grad = np.bincount(i, g, minlength=n) - np.bincount(j, g, minlength=n) + 2.0 * ridge * beta
        return nll, grad

    res = minimize(objective, np.zeros(n) if start is None else start, jac=True, method="L-BFGS-B")
    if not res.success:
        raise HarnessError(f"Bradley–Terry fit did not converge: {res.message}")
    return np.asarray(res.x - res.x.mean())


def fit_bradley_terry(models: Sequence[str], battles: Sequence[Battle], ridge: float = RIDGE) -> np.ndarray:
    """Elo-scaled ratings, in `models` order."""
    return np.asarray(ELO_BASE + ELO_SCALE * _log_strengths(len(models), *_arrays(models, battles), ridge))


def bradley_terry(models: Sequence[str], battles: Sequence[Battle], *, rounds: int = BOOTSTRAP_ROUNDS,
                  seed: int = 0, ridge: float = RIDGE) -> dict[str, MetricValue]:
    """Ratings with percentile-bootstrap CIs (battles resampled with replacement)."""
    if len(models) < 2:
        raise HarnessError("a ranking needs at least two models")
    if not battles:
        raise HarnessError("no scored battles to rank")
    n = len(models)
    i, j, w = _arrays(models, battles)
    beta = _log_strengths(n, i, j, w, ridge)
    rng = np.random.default_rng(seed)
    draws = np.empty((rounds, n))
    for r in range(rounds):
        pick = rng.integers(0, len(battles), len(battles))
        # warm start from the full-data fit: the same optimum, fewer iterations
        draws[r] = _log_strengths(n, i[pick], j[pick], w[pick], ridge, beta)
    point, draws = ELO_BASE + ELO_SCALE * beta, ELO_BASE + ELO_SCALE * draws
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    counts = {m: sum(1 for b in battles if m in (b.a, b.b)) for m in models}
    return {m: MetricValue("rating", float(point[k]), float(low[k]), float(high[k]), counts[m], 0, "bootstrap")
            for k, m in enumerate(models)}


def battles_from(report: PairwiseReport) -> list[Battle]:
    out = []
    a, b = report.run_a.model_fingerprint, report.run_b.model_fingerprint
    for o in report.outcomes:
        if o.final is not None:
            out.append(Battle(a, b, {"x": 1.0, "tie": 0.5, "y": 0.0}[o.final]))
    return out


@dataclass(frozen=True)
class RankReport:
    runs: list[JudgedRun]
    judge_info: dict[str, Any]
    fingerprint: str
    ratings: dict[str, MetricValue]  # model fingerprint -> rating
    pairs: list[PairwiseReport]
    battles: list[Battle]
    folder: Path
    results: list[GenericResult]

    def ordered(self) -> list[JudgedRun]:
        return sorted(self.runs, key=lambda r: -(self.ratings[r.model_fingerprint].value or 0.0))

    def markdown(self) -> str:
        rows = []
        for k, run in enumerate(self.ordered(), 1):
            m = run.model_fingerprint
            won = sum(b.outcome if b.a == m else 1 - b.outcome for b in self.battles if m in (b.a, b.b))
            rows.append([str(k), run_label(run), fmt(self.ratings[m], 0), str(self.ratings[m].n_scored), f"{won:g}"])
        pair_rows = [[run_label(p.run_a), run_label(p.run_b), fmt(p.stats.win), fmt(p.stats.tie), fmt(p.stats.loss),
                      fmt(p.stats.consistency)] for p in self.pairs]
        return (f"Bradley–Terry ranking by judge {self.judge_info['model_label']} "
                f"(fingerprint {self.judge_info['fingerprint'][:12]}), {len(self.battles)} scored battles, "
                f"Elo scale, {BOOTSTRAP_ROUNDS} bootstrap rounds\n\n"
                + markdown_table(["#", "model", "rating [95% CI]", "battles", "wins (ties ½)"], rows) + "\n"
                + markdown_table(["A", "B", "A wins", "tie", "B wins", "consistency"], pair_rows))


def rank_runs(runs: Sequence[JudgedRun], judge: PairJudge, *, output: Path | None = None, seed: int = 0,
              rounds: int = BOOTSTRAP_ROUNDS, progress: Progress | None = None) -> RankReport:
    """Judge every pair of runs (both orders; each pair's files written beside run A), then fit
    Bradley–Terry on all battles."""
    fps = [r.model_fingerprint for r in runs]
    if len(set(fps)) < len(fps):
        dup = next(r for r in runs if fps.count(r.model_fingerprint) > 1)
        raise HarnessError(f"two runs hold the same model ({dup.model_name}, fingerprint {dup.model_fingerprint[:12]})"
                           "; rank each model once")
    pairs = []
    for a, b in itertools.combinations(runs, 2):
        report = run_pairwise(a, b, judge, progress)
        write_pairwise(report)
        pairs.append(report)
    battles = [x for p in pairs for x in battles_from(p)]
    ratings = bradley_terry(fps, battles, rounds=rounds, seed=seed)
    info = judge.info()
    jfp = info["fingerprint"]
    tasks = sorted({t for p in pairs for t in p.results[0].details["tasks"]})
    fingerprint = stable_hash({"judge": jfp, "tasks": {t: runs[0].record.tasks[t].task_fingerprint for t in tasks},
                               "models": sorted(fps), "rounds": rounds, "seed": seed})
    folder = output or runs[0].judgements_dir(jfp) / f"rank-{fingerprint[:12]}"
    details_common = {"scale": "elo", "n_models": len(runs), "battles": len(battles), "judge_fingerprint": jfp,
                      "judge_model": info["model_label"], "tasks": tasks, "bootstrap_rounds": rounds, "seed": seed}
    results = [generic(BRADLEY_TERRY, "rating", r.model_name, r.model_fingerprint, fingerprint,
                       ratings[r.model_fingerprint], folder / "ranking.json",
                       {**details_common, "run_id": r.record.run_id}) for r in runs]
    return RankReport(list(runs), info, fingerprint, ratings, pairs, battles, folder, results)


def write_rank(report: RankReport) -> Path:
    write_json(report.folder / "judge.json", report.judge_info)
    write_jsonl(report.folder / "battles.jsonl", [b.__dict__ for b in report.battles])
    (report.folder / "ranking.md").write_text(report.markdown(), encoding="utf-8")
    return write_results(report.folder / "ranking.json", report.results)
