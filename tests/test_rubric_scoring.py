"""HealthBench rubric scoring (harness.scoring.rubric) on golden cases computed by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.scoring.rubric import (
    LengthPenalty,
    RubricItem,
    clipped_mean,
    parse_rubric_items,
    points_score,
    score_example,
    summarize,
)

CASES = json.loads((Path(__file__).parent / "fixtures" / "rubric_cases.json").read_text(encoding="utf-8"))


def _items(raw: list[list[Any]]) -> list[RubricItem]:
    return [RubricItem(f"criterion {k}", float(points), tuple(tags)) for k, (points, tags) in enumerate(raw)]


@pytest.mark.parametrize("case", CASES["examples"], ids=lambda c: c["name"])
def test_example_scores(case: dict[str, Any]) -> None:
    got = score_example(_items(case["items"]), case["met"], case["example_tags"], partial=case["partial"])
    if case["score"] is None:
        assert got.score is None
        assert got.reason
    else:
        assert got.score == pytest.approx(case["score"], abs=1e-12)
    assert dict(got.tag_scores) == pytest.approx(case["tags"], abs=1e-12)
    assert set(got.tag_scores) == set(case["tags"])
    assert got.n_ungraded == case.get("n_ungraded", 0)


@pytest.mark.parametrize("case", CASES["aggregates"], ids=lambda c: c["name"])
def test_clipped_mean(case: dict[str, Any]) -> None:
    got = clipped_mean(case["values"], rounds=200, seed=3)
    assert (got.n_scored, got.n_unscored) == (case["n_scored"], case["n_unscored"])
    if case["value"] is None:
        assert got.value is None and got.ci_low is None
        return
    assert got.value == pytest.approx(case["value"])
    assert got.unclipped == pytest.approx(case["unclipped"])
    assert got.ci_low is not None and got.ci_high is not None and got.value is not None
    assert 0.0 <= got.ci_low <= got.value <= got.ci_high <= 1.0
    if "ci" in case:
        assert [got.ci_low, got.ci_high] == pytest.approx(case["ci"])
        assert got.bootstrap_std == pytest.approx(case["bootstrap_std"])


def test_bootstrap_is_seeded_and_clipped() -> None:
    values = [0.9, -0.5, 0.4, 0.1, 0.7, -1.2, 0.3, 0.8]
    a, b, c = (clipped_mean(values, rounds=500, seed=s) for s in (7, 7, 8))
    assert (a.ci_low, a.ci_high, a.bootstrap_std) == (b.ci_low, b.ci_high, b.bootstrap_std)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low is not None and a.ci_low >= 0.0  # clipped resample means
    below = clipped_mean([-1.0, -0.5, -2.0], rounds=100)
    assert (below.value, below.ci_low, below.ci_high) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("mode", ["strict", "partial"])
def test_summary_breakdowns(mode: str) -> None:
    spec = CASES["summary"]
    expected = spec[mode]
    examples = [score_example(_items(e["items"]), e["met"], e["example_tags"], partial=mode == "partial")
                for e in spec["examples"]]
    summary = summarize(examples, rounds=100, partial=mode == "partial")
    assert summary.overall.value == pytest.approx(expected["overall"])
    assert summary.overall.n_unscored == expected["n_unscored"]
    for table, got in (("by_theme", summary.by_theme), ("by_axis", summary.by_axis)):
        assert set(got) == set(expected[table])
        for name, (value, n_scored, n_unscored) in expected[table].items():
            assert (got[name].n_scored, got[name].n_unscored) == (n_scored, n_unscored), (table, name)
            assert got[name].value == (None if value is None else pytest.approx(value)), (table, name)
    assert summary.n_ungraded_items == 1 and summary.n_examples_with_ungraded == 1
    assert set(summary.by_tag) >= {"theme:hedging", "axis:accuracy"}


@pytest.mark.parametrize("case", CASES["length_penalty"], ids=lambda c: str(c["chars"]))
def test_length_penalty(case: dict[str, Any]) -> None:
    assert LengthPenalty()(case["chars"]) == pytest.approx(case["linear"])
    assert LengthPenalty(stepwise=True)(case["chars"]) == pytest.approx(case["stepwise"])


def test_length_adjusted_beside_plain_score() -> None:
    items = _items([[1, []]])
    examples = [score_example(items, [True], response_chars=3000), score_example(items, [True], response_chars=100)]
    summary = summarize(examples, rounds=50, length_penalty=LengthPenalty())
    assert summary.overall.value == 1.0
    assert summary.length_adjusted is not None
    assert summary.length_adjusted.value == pytest.approx(1.0 - 0.0294 / 2)
    with pytest.raises(ValueError, match="response length"):
        summarize([score_example(items, [True])], length_penalty=LengthPenalty())


def test_scripted_graders() -> None:
    spec = CASES["scripted_graders"]
    items = _items(spec["items"])
    assert points_score(items, [True] * len(items)) == pytest.approx(spec["always_met"])
    assert points_score(items, [False] * len(items)) == pytest.approx(spec["never_met"])
    assert points_score(items, [i.points > 0 for i in items]) == pytest.approx(spec["met_iff_positive"])


def test_upstream_rendering_of_an_item() -> None:
    assert str(RubricItem("Advises rest", 5.0)) == "[5] Advises rest"
    assert str(RubricItem("Is verbose", -2.5)) == "[-2.5] Is verbose"


@pytest.mark.parametrize("data, message", [
    ([], "non-empty list"),
    ([{"criterion": "x", "points": "5", "tags": []}], "points"),
    ([{"criterion": "", "points": 5, "tags": []}], "criterion"),
    ([{"criterion": "x", "points": 5, "tags": ["a", "a"]}], "duplicate"),
    ([{"criterion": "x", "points": 5, "tags": [], "weight": 1}], "unknown key"),
    ([{"criterion": "x", "points": True, "tags": []}], "points"),
])
def test_rubric_items_are_checked(data: Any, message: str) -> None:
    with pytest.raises(HarnessError, match=message) as err:
        parse_rubric_items(data, "rows.jsonl:3")
    assert "rows.jsonl:3" in str(err.value)


def test_parse_upstream_rows_when_available() -> None:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "healthbench" / "oss_eval_sample.jsonl"
    if not path.is_file():
        pytest.skip("shared HealthBench sample not present")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    items = [parse_rubric_items(r["rubrics"], f"{path.name}:{k + 1}") for k, r in enumerate(rows)]
    assert sum(len(i) for i in items) == 352  # MANIFEST_ENTRY.md
    positive = sum(i.points for rubric in items for i in rubric if i.points > 0)
    assert positive == 1664
    # met iff positive gives every example 1.0; never met gives 0.0
    assert {points_score(r, [i.points > 0 for i in r]) for r in items} == {1.0}
    assert {points_score(r, [False] * len(r)) for r in items} == {0.0}


def test_a_tag_without_positive_items_is_left_out_not_unscored() -> None:
    # ex1: completeness has only a negative item -> no completeness value (upstream omits it);
    # ex2: completeness 2/6; an unscored ex3 carrying completeness counts as unscored
    ex1 = score_example(_items([[3, ["axis:accuracy"]], [-2, ["axis:completeness"]]]), [True, False])
    ex2 = score_example(_items([[4, ["axis:completeness"]], [2, ["axis:completeness"]]]), [False, True])
    ex3 = score_example(_items([[5, ["axis:completeness"]]]), [None])
    summary = summarize([ex1, ex2, ex3], rounds=20)
    c = summary.by_axis["completeness"]
    assert (c.value, c.n_scored, c.n_unscored) == (pytest.approx(2 / 6), 1, 1)
