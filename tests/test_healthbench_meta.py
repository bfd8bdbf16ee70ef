"""HealthBench meta-evaluation (judges.healthbench_meta): upstream's pairwise balanced F1, the
physician ceiling (leave one out), the strict reader, and a grader through a scripted backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import HarnessError
from harness.scoring.rubric_grading import parse_grader_prompt
from harness.types import GenerationRequest
from judges.healthbench_meta import pairwise_f1, physician_row, rater_row, run_meta_study, write_meta
from judges.healthbench_rows import MetaRow, majority, read_meta_rows
from judges.prompt import fenced_blocks
from judges.rubric_grader import SCRIPTED, FunctionRubricGrader, GradeQuery, LLMRubricGrader
from tests.conftest import ROOT, ScriptedBackend

FIXTURE = ROOT / "tests" / "fixtures" / "healthbench_meta_fixture.jsonl"
PROMPT = ROOT / "tasks" / "prompts" / "rubric_grader.yaml"


def test_pairwise_f1_matches_upstream_test() -> None:
    # openai/simple-evals healthbench_meta_eval_test.py, test_compute_agreement_for_rater_by_class
    m = pairwise_f1([True, False, True], [[True, True, False], [True, False], [False]])
    assert m.precision_pos == (2 + 0 + 0) / (3 + 0 + 1) and m.n_precision_pos == 4
    assert m.precision_neg == (0 + 1 + 0) / (0 + 2 + 0) and m.n_precision_neg == 2
    assert m.recall_pos == (2 + 0 + 0) / (2 + 1 + 0) and m.n_recall_pos == 3
    assert m.recall_neg == (0 + 1 + 0) / (1 + 1 + 1) and m.n_recall_neg == 3
    f1_pos = 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)
    f1_neg = 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3)
    assert m.f1_pos == pytest.approx(f1_pos) and m.f1_neg == pytest.approx(f1_neg)
    assert m.f1_balanced == pytest.approx((f1_pos + f1_neg) / 2)
    # upstream's cluster "b" (one row, rater met, physician not): precision+ 0/1 and recall- 0/1
    # only; no recall+ and no precision-, so no F1 for either class and no balanced F1
    b = pairwise_f1([True], [[False]])
    assert (b.precision_pos, b.n_precision_pos, b.recall_neg, b.n_recall_neg) == (0.0, 1, 0.0, 1)
    assert b.precision_neg is None and b.recall_pos is None
    assert b.f1_pos is None and b.f1_neg is None and b.f1_balanced is None


def _rows(*labels: tuple[list[bool], list[str]]) -> list[MetaRow]:
    return [MetaRow(f"r{k}", tuple(lab), tuple(ids), "cluster:x") for k, (lab, ids) in enumerate(labels)]


def test_physician_ceiling_by_hand() -> None:
    rows = _rows(([True, True], ["p1", "p2"]), ([True, False], ["p1", "p3"]),
                 ([False, False, True], ["p2", "p3", "p4"]))
    ceiling = physician_row(rows)
    # (self, other) pairs: (T,T) (T,T) | (T,F) (F,T) | (F,F) (F,T) (F,F) (F,T) (T,F) (T,F)
    assert ceiling.pairwise.n_pairs == 10
    assert ceiling.pairwise.precision_pos == pytest.approx(2 / 5)
    assert ceiling.pairwise.precision_neg == pytest.approx(2 / 5)
    assert ceiling.pairwise.f1_balanced == pytest.approx(0.4)
    assert ceiling.pairwise.agreement == pytest.approx(0.4)
    # against the majority of the others: agree, agree | no, no | split, split, no
    assert ceiling.majority_agreement.value == pytest.approx(2 / 5)
    assert ceiling.majority_agreement.n_scored == 5 and ceiling.n_no_majority == 2
    assert ceiling.n == 7 and ceiling.extra["n_physicians"] == 4
    assert [majority(r.labels) for r in rows] == [True, None, False]


def test_grader_against_physicians_by_hand() -> None:
    rows = _rows(([True, True], ["p1", "p2"]), ([True, False], ["p1", "p3"]),
                 ([False, False, True], ["p2", "p3", "p4"]))
    r = rater_row("g", "grader", "fp", rows, [True, None, False])
    assert r.n_ungraded == 1
    # pairs: (T,T) (T,T) (F,F) (F,F) (F,T): precision+ 2/2, precision- 2/3, recall+ 2/3, recall- 2/2
    assert r.pairwise.f1_pos == pytest.approx(0.8) and r.pairwise.f1_neg == pytest.approx(0.8)
    assert r.majority_agreement.value == 1.0 and r.majority_agreement.n_scored == 2


def _fixture_grader_reply(request: GenerationRequest) -> str:
    """A scripted grader: met iff the criterion's key words appear in the fenced response.
    One criterion gets a broken reply every time (-> ungraded after the retry)."""
    assert request.messages is not None
    last = request.messages[-1].content
    if "not a valid reply" in last:  # the retry's reminder
        criterion = request.messages[-3].content
    else:
        criterion = last
    response = fenced_blocks(criterion).get("RESPONSE", "")
    if "maximum number of doses" in criterion:
        return "I think yes"
    rules = {"X-ray": "X-ray" in response, "antibiotics": "antibiotic" in response,
             "emergency services": "emergency services" in response, "weight": "per kg" in response,
             "stopping medication": "prescriber" in response or "doctor" in response,
             "lead to harm": "no longer need" in response, "jargon": False}
    met = next(v for k, v in rules.items() if k in criterion.split("RUBRIC CRITERION")[-1])
    return json.dumps({"explanation": "scripted", "criteria_met": met})


def test_llm_grader_on_the_fixture(tmp_path: Path) -> None:
    rows = read_meta_rows(FIXTURE, require_texts=True)
    assert len(rows) == 8 and rows[3].prompt is not None and len(rows[3].prompt) == 3
    backend = ScriptedBackend(_fixture_grader_reply)
    prompt = parse_grader_prompt(PROMPT.read_text(encoding="utf-8"), str(PROMPT))
    grader = LLMRubricGrader(backend, prompt, model_label="scripted-grader")
    report = run_meta_study("fixture", "hand-written rows", str(FIXTURE), rows, grader)
    first = report.raters[0]
    assert first.kind == "grader" and first.rater == "scripted-grader"
    decisions = report.decisions["scripted-grader"]
    broken = decisions[4]
    assert broken.met is None and broken.attempts == 2 and broken.raw == ("I think yes", "I think yes")
    assert "not a JSON object" in (broken.error or "")
    assert first.n_ungraded == 1
    # the injected instruction in row 8 did not move the scripted decision, and the fence held it
    assert decisions[7].met is False
    assert [d.met for d in decisions] == [True, False, True, True, None, False, True, False]
    # majority rows: 1 T, 2 F, 3 T, 6 F, 7 T, 8 F (4 split, 5 ungraded): the grader agrees on all
    assert first.majority_agreement.value == 1.0 and first.majority_agreement.n_scored == 6
    assert first.majority_kappa == pytest.approx(1.0)
    assert [r.kind for r in report.raters] == ["grader", "baseline", "baseline", "baseline", "physicians"]
    out = write_meta(report, tmp_path / "study")
    data = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
    assert data["rows"][0]["balanced_f1"] == first.pairwise.f1_balanced
    assert data["judge"]["fingerprint"] == grader.fingerprint()
    items = [json.loads(line) for line in (out / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(items) == 8 and items[4]["met"] is None and items[4]["raw"] == ["I think yes", "I think yes"]
    assert "balanced F1" in (out / "calibration.md").read_text(encoding="utf-8")


def test_scripted_graders() -> None:
    q = GradeQuery("k", (), "text", "criterion")
    assert SCRIPTED["always met"](0).grade([q])[0].met is True
    assert SCRIPTED["never met"](0).grade([q])[0].met is False
    coin = [SCRIPTED["random"](3).grade([GradeQuery(str(k), (), "", "")])[0].met for k in range(40)]
    assert 5 < sum(bool(c) for c in coin) < 35
    assert coin == [SCRIPTED["random"](3).grade([GradeQuery(str(k), (), "", "")])[0].met for k in range(40)]
    none = FunctionRubricGrader("fails", lambda q: None).grade([q])[0]
    assert none.met is None and none.error


def test_labels_only_rows_refuse_a_grader(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"item_id": "hb-1", "dataset": "healthbench", "binary_labels": [True, False],
                                "anonymized_physician_ids": ["a", "b"], "category": "cluster:x"}) + "\n")
    rows = read_meta_rows(path)
    with pytest.raises(HarnessError, match="needs the texts"):
        run_meta_study("labels", "", str(path), rows, SCRIPTED["always met"](0))
    with pytest.raises(HarnessError, match=r"labels\.jsonl:1: .*physician labels only"):
        read_meta_rows(path, require_texts=True)
    report = run_meta_study("labels", "", str(path), rows, None)
    assert report.raters[-1].kind == "physicians" and report.grader_info is None


GOOD: dict[str, Any] = {"prompt": [{"role": "user", "content": "q"}], "completion": "a", "rubric": "r",
                        "category": "cluster:x", "binary_labels": [True], "anonymized_physician_ids": ["p"],
                        "completion_id": "c1", "prompt_id": "p1"}


@pytest.mark.parametrize("edit, message", [
    ({"binary_labels": [True, "false"]}, "binary_labels"),
    ({"binary_labels": []}, "binary_labels"),
    ({"anonymized_physician_ids": ["p", "q"]}, "1 binary_labels but 2"),
    ({"binary_labels": [True, False], "anonymized_physician_ids": ["p", "p"]}, "twice"),
    ({"rubrics": []}, "unknown key"),
    ({"completion": None}, "must be strings"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "last message"),
    ({"prompt": [{"role": "doctor", "content": "q"}]}, r"prompt\[0\]"),
    ({"category": ""}, "category"),
])
def test_reader_errors_name_file_and_line(tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    path = tmp_path / "meta.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "completion_id": "c2", **edit}) + "\n")
    with pytest.raises(HarnessError, match=message) as err:
        read_meta_rows(path)
    assert f"{path}:2:" in str(err.value)


def test_reader_structure_errors(tmp_path: Path) -> None:
    path = tmp_path / "meta.jsonl"
    partial = {k: v for k, v in GOOD.items() if k != "rubric"}
    for body, message in ((json.dumps(GOOD) + "\n{not json\n", "meta.jsonl:2: invalid JSON"),
                          (json.dumps(partial) + "\n", "has prompt, completion but not rubric"),
                          (json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n", "repeats line 1"),
                          ("\n", "no rows")):
        path.write_text(body)
        with pytest.raises(HarnessError, match=message):
            read_meta_rows(path)


def test_physician_ceiling_of_the_shared_labels(shared_data: Path) -> None:
    """The number the README quotes: 120 rows, 250 labels, physicians each against the others."""
    path = shared_data / "healthbench" / "meta_eval_physician_labels_gold120.jsonl"
    rows = read_meta_rows(path)
    report = run_meta_study("healthbench_meta_gold120", "labels only", str(path), rows, None)
    c = report.ceiling()
    assert (len(rows), c.n, c.pairwise.n_pairs) == (120, 250, 282)
    assert c.pairwise.f1_balanced == pytest.approx(0.7185, abs=5e-4)
    assert c.pairwise.agreement == pytest.approx(0.7447, abs=5e-4)
    assert c.pairwise_kappa == pytest.approx(0.437, abs=1e-3)
    assert c.majority_agreement.value == pytest.approx(0.7521, abs=5e-4)
