import pytest

from harness.scoring.intervals import mean_with_ci
from harness.scoring.metrics import METRICS
from harness.types import Score


def test_wilson_interval_known_value():
    # 7/10: Wilson 95% interval is (0.3968, 0.8922).
    m = mean_with_ci("accuracy", [1.0] * 7 + [0.0] * 3)
    assert m.value == pytest.approx(0.7) and m.ci_method == "wilson"
    assert m.ci_low == pytest.approx(0.3968, abs=1e-4) and m.ci_high == pytest.approx(0.8922, abs=1e-4)


def test_unscored_is_excluded_and_counted():
    m = METRICS.get("accuracy").aggregate([Score(1.0), Score(None), Score(0.0), Score(None)])
    assert (m.value, m.n_scored, m.n_unscored) == (0.5, 2, 2)


def test_all_unscored_gives_no_value():
    m = mean_with_ci("accuracy", [None, None])
    assert m.value is None and m.n_unscored == 2


def test_continuous_values_use_seeded_bootstrap():
    values = [0.1, 0.4, 0.35, 0.8, 0.55, 0.2, 0.9, 0.6]
    a, b = mean_with_ci("x", values), mean_with_ci("x", values)
    assert a.ci_method == "bootstrap" and (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low < a.value < a.ci_high


def test_accuracy_norm_reads_protocol_values():
    scores = [Score(1.0, metadata={"values": {"accuracy_norm": 0.0}}),
              Score(0.0, metadata={"values": {"accuracy_norm": 1.0}})]
    assert METRICS.get("accuracy_norm").aggregate(scores).value == 0.5
