"""Graders' and judges' measured agreement with humans on the leaderboard: a calibration study
stored with `harness judge calibrate --store` (kind "calibration") shows beside every rubric task
graded by the same grader (model fingerprint, prompt hash, parser, generation settings) and
every judge result of the same judge fingerprint; any other grader, including the same model
with another prompt, is "not calibrated". Real run folders from the runner on scripted backends."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.run.config import AuxModel, RubricOptions, RunConfig
from harness.run.runner import Runner
from judges.calibration import CalibrationDataset, CalibrationItem, calibration_results, run_study
from judges.healthbench_meta import calibration_results as grader_results
from judges.healthbench_meta import run_meta_study
from judges.healthbench_rows import read_meta_rows
from judges.judge import Judge
from judges.pairs import LLMPairJudge
from judges.prompt import load_prompt
from judges.rubric_grader import LLMRubricGrader, load_grader_prompt
from leaderboard.calibration import NOT_CALIBRATED, agreement_text, graders_agreement, graders_of_task
from leaderboard.export import render
from leaderboard.rankings import leaderboard_from_store
from leaderboard.site import build_site
from leaderboard.store import GenericResult, Store
from tests.conftest import ROOT, ScriptedBackend
from tests.test_healthbench_meta import FIXTURE, _fixture_grader_reply

KEY = "healthbench|rubric|0shot"
# the built-in grader prompt with one comment added: the same prompt in every setting (max tokens,
# parser, style) except its text hash
EDITED_PROMPT = (ROOT / "tasks" / "prompts" / "rubric_grader.yaml").read_text(encoding="utf-8") + "\n# edited\n"


class GraderBackend(ScriptedBackend):
    """A scripted model with a fingerprint of its own: a grader (the run and the study must
    agree on it) or a model under test (one leaderboard row each)."""

    def __init__(self, reply: Any, fingerprint: str = "grader-weights-1"):
        super().__init__(reply)
        self._fp = fingerprint

    def fingerprint(self) -> str:
        return self._fp


def _met(r: Any) -> str:
    return json.dumps({"explanation": "scripted", "criteria_met": True})


def rubric_run(tmp_path: Path, name: str, *, grader_fp: str = "grader-weights-1",
               prompt_text: str | None = None) -> Path:
    """A real rubric run (bundled HealthBench samples) graded by a scripted grader."""
    rubric = RubricOptions(grader_prompt={"source": "edited.yaml", "text": prompt_text}) if prompt_text else None  # type: ignore[arg-type]
    config = RunConfig(tasks=("healthbench",), data_source="bundled", output=tmp_path / name, cache=None,
                       aux_models={"grader": AuxModel(backend="scripted", model="grader-x")}, rubric=rubric)
    candidate = GraderBackend(lambda r: f"{name}: call an ambulance now.", f"candidate-{name}")
    Runner(config, backend=candidate, aux_backends={"grader": GraderBackend(_met, grader_fp)}).run()
    return tmp_path / name


def grader_study(grader_fp: str = "grader-weights-1") -> list[GenericResult]:
    """The grader's meta-evaluation on the hand-written fixture rows, as stored results."""
    rows = read_meta_rows(FIXTURE, require_texts=True)
    grader = LLMRubricGrader(GraderBackend(_fixture_grader_reply, grader_fp), load_grader_prompt(None),
                             model_label="scripted-grader")
    report = run_meta_study("fixture_meta", "hand-written rows", str(FIXTURE), rows, grader)
    return grader_results(report, {"limit": None, "seed": 0, "prompt": None})


def _rubric_cell(store: Store, name: str) -> Any:
    lb = leaderboard_from_store(store)
    row = next(r for r in lb.rows if any(c.run_path and c.run_path.endswith(name) for c in r.cells.values()))
    return next(c for c in row.cells.values() if c.run_path and c.run_path.endswith(name))


def test_study_result_holds_the_headline_numbers() -> None:
    [res] = grader_study()
    d = res.details
    assert res.kind == "calibration" and res.name == "fixture_meta" and res.model_fingerprint == "grader-weights-1"
    assert res.n == 7 and res.n_unscored == 1  # 8 rows, one reply never parsed
    assert d["kappa"] == pytest.approx(1.0) and d["agreement"] == 1.0 and d["agreement_n"] == 6
    assert res.value == d["balanced_f1"] is not None
    assert len(d["prompt"]["sha256"]) == 64 and d["generation"]["temperature"] == 0.0
    assert d["settings"] == {"limit": None, "seed": 0, "prompt": None}
    assert agreement_text(res) == f"F1 {d['balanced_f1']:.2f}, κ 1.00 (fixture_meta, n=7)"


def test_calibrated_grader_shows_its_numbers_other_prompt_does_not(tmp_path: Path) -> None:
    same = rubric_run(tmp_path, "same-grader")
    other_prompt = rubric_run(tmp_path, "other-prompt", prompt_text=EDITED_PROMPT)
    other_model = rubric_run(tmp_path, "other-model", grader_fp="grader-weights-2")
    [study] = grader_study()
    with Store(tmp_path / "s.sqlite") as store:
        for run in (same, other_prompt, other_model):
            store.import_run(run)
        before = _rubric_cell(store, "same-grader")
        assert before.grader_agreement == NOT_CALIBRATED and before.graders[0].model_fingerprint == "grader-weights-1"
        assert store.add_results([study]) == 1
        expected = agreement_text(study)
        assert expected.startswith("F1 ") and "κ 1.00 (fixture_meta, n=7)" in expected
        assert _rubric_cell(store, "same-grader").grader_agreement == expected
        # same grader model, another prompt (hash): not the grader the study measured
        edited = _rubric_cell(store, "other-prompt")
        assert edited.graders[0].prompt_sha256 != before.graders[0].prompt_sha256
        assert (edited.graders[0].max_tokens, edited.graders[0].temperature) == (before.graders[0].max_tokens, 0.0)
        assert edited.grader_agreement == NOT_CALIBRATED
        assert _rubric_cell(store, "other-model").grader_agreement == NOT_CALIBRATED
        lb = leaderboard_from_store(store)
        assert [g.key for g in lb.calibrations] == [study.key]
        assert not any(c.kind == "calibration" for c in lb.extra_columns)
        assert all(r.model_fingerprint != "grader-weights-1" for r in lb.rows)  # the study is no model row
        table = render(lb, "table")
        # another prompt is another task fingerprint too: a column of its own, so two grader rows
        lines = "\n".join(x for x in table.splitlines() if x.startswith("  grader agreement"))
        assert lines.count(expected) == 1 and lines.count(NOT_CALIBRATED) == 2
        data = json.loads(render(lb, "json"))
        assert data["calibrations"][0]["details"]["dataset"] == "fixture_meta"
        shown = sorted(c["grader_agreement"] for r in data["rows"] for c in r["cells"].values())
        assert shown == sorted([expected, NOT_CALIBRATED, NOT_CALIBRATED])
        site = build_site(lb, tmp_path / "site", history=store.task_results())
    index = site.index.read_text(encoding="utf-8")
    graders = [re.sub(r"\s+", " ", g) for g in re.findall(r'<small class="grader[^"]*">(.*?)</small>', index, re.S)]
    assert sorted(graders) == sorted([f"grader agreement: {expected}", "grader agreement: not calibrated",
                                      "grader agreement: not calibrated"])
    page = next(p for p in site.model_pages if "grader agreement with humans" in p.read_text(encoding="utf-8")
                and expected in p.read_text(encoding="utf-8"))
    assert "grader grader-x · prompt" in page.read_text(encoding="utf-8")


def test_non_rubric_tasks_have_no_grader_line(tmp_path: Path) -> None:
    config = RunConfig(tasks=("medqa",), data_source="bundled", output=tmp_path / "mcqa", cache=None, limit=5)
    Runner(config, backend=ScriptedBackend()).run()
    with Store(tmp_path / "s.sqlite") as store:
        store.import_run(tmp_path / "mcqa")
        store.add_results(grader_study())
        lb = leaderboard_from_store(store)
    [cell] = lb.rows[0].cells.values()
    assert cell.graders == () and cell.grader_agreement is None
    assert "grader agreement" not in render(lb, "table")


def _pairwise_judge() -> Judge:
    verdict = json.dumps({"verdict": "A"})
    return Judge(GraderBackend(lambda r: verdict, "judge-weights"), load_prompt("pairwise"), model_label="pj")


def test_judge_results_show_the_calibration_of_their_judge_fingerprint(tmp_path: Path) -> None:
    judge = _pairwise_judge()
    items = [CalibrationItem(f"i{k}", f"question {k}", f"first {k}", f"second answer {k}", (1 + k % 2,))
             for k in range(6)]
    report = run_study(CalibrationDataset("tiny_pairs", "-", "llmbar", "six pairs"), items, LLMPairJudge(judge))
    [study] = calibration_results(report, {"limit": None, "seed": 0, "prompt": None})
    assert study.details["judge_fingerprint"] == judge.fingerprint() and study.n == 6
    text = agreement_text(study)
    assert re.fullmatch(r"agreement \d\.\d\d, κ (-?\d\.\d\d|n/a) \(tiny_pairs, n=6\)", text)
    judged = {"kind": "judge_pairwise", "name": "win_rate", "value": 0.5, "ci": (0.2, 0.8), "n": 6}
    with Store(tmp_path / "s.sqlite") as store:
        store.add_results([
            study,
            GenericResult(model_name="m1", model_fingerprint="w1", fingerprint="pair-1",
                          details={"judge_fingerprint": judge.fingerprint(), "judge_model": "pj"}, **judged),
            # the same judge model with another prompt has another judge fingerprint
            GenericResult(model_name="m2", model_fingerprint="w2", fingerprint="pair-2",
                          details={"judge_fingerprint": "another-prompt", "judge_model": "pj"}, **judged),
        ])
        lb = leaderboard_from_store(store)
    by_model = {r.model_name: r for r in lb.rows}
    assert list(by_model["m1"].judge_agreement.values()) == [text]
    assert list(by_model["m2"].judge_agreement.values()) == [NOT_CALIBRATED]
    table = render(lb, "table")
    lines = [x for x in table.splitlines() if x.startswith("  judge agreement")]  # one per result column
    assert len(lines) == 2 and text in lines[0] + lines[1] and NOT_CALIBRATED in lines[0] + lines[1]
    site = build_site(lb, tmp_path / "site")
    m1 = next(p for p in site.model_pages if p.name.startswith("m1-")).read_text(encoding="utf-8")
    cell = re.search(r'<td class="calibration">(.*?)</td>', m1, re.S)
    assert cell is not None and text in cell.group(1)
    m2 = next(p for p in site.model_pages if p.name.startswith("m2-")).read_text(encoding="utf-8")
    assert "not calibrated" in re.search(r'<td class="calibration">(.*?)</td>', m2, re.S).group(1)  # type: ignore[union-attr]


def test_study_text_is_escaped_in_html(tmp_path: Path) -> None:
    run = rubric_run(tmp_path, "r")
    [study] = grader_study()
    planted = study.model_copy(update={"details": {**study.details, "dataset": "<script>alert(1)</script>"}})
    with Store(tmp_path / "s.sqlite") as store:
        store.import_run(run)
        store.add_results([planted])
        site = build_site(leaderboard_from_store(store), tmp_path / "site")
    html = site.index.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html


def test_cli_baselines_only_study_stores_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data" / "healthbench"
    data.mkdir(parents=True)
    shutil.copy(FIXTURE, data / "meta_eval_physician_labels_gold120.jsonl")  # labels (and texts) in the schema
    store = tmp_path / "s.sqlite"
    rc = main(["judge", "calibrate", "--dataset", "healthbench_meta_gold120", "--data-dir", str(tmp_path / "data"),
               "--baselines-only", "--store", str(store), "--output", str(tmp_path / "out"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "physicians (each vs the others)" in out
    assert "store: nothing stored: a baselines-only study" in out
    with Store(store) as s:
        assert s.generic_results() == []


def test_a_jury_shows_each_graders_agreement() -> None:
    """A jury's record (aux roles grader, grader_2, ...) as harness.protocols.rubric writes it."""
    [study] = grader_study()
    extra = {"grader_prompt": dict(study.details["prompt"]), "grader_parser": dict(study.details["parser"]),
             "grader_generation": {"max_tokens": study.details["generation"]["max_tokens"], "temperature": 0.0},
             "aux_models": {"grader_2": {"name": "grader-y", "fingerprint": "grader-weights-2"},
                            "grader": {"name": "grader-x", "fingerprint": "grader-weights-1"},
                            "patient": {"name": "p", "fingerprint": "not-a-grader"}}}
    graders = graders_of_task(extra)
    assert [g.role for g in graders] == ["grader", "grader_2"]
    text, calibrated = graders_agreement(graders, [study])
    assert text == f"grader (grader-x): {agreement_text(study)}; grader_2 (grader-y): {NOT_CALIBRATED}"
    assert not calibrated
    assert graders_agreement(graders[:1], [study]) == (agreement_text(study), True)
    hotter = {**extra, "grader_generation": {**extra["grader_generation"], "temperature": 0.7}}
    assert graders_agreement(graders_of_task(hotter)[:1], [study]) == (NOT_CALIBRATED, False)
