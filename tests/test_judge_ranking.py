"""Bradley–Terry: known odds give the known Elo gap, ties count half, the fit equals an
independent (scikit-learn) ridge logistic regression, bootstrap CIs are seeded."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from harness.errors import HarnessError
from judges.ranking import ELO_SCALE, RIDGE, Battle, bradley_terry, fit_bradley_terry


def test_three_to_one_odds_is_a_191_point_gap() -> None:
    battles = [Battle("a", "b", 1.0)] * 30 + [Battle("a", "b", 0.0)] * 10
    a, b = fit_bradley_terry(["a", "b"], battles, ridge=0.0)
    assert a - b == pytest.approx(400 * math.log10(3), abs=1e-3)
    assert (a + b) / 2 == pytest.approx(1000.0)
    shrunk = fit_bradley_terry(["a", "b"], battles)  # the default weak prior barely moves it
    assert shrunk[0] - shrunk[1] == pytest.approx(400 * math.log10(3), abs=1.0)


def test_ties_count_half_a_win_each() -> None:
    with_ties = [Battle("a", "b", 1.0)] * 10 + [Battle("a", "b", 0.5)] * 10
    a, b = fit_bradley_terry(["a", "b"], with_ties, ridge=0.0)
    assert a - b == pytest.approx(400 * math.log10(3), abs=1e-3)  # 15 of 20 points
    even = fit_bradley_terry(["a", "b"], [Battle("a", "b", 0.5)] * 8)
    assert even == pytest.approx([1000.0, 1000.0])


def test_matches_scikit_learn_ridge_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(0)
    models = ["m0", "m1", "m2", "m3"]
    strength = {"m0": 1.0, "m1": 0.3, "m2": -0.2, "m3": -1.1}
    battles = []
    for _ in range(300):
        a, b = rng.sample(models, 2)
        p = 1 / (1 + math.exp(strength[b] - strength[a]))
        u = rng.random()
        battles.append(Battle(a, b, 1.0 if u < p * 0.9 else 0.5 if u < p * 0.9 + 0.1 else 0.0))
    ours = fit_bradley_terry(models, battles)
    # ties as a half-weighted win plus a half-weighted loss; sklearn minimises
    # 0.5|w|^2 + C * sum(loss), ours sum(loss) + RIDGE |w|^2: C = 1 / (2 RIDGE)
    x, y, weight = [], [], []
    for bt in battles:
        row = np.zeros(len(models))
        row[models.index(bt.a)], row[models.index(bt.b)] = 1.0, -1.0
        for label, wgt in ((1, bt.outcome), (0, 1.0 - bt.outcome)):
            if wgt > 0:
                x.append(row)
                y.append(label)
                weight.append(wgt)
    lr = LogisticRegression(fit_intercept=False, C=1 / (2 * RIDGE), tol=1e-10, max_iter=10_000)
    lr.fit(np.array(x), np.array(y), sample_weight=np.array(weight))
    beta = lr.coef_[0] - lr.coef_[0].mean()
    assert ours == pytest.approx(1000 + ELO_SCALE * beta, abs=0.05)
    assert list(np.argsort(-ours)) == [0, 1, 2, 3]


def test_bootstrap_cis_are_seeded_and_cover_the_estimate() -> None:
    battles = [Battle("a", "b", 1.0)] * 12 + [Battle("a", "b", 0.0)] * 8 + [Battle("b", "c", 1.0)] * 9 \
        + [Battle("b", "c", 0.5)] * 6 + [Battle("a", "c", 0.0)] * 2 + [Battle("a", "c", 1.0)] * 3
    one = bradley_terry(["a", "b", "c"], battles, rounds=300, seed=5)
    two = bradley_terry(["a", "b", "c"], battles, rounds=300, seed=5)
    assert one == two
    for m, v in one.items():
        assert v.ci_low is not None and v.ci_high is not None and v.value is not None
        assert v.ci_low < v.value < v.ci_high, m
        assert v.ci_method == "bootstrap"
    assert one["a"].n_scored == 25 and one["c"].n_scored == 20
    other = bradley_terry(["a", "b", "c"], battles, rounds=300, seed=6)
    assert other["a"].value == one["a"].value and other["a"].ci_low != one["a"].ci_low


def test_separation_stays_finite() -> None:
    battles = [Battle("a", "b", 1.0)] * 5
    a, b = fit_bradley_terry(["a", "b"], battles)
    assert math.isfinite(a) and a > b


def test_errors() -> None:
    with pytest.raises(HarnessError, match="at least two"):
        bradley_terry(["a"], [])
    with pytest.raises(HarnessError, match="no scored battles"):
        bradley_terry(["a", "b"], [])
