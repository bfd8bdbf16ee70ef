"""`harness compare`: paired tests with known answers (tests/fixtures/leaderboard_compare_cases.json)
on constructed runs, exit codes a nightly job can gate on, and refusal of incomparable runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_leaderboard_support import make_run, make_task

from harness.cli import main
from harness.errors import HarnessError
from harness.scoring.intervals import MetricValue
from harness.scoring.metrics import METRICS
from leaderboard.compare import compare_runs, mcnemar_exact, paired_permutation

CASES = json.loads((Path(__file__).parent / "fixtures" / "leaderboard_compare_cases.json").read_text())


@pytest.mark.parametrize("case", CASES["mcnemar"], ids=lambda c: f"b{c['b']}-c{c['c']}")
def test_mcnemar_exact(case: dict[str, Any]) -> None:
    base = [1.0] * case["b"] + [0.0] * case["c"] + [1.0] * 7 + [0.0] * 3  # plus concordant pairs
    new = [0.0] * case["b"] + [1.0] * case["c"] + [1.0] * 7 + [0.0] * 3
    p, b, c = mcnemar_exact(base, new)
    assert (b, c) == (case["b"], case["c"])
    assert p == pytest.approx(case["p"], rel=1e-9)


@pytest.mark.parametrize("case", CASES["permutation"], ids=lambda c: f"n{c['n']}")
def test_paired_permutation_exact(case: dict[str, Any]) -> None:
    base = [0.1 * i for i in range(case["n"])]
    new = [v + case["delta"] for v in base]
    assert paired_permutation(base, new, seed=0) == pytest.approx(case["p"])


def _scenario_runs(tmp_path: Path, sc: dict[str, Any]) -> tuple[Path, Path]:
    n = sc["n"]
    n_right = round(n * sc["base_correct"])
    base = [1.0 if i < n_right else 0.0 for i in range(n)]
    base = [base[(i * 7) % n] for i in range(n)]  # interleave right and wrong ids (7 is coprime to n)
    new = list(base)
    right = [i for i, v in enumerate(base) if v == 1.0]
    wrong = [i for i, v in enumerate(base) if v == 0.0]
    for i in right[: sc["flip_right_to_wrong"]]:
        new[i] = 0.0
    for i in wrong[: sc["flip_wrong_to_right"]]:
        new[i] = 1.0
    b = make_run(tmp_path / "base", {"medqa": make_task(base, fingerprint="f")})
    m = make_run(tmp_path / "new", {"medqa": make_task(new, fingerprint="f")})
    return b, m


@pytest.mark.parametrize("sc", CASES["scenarios"], ids=lambda s: s["name"])
def test_scenarios(tmp_path: Path, sc: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    base, new = _scenario_runs(tmp_path, sc)
    cmp = compare_runs(base, new, max_drop=sc["max_drop"])
    [t] = cmp.tasks
    assert t.test == "mcnemar-exact" and t.n_pairs == sc["n"]
    assert t.delta == pytest.approx((sc["flip_wrong_to_right"] - sc["flip_right_to_wrong"]) / sc["n"])
    assert t.verdict == sc["verdict"]
    if "p" in sc:
        assert t.p_value == pytest.approx(sc["p"], rel=1e-9)
    rc = main(["compare", str(base), str(new), "--max-drop", str(sc["max_drop"])])
    out = capsys.readouterr().out
    assert rc == sc["exit"]
    assert sc["verdict"] in out and "medqa|loglik|0shot" in out


def test_alpha_decides_significance(tmp_path: Path) -> None:
    base, new = _scenario_runs(tmp_path, {"n": 1000, "base_correct": 0.7, "flip_right_to_wrong": 6,
                                          "flip_wrong_to_right": 0})
    assert compare_runs(base, new).regressions  # p = 0.03125
    assert not compare_runs(base, new, alpha=0.01).regressions


def test_continuous_values_use_a_paired_permutation_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    base = rng.uniform(0, 1, 300).round(4).tolist()
    worse = [round(v - 0.03 + rng.normal(0, 0.02), 4) for v in base]
    noisy = [round(v + (0.01 if i % 2 else -0.01), 4) for i, v in enumerate(base)]
    b = make_run(tmp_path / "base", {"qa": make_task(base, fingerprint="f", metric="accuracy")})
    w = make_run(tmp_path / "worse", {"qa": make_task(worse, fingerprint="f", metric="accuracy")})
    z = make_run(tmp_path / "noisy", {"qa": make_task(noisy, fingerprint="f", metric="accuracy")})
    [t] = compare_runs(b, w).tasks
    assert t.test == "paired-permutation" and t.verdict == "REGRESSION" and t.p_value < 1e-3  # type: ignore[operator]
    assert compare_runs(b, w, seed=1).tasks[0].p_value == t.p_value  # the minimum p: all permutations lose
    [t] = compare_runs(b, z).tasks
    assert t.verdict == "no significant change" and t.p_value > 0.5  # type: ignore[operator]
    assert compare_runs(b, z).tasks[0].p_value == t.p_value  # seeded: reproducible


def test_unscored_and_unmatched_samples_are_left_out_and_counted(tmp_path: Path) -> None:
    n = 100
    base = [1.0] * n
    new = [1.0] * n
    for i in range(5):
        base[i] = None  # type: ignore[call-overload]
    for i in range(3, 10):
        new[i] = None  # type: ignore[call-overload]
    ids = [f"s{i}" for i in range(n)]
    b = make_run(tmp_path / "base", {"t": make_task(base, fingerprint="f", ids=ids)})
    m = make_run(tmp_path / "new", {"t": make_task(new[:-4], fingerprint="f", ids=ids[:-4])})
    [t] = compare_runs(b, m).tasks
    assert (t.n_unscored_pairs, t.n_unmatched, t.n_pairs) == (10, 4, 86)
    assert (t.base, t.new, t.p_value) == (1.0, 1.0, 1.0)


def test_mismatched_fingerprints_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = make_run(tmp_path / "base", {"medqa": make_task([1, 0], fingerprint="aaaa1111"),
                                     "pubmedqa": make_task([1, 0], fingerprint="p")})
    m = make_run(tmp_path / "new", {"medqa": make_task([1, 0], fingerprint="bbbb2222"),
                                    "pubmedqa": make_task([1, 0], fingerprint="p")})
    with pytest.raises(HarnessError, match=r"new/run.json: tasks.medqa\|loglik\|0shot.task_fingerprint bbbb2222 "
                                           r"differs from aaaa1111 in .*base/run.json"):
        compare_runs(b, m)
    assert main(["compare", str(b), str(m)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not comparable" in err


def test_tasks_in_one_run_only_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    medqa = make_task([1, 0], fingerprint="f")
    b = make_run(tmp_path / "base", {"medqa": medqa, "old": make_task([1], fingerprint="o")})
    m = make_run(tmp_path / "new", {"medqa": medqa, "fresh": make_task([1], fingerprint="x")})
    cmp = compare_runs(b, m)
    assert [t.task_key for t in cmp.tasks] == ["medqa|loglik|0shot"]
    assert (cmp.only_base, cmp.only_new) == (["old|loglik|0shot"], ["fresh|loglik|0shot"])
    other = make_run(tmp_path / "other", {"x": make_task([1], fingerprint="x")})
    with pytest.raises(HarnessError, match="share no task"):
        compare_runs(b, other)
    assert main(["compare", str(b), str(m), "--alpha", "1.5"]) == 2
    assert "--alpha must be between 0 and 1" in capsys.readouterr().err


class _CorpusMean:
    """A corpus-level metric (no per-sample reader), as BLEU is: compare must bootstrap it."""

    name = "lb_test_corpus_mean"
    higher_is_better = True

    def aggregate(self, scores: Any, options: Any = None) -> MetricValue:
        values = [s.value for s in scores if s.value is not None]
        mean = sum(values) / len(values) if values else None
        return MetricValue(self.name, mean, None, None, len(values), len(scores) - len(values), "none")


def test_corpus_metrics_use_a_paired_bootstrap(tmp_path: Path) -> None:
    if _CorpusMean.name not in METRICS:
        METRICS.add(_CorpusMean.name, _CorpusMean())
    base = [1.0 if i % 10 < 7 else 0.0 for i in range(1000)]
    worse = [0.0 if i < 500 and v == 1.0 and i % 5 == 0 else v for i, v in enumerate(base)]
    runs = {name: make_run(tmp_path / name, {"gen": make_task(vals, fingerprint="f", metric=_CorpusMean.name)})
            for name, vals in [("base", base), ("worse", worse)]}
    [t] = compare_runs(runs["base"], runs["worse"]).tasks
    assert t.test == "paired-bootstrap" and t.verdict == "REGRESSION" and t.p_value == 0.0
    assert t.delta == pytest.approx(-sum(a - b for a, b in zip(base, worse, strict=True)) / 1000)
    [t] = compare_runs(runs["base"], runs["base"]).tasks
    assert t.verdict == "no significant change" and t.p_value == 1.0
