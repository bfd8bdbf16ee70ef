"""End to end on the real default model (no scripted model): a HealthBench task answered and
graded through llama.cpp's server, a jury of two scripted graders and the real one over the
stored responses, and the real grader against the hand-written meta-evaluation fixture. The tiny
model's numbers are poor; what is asserted is that the machinery records and measures them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.openai_server import llama_cpp_server

# Long (minutes on 2 shared cores, plus a server start): run on demand with `python -m pytest -m manual`.
pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.manual]
pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is not installed")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, str]]:
    with llama_cpp_server("--n_ctx", "8192") as s:
        yield s


def _grader_config(url: str, model_id: str) -> object:
    from judges.judge import JudgeConfig

    return JudgeConfig(backend="openai", model=model_id, cache=None,
                       model_args={"base_url": url, "timeout": 900, "concurrency": 2,
                                   "extra_body": {"repeat_penalty": 1.0}})


def test_healthbench_graded_end_to_end(server: tuple[str, str], tmp_path: Path) -> None:
    from harness.cli import main
    from judges.rubric_grader import SCRIPTED, LLMRubricGrader, load_grader_prompt
    from judges.rubric_jury import jury_grade

    url, model_id = server
    out = tmp_path / "run"
    rc = main(["run", "--tasks", "healthbench_consensus", "--data-source", "bundled", "--limit", "2",
               "--backend", "openai", "--model", model_id, "--base-url", url, "--timeout", "900",
               "--grader-model", model_id, "--grader-backend", "openai",
               "--grader-args", f"base_url={url},timeout=900,extra.repeat_penalty=1.0",
               "--no-cache", "--quiet", "--allow-unscored", "--output", str(out)])
    assert rc == 0
    record = json.loads((out / "run.json").read_text())
    task = record["tasks"]["healthbench_consensus|rubric|0shot"]
    assert task["extra"]["aux_models"]["grader"]["backend"] == "openai"
    assert len(task["extra"]["grader_prompt"]["sha256"]) == 64
    metric = task["metrics"]["rubric_score"]
    assert metric["n_scored"] + metric["n_unscored"] == 2
    entries = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    for e in entries:
        grades = e["score"]["metadata"]["grades"]
        assert len(grades) == 2 and all(g["raw"] for g in grades)  # every reply kept, parsed or not
        assert all(g["met"] is None or isinstance(g["met"], bool) for g in grades)
        assert e["score"]["metadata"]["tokens"]["grader"][0] > 100  # the server reports usage
    # a jury: two scripted graders and the real one, over the stored responses
    real = LLMRubricGrader.create(_grader_config(url, model_id), load_grader_prompt())  # type: ignore[arg-type]
    with real:
        jury = jury_grade([out], [SCRIPTED["met if positive"](0), SCRIPTED["never met"](0), real])
    rep = jury.report
    assert rep.per_judge["met if positive"]["run"].value == 1.0 and rep.per_judge["never met"]["run"].value == 0.0
    scored = rep.per_judge[real.name]["run"]
    assert scored.n_scored + scored.n_unscored == 2 and rep.failures[real.name]["run"] == scored.n_unscored
    assert {f.judge for f in rep.family_flags} <= {real.name}  # the default model grading itself: same family
    print("\n" + jury.markdown())


def test_real_grader_against_the_fixture_physicians(server: tuple[str, str]) -> None:
    from judges.healthbench_meta import run_meta_study
    from judges.healthbench_rows import read_meta_rows
    from judges.rubric_grader import LLMRubricGrader, load_grader_prompt

    url, model_id = server
    rows = read_meta_rows(ROOT / "tests" / "fixtures" / "healthbench_meta_fixture.jsonl", require_texts=True)
    with LLMRubricGrader.create(_grader_config(url, model_id), load_grader_prompt()) as grader:  # type: ignore[arg-type]
        report = run_meta_study("fixture", "hand-written", "fixture", rows, grader)
    first = report.raters[0]
    assert first.kind == "grader" and first.n == 8
    decisions = report.decisions[grader.name]
    assert all(d.raw for d in decisions) and first.n_ungraded == sum(d.met is None for d in decisions)
    print("\n" + report.markdown())
