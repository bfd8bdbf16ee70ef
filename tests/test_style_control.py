"""Style-controlled Bradley–Terry (judges.style) on synthetic battles with a planted length bias."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from scipy.stats import spearmanr

from harness.scoring.intervals import MetricValue
from judges.ranking import Battle
from judges.style import FEATURES, fit_style_control, style_control, style_counts, style_matrix

MODELS = ["short_best", "mid_good", "mid_weak", "long_worst"]
QUALITY = np.array([0.6, 0.2, -0.2, -0.6])  # true strength, logits
MEAN_LENGTH = np.array([200.0, 600.0, 1200.0, 2000.0])


def _synthetic(length_bias: float, n: int = 1500, seed: int = 1) -> tuple[list[Battle], np.ndarray, np.ndarray]:
    """Random pairs in random order; each answer's length varies around its model's mean; the
    judge's verdict follows quality plus `length_bias` x the normalised length difference.
    Bold and header counts are noise the judge ignores."""
    rng = np.random.default_rng(seed)
    battles, fa, fb = [], [], []
    for _ in range(n):
        a, b = rng.choice(len(MODELS), size=2, replace=False)
        la, lb = (MEAN_LENGTH[m] * rng.uniform(0.25, 1.75) for m in (a, b))
        logit = QUALITY[a] - QUALITY[b] + length_bias * (la - lb) / (la + lb + 1)
        outcome = 1.0 if rng.random() < 1 / (1 + np.exp(-logit)) else 0.0
        battles.append(Battle(MODELS[a], MODELS[b], outcome))
        fa.append([la, rng.integers(0, 3), rng.integers(0, 6), rng.integers(0, 4)])
        fb.append([lb, rng.integers(0, 3), rng.integers(0, 6), rng.integers(0, 4)])
    return battles, np.array(fa), np.array(fb)


def _order(ratings: Mapping[str, MetricValue]) -> list[str]:
    return sorted(MODELS, key=lambda m: -(ratings[m].value or 0.0))


def test_planted_length_bias_is_removed() -> None:
    battles, fa, fb = _synthetic(length_bias=5.0)
    result = fit_style_control(MODELS, battles, fa, fb, rounds=60, seed=0)
    # raw ratings follow length (longest first): the judge's bias wins the plain fit
    assert _order(result.raw) == MODELS[::-1]
    # controlled ratings follow the true quality instead, and no longer follow length
    assert _order(result.controlled) == MODELS
    rho = spearmanr(MEAN_LENGTH, [result.controlled[m].value for m in MODELS]).statistic
    assert rho == pytest.approx(-1.0)
    length = result.coefficients["length"]
    assert length.ci_low is not None and length.ci_low > 0.5  # a large, clearly positive length effect
    for f in ("headers", "lists", "bold"):  # noise features: intervals cover zero
        c = result.coefficients[f]
        assert c.ci_low is not None and c.ci_high is not None and c.ci_low < 0 < c.ci_high, f
    # the best model's controlled CI sits above the worst's
    best, worst = result.controlled["short_best"].ci_low, result.controlled["long_worst"].ci_high
    assert best is not None and worst is not None and best > worst
    assert "style-controlled" in result.markdown() and "| length |" in result.markdown()


def test_without_bias_both_fits_agree() -> None:
    battles, fa, fb = _synthetic(length_bias=0.0, seed=4)
    result = fit_style_control(MODELS, battles, fa, fb, rounds=40, seed=0)
    assert _order(result.raw) == MODELS
    assert _order(result.controlled) == MODELS
    length = result.coefficients["length"]
    assert length.ci_low is not None and length.ci_high is not None and length.ci_low < 0 < length.ci_high


def test_bootstrap_is_seeded() -> None:
    battles, fa, fb = _synthetic(length_bias=2.0, n=300)
    a = fit_style_control(MODELS, battles, fa, fb, rounds=20, seed=3)
    b = fit_style_control(MODELS, battles, fa, fb, rounds=20, seed=3)
    assert a.to_json() == b.to_json()


def test_style_counts_follow_the_arena_rules() -> None:
    text = ("# Title\n## Part\nSome **bold** and __also__ text.\n1. one\n2. two\n- dash\n* star\n"
            "```\n# not a header\n- not a list\n**not bold**\n```\n#no space\n")
    assert style_counts(text) == {"length": len(text), "headers": 2, "lists": 4, "bold": 2}
    assert style_counts("abc", length=lambda s: 7)["length"] == 7


def test_style_matrix_normalises_and_standardises() -> None:
    a = np.array([[10.0, 0.0], [30.0, 0.0], [5.0, 0.0]])
    b = np.array([[10.0, 0.0], [10.0, 0.0], [15.0, 0.0]])
    z, mean, std = style_matrix(a, b)
    ratio = np.array([0.0, 20 / 41, -10 / 21])
    assert mean[0] == pytest.approx(ratio.mean())
    assert z[:, 0] == pytest.approx((ratio - ratio.mean()) / ratio.std())
    assert (z[:, 1] == 0).all() and std[1] == 0  # no spread: left at zero


def test_texts_entry_point() -> None:
    battles = [Battle("x", "y", 1.0), Battle("y", "x", 0.0), Battle("x", "y", 0.5), Battle("y", "x", 1.0)]
    texts = [("long " * 40, "short"), ("short", "**long** " * 30), ("a", "b"), ("## h\n- a\n- b", "plain")]
    result = style_control(["x", "y"], battles, texts, rounds=10)
    assert set(result.controlled) == {"x", "y"} and tuple(result.coefficients) == FEATURES
    with pytest.raises(ValueError, match="answer pairs"):
        style_control(["x", "y"], battles, texts[:2], rounds=5)


def test_from_a_rank_report() -> None:
    """The battles of `harness judge rank` (PairwiseReports) with their answers, as --style-control reads them."""
    from types import SimpleNamespace

    from judges.pairs import PairQuery
    from judges.style import battles_with_texts, style_control_for_rank

    def outcome(final: str | None, x: str, y: str) -> SimpleNamespace:
        return SimpleNamespace(final=final, query=PairQuery("k", "q", x, y))

    run_a, run_b = SimpleNamespace(model_fingerprint="fa"), SimpleNamespace(model_fingerprint="fb")
    pair = SimpleNamespace(run_a=run_a, run_b=run_b, outcomes=[
        outcome("x", "long " * 30, "short"), outcome("tie", "a", "b"), outcome(None, "c", "d"),
        outcome("y", "x", "**bold** " * 20)])
    battles, texts = battles_with_texts([pair])
    assert [b.outcome for b in battles] == [1.0, 0.5, 0.0] and texts[1] == ("a", "b")  # unscored left out
    result = style_control_for_rank(SimpleNamespace(pairs=[pair], runs=[run_a, run_b]), rounds=5)
    assert set(result.raw) == {"fa", "fb"} and result.n_battles == 3
