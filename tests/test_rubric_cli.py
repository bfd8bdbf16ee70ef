"""CLI wiring of the rubric family: `harness run` grader flags, `harness judge calibrate` on the
HealthBench physician labels, `harness judge rank --style-control` options (no model loaded)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.cli.run import _protocol, _rubric_options
from tests.conftest import ROOT


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"grader_prompt": None, "partial_rubrics": False, "grader_structured": False,
                               "responses": "model", "protocol": None}
    return argparse.Namespace(**{**base, **kw})


def test_rubric_options_carry_the_prompt_by_contents(tmp_path: Path) -> None:
    assert _rubric_options(_args()) is None
    assert _rubric_options(_args(partial_rubrics=True)) == {"grader_prompt": None, "partial": True}
    path = tmp_path / "upstream.txt"
    path.write_text("Grade: <<conversation>> against <<rubric_item>>", encoding="utf-8")
    got = _rubric_options(_args(grader_prompt=path))
    assert got is not None and got["grader_prompt"] == {"source": str(path), "text": path.read_text()}


def test_responses_ideal_is_the_rubric_ideal_protocol() -> None:
    assert _protocol(_args()) is None
    assert _protocol(_args(responses="ideal")) == "rubric_ideal"
    with pytest.raises(Exception, match="--responses ideal"):
        _protocol(_args(responses="ideal", protocol="generate"))


def test_bad_grader_prompt_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "grader.txt"
    bad.write_text("no markers here", encoding="utf-8")
    rc = main(["run", "--tasks", "healthbench", "--grader-model", "default", "--grader-prompt", str(bad),
               "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "<<conversation>>" in err and "Traceback" not in err


def test_calibrate_physician_ceiling(tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    rc = main(["judge", "calibrate", "--dataset", "healthbench_meta_gold120", "--data-dir", str(shared_data),
               "--baselines-only", "--output", str(tmp_path / "cal")])
    out = capsys.readouterr().out
    assert rc == 0 and "physicians (each vs the others)" in out
    data = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    ceiling = data["rows"][-1]
    assert ceiling["kind"] == "physicians" and ceiling["balanced_f1"] == pytest.approx(0.7185, abs=5e-4)
    assert data["humans"]["physician_labels"] == 250


def test_calibrate_refuses_a_grader_on_labels_only(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   shared_data: Path) -> None:
    fixture_dir = tmp_path / "data" / "healthbench"
    fixture_dir.mkdir(parents=True)
    src = shared_data / "healthbench" / "meta_eval_physician_labels_gold120.jsonl"
    (fixture_dir / "2025-05-07-06-14-12_oss_meta_eval.jsonl").write_text(src.read_text())
    rc = main(["judge", "calibrate", "--dataset", "healthbench_meta", "--data-dir", str(tmp_path / "data"),
               "--judge", "default", "--limit", "2", "--no-cache", "--output", str(tmp_path / "x")])
    assert rc == 2 and "needs the texts" in capsys.readouterr().err


def test_prompt_ships_with_tasks() -> None:
    assert (ROOT / "tasks" / "prompts" / "rubric_grader.yaml").is_file()
    text = (ROOT / "pyproject.toml").read_text()
    assert '"prompts/*.yaml"' in text
