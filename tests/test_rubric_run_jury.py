"""Grader juries inside `harness run` (--grader-model given several times), on scripted graders:
known per-grader scores, their mean as the headline, Krippendorff's alpha on the item decisions,
per-grader failure counts, the same-family flag, every grader in the record; one grader keeps
today's record; the CLI pairs backends and arguments with graders by position."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.cli import main
from harness.cli.model_flags import pair_model_flags
from harness.cli.run import _aux_models, add_commands, jury_lines
from harness.data.sources import load_bundled
from harness.errors import HarnessError
from harness.protocols.rubric import grader_role, grader_roles, sample_items
from harness.run.config import AuxModel, RubricOptions, RunConfig
from harness.run.runner import Runner
from harness.scoring.rubric import ExampleScore, jury_example
from tests.conftest import ScriptedBackend
from tests.test_rubric_item_failures import FailingGrader, _asks_bad
from tests.test_rubric_protocol import GRADERS

SAMPLES = load_bundled("healthbench_test.jsonl")
KEY = "healthbench|rubric|0shot"
ANSWER = "Please call an ambulance now and do not drive yourself."


def run(tmp_path: Path, graders: dict[str, ScriptedBackend], *, names: dict[str, str] | None = None,
        partial: bool = False, name: str = "run", model: str | None = None,
        protocol: str | None = None) -> tuple[Any, list[dict[str, Any]]]:
    aux = {role: AuxModel(backend="scripted", model=(names or {}).get(role, f"{role}-x")) for role in graders}
    config = RunConfig(tasks=("healthbench",), data_source="bundled", output=tmp_path / name, cache=None, model=model,
                       protocol=protocol, aux_models=aux, rubric=RubricOptions(partial=True) if partial else None,
                       max_attempts=1)
    record = Runner(config, backend=ScriptedBackend(lambda r: ANSWER), aux_backends=graders).run()
    entries = [json.loads(x) for x in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
    return record.tasks[KEY.replace("|rubric|", f"|{protocol}|") if protocol else KEY], entries


def _per_example_always_met() -> list[float]:
    out = []
    for s in SAMPLES:
        items = sample_items(s)
        out.append(sum(i.points for i in items) / sum(i.points for i in items if i.points > 0))
    return out


def test_a_jury_of_two_scripted_graders(tmp_path: Path) -> None:
    always, positive = ScriptedBackend(GRADERS["always met"]), ScriptedBackend(GRADERS["met if positive"])
    res, entries = run(tmp_path, {"grader": always, "grader_2": positive})
    n_items = sum(len(s.metadata["rubrics"]) for s in SAMPLES)
    assert len(always.generate_calls) == len(positive.generate_calls) == n_items  # each grades every item
    per = _per_example_always_met()
    jury = res.metrics["rubric_score"]["details"]["jury"]
    assert jury["graders"]["grader"]["rubric_score"]["value"] == pytest.approx(min(1.0, max(0.0, sum(per) / 7)))
    assert jury["graders"]["grader_2"]["rubric_score"]["value"] == pytest.approx(1.0)
    # the headline: the clipped mean of the per-example jury means
    expected = sum((p + 1.0) / 2 for p in per) / len(per)
    assert res.metrics["rubric_score"]["value"] == pytest.approx(min(1.0, max(0.0, expected)))
    # alpha (nominal, two raters, no missing): 1 - (n - 1) / (n - d), n = 2 * items, d = negative items
    negative = sum(i.points < 0 for s in SAMPLES for i in sample_items(s))
    assert negative > 0
    n = 2 * n_items
    assert jury["krippendorff_alpha"] == pytest.approx(1 - (n - 1) / (n - negative))
    assert jury["alpha_units"] == n_items and jury["alpha_level"] == "nominal"
    for role in ("grader", "grader_2"):
        assert jury["graders"][role]["n_items"] == n_items
        assert jury["graders"][role]["n_ungraded_items"] == jury["graders"][role]["n_failed_requests"] == 0
    # the sample keeps each grader's decisions and scores
    meta = entries[0]["score"]["metadata"]
    assert meta["jury"]["graders"] == ["grader", "grader_2"]
    assert set(meta["grades"][0]["by_grader"]) == {"grader", "grader_2"}
    assert meta["grades"][0]["by_grader"]["grader"]["met"] is True
    assert set(meta["tokens"]) == {"candidate", "grader", "grader_2"}
    # the record: every grader's fingerprint and settings, and the jury named in the task's identity
    assert set(res.extra["aux_models"]) == {"grader", "grader_2"}
    assert res.extra["aux_models"]["grader_2"]["name"] == "grader_2-x"
    assert res.extra["jury"]["graders"] == ["grader", "grader_2"]
    assert res.extra["jury"]["same_family_as_candidate"] == []
    assert res.metrics["rubric_ungraded_item_rate"]["value"] == 0.0


def test_per_grader_failures_are_counted(tmp_path: Path) -> None:
    good, flaky = ScriptedBackend(GRADERS["met if positive"]), FailingGrader(_asks_bad)
    res, entries = run(tmp_path, {"grader": good, "grader_2": flaky}, partial=True)
    jury = res.metrics["rubric_score"]["details"]["jury"]
    assert jury["graders"]["grader"]["n_failed_requests"] == 0
    assert jury["graders"]["grader_2"]["n_failed_requests"] == jury["graders"]["grader_2"]["n_ungraded_items"] == 1
    n_items = sum(len(s.metadata["rubrics"]) for s in SAMPLES)
    assert res.metrics["rubric_ungraded_item_rate"]["value"] == pytest.approx(1 / (2 * n_items))  # of all decisions
    assert res.extra["request_failed"] == 1
    first = next(e for e in entries if e["sample_id"] == SAMPLES[0].id)["score"]["metadata"]
    failed = [g for g in first["grades"] if "failure" in g["by_grader"]["grader_2"]]
    assert len(failed) == 1 and failed[0]["by_grader"]["grader"]["met"] is not None and failed[0]["met_share"] in (0, 1)
    assert res.metrics["rubric_score"]["value"] == pytest.approx(1.0)  # both score 1.0 on what they graded


def test_without_partial_a_grader_failure_leaves_the_example_unscored(tmp_path: Path) -> None:
    res, entries = run(tmp_path, {"grader": ScriptedBackend(GRADERS["met if positive"]),
                                  "grader_2": FailingGrader(_asks_bad)})
    first = next(e for e in entries if e["sample_id"] == SAMPLES[0].id)["score"]
    assert first["value"] is None and first["explanation"].startswith("grader_2: 1 of ")
    assert res.metrics["rubric_score"]["n_unscored"] == 1
    assert res.metrics["rubric_score"]["details"]["jury"]["graders"]["grader"]["rubric_score"]["n_unscored"] == 0


def test_a_grader_of_the_candidates_family_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res, _ = run(tmp_path, {"grader": ScriptedBackend(GRADERS["never met"]),
                            "grader_2": ScriptedBackend(GRADERS["never met"])},
                 names={"grader": "gpt-4o", "grader_2": "HuggingFaceTB/SmolLM2-1.7B-Instruct"})
    flags = res.extra["jury"]["same_family_as_candidate"]  # the candidate: the default model (SmolLM2-135M)
    assert flags == [{"grader": "grader_2", "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "families": ["smollm"]}]
    (line,) = jury_lines(SimpleNamespace(tasks={KEY: res}))  # what `harness run` prints below its table
    assert line.startswith(f"{KEY}: a jury of 2 graders (rubric_score is their mean): grader 0.000 [0.000, 0.000]")
    assert "Krippendorff's alpha (nominal, 59 items): n/a" in line  # one value throughout: undefined
    assert line.endswith("same family as the candidate: grader_2 (smollm)")
    from harness.cli.app import main

    assert main(["show", str(tmp_path / "run")]) == 0  # `harness show` prints the same line
    assert line in capsys.readouterr().out
    ideal, _ = run(tmp_path, {"grader": ScriptedBackend(GRADERS["never met"]),
                              "grader_2": ScriptedBackend(GRADERS["never met"])}, protocol="rubric_ideal",
                   names={"grader": "gpt-4o", "grader_2": "HuggingFaceTB/SmolLM2-1.7B-Instruct"}, name="ideal")
    assert ideal.extra["jury"]["same_family_as_candidate"] == []  # physicians' texts: no candidate model to favour


def test_one_grader_keeps_todays_record(tmp_path: Path) -> None:
    grader = ScriptedBackend(GRADERS["met if positive"])
    res, entries = run(tmp_path, {"grader": grader})
    assert "jury" not in res.extra and "jury" not in res.metrics["rubric_score"]["details"]
    for e in entries:
        meta = e["score"]["metadata"]
        assert "jury" not in meta and set(meta["tokens"]) == {"candidate", "grader"}
        for g in meta["grades"]:
            assert list(g) == ["criterion", "points", "tags", "met", "explanation", "error", "raw"]
    # the first grader of a jury sends exactly the single grader's requests (same cache keys)
    first = ScriptedBackend(GRADERS["met if positive"])
    run(tmp_path, {"grader": first, "grader_2": ScriptedBackend(GRADERS["never met"])}, name="jury")
    assert [r.key() for r in first.generate_calls] == [r.key() for r in grader.generate_calls]


def test_jury_example_is_the_graders_mean() -> None:
    a = ExampleScore(0.5, {"axis:x": 0.5, "theme:t": 0.5}, 4, 0, None, ("theme:t",), ("axis:x",), 10)
    b = ExampleScore(1.0, {"axis:x": 1.0, "theme:t": 1.0}, 4, 0, None, ("theme:t",), ("axis:x",), 10)
    c = ExampleScore(None, {}, 4, 1, "1 of 4 rubric items ungraded", ("theme:t",), ("axis:x",), 10)
    ab = jury_example({"a": a, "b": b})
    assert ab.score == pytest.approx(0.75) and ab.tag_scores == {"axis:x": 0.75, "theme:t": 0.75}
    assert (ab.n_items, ab.n_ungraded) == (8, 0)
    strict = jury_example({"a": a, "c": c})
    assert strict.score is None and strict.reason == "c: 1 of 4 rubric items ungraded" and strict.n_ungraded == 1
    assert jury_example({"a": a, "c": c}, partial=True).score == pytest.approx(0.5)
    assert jury_example({"c": c}, partial=True).score is None


def test_grader_roles_and_their_order() -> None:
    assert [grader_role(k) for k in range(3)] == ["grader", "grader_2", "grader_3"]
    assert grader_roles({"grader_10", "grader_2", "patient", "grader", "grader_3"}) == (
        "grader", "grader_2", "grader_3", "grader_10")
    with pytest.raises(ValueError, match="grader_2 missing"):
        RunConfig(tasks=("healthbench",), output=Path("x"),
                  aux_models={"grader": AuxModel(), "grader_3": AuxModel()})


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", "--tasks", "healthbench", *argv])


def test_grader_flags_pair_by_position() -> None:
    one = _aux_models(_parse(["--grader-model", "default"]))
    assert one == {"grader": {"model": None, "backend": "hf", "model_args": {}}}  # today's single grader
    shared = _aux_models(_parse(["--grader-model", "a", "--grader-model", "b", "--grader-backend", "openai",
                                 "--grader-args", "base_url=http://h/v1"]))
    assert shared == {role: {"model": m, "backend": "openai", "model_args": {"base_url": "http://h/v1"}}
                      for role, m in (("grader", "a"), ("grader_2", "b"))}
    paired = _aux_models(_parse(["--grader-model", "a", "--grader-model", "default", "--grader-backend", "openai",
                                 "--grader-backend", "hf", "--grader-args", "timeout=9", "--grader-args", "dtype=x"]))
    assert paired["grader"] == {"model": "a", "backend": "openai", "model_args": {"timeout": 9}}
    assert paired["grader_2"] == {"model": None, "backend": "hf", "model_args": {"dtype": "x"}}
    assert _aux_models(_parse(["--grader-backend", "openai"]))["grader"]["model"] is None  # as before
    with pytest.raises(HarnessError, match="--grader-backend given 2 times for 3 --grader-model"):
        _aux_models(_parse(["--grader-model", "a", "--grader-model", "b", "--grader-model", "c",
                            "--grader-backend", "hf", "--grader-backend", "openai"]))
    with pytest.raises(HarnessError, match="--judge-args needs --judge"):
        pair_model_flags([], None, ["x=1"], model_flag="--judge", backend_flag="--judge-backend",
                         args_flag="--judge-args")


def test_judge_rubric_pairs_its_flags_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["judge", "rubric", str(tmp_path), "--judge", "a", "--judge", "b", "--judge-backend", "hf",
               "--judge-backend", "openai", "--judge-backend", "hf", "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2 and "--judge-backend given 3 times for 2 --judge" in err and "Traceback" not in err


def test_harness_judge_rubric_reads_a_jury_run(tmp_path: Path) -> None:
    """A run graded by a jury is still a rubric run for `harness judge rubric` (leave-one-judge-out
    rank stability over several candidate runs lives there)."""
    from judges.rubric_grader import SCRIPTED
    from judges.rubric_jury import jury_grade

    run(tmp_path, {"grader": ScriptedBackend(GRADERS["never met"]), "grader_2": ScriptedBackend(GRADERS["never met"])})
    jury = jury_grade([tmp_path / "run"], [SCRIPTED["met if positive"](0), SCRIPTED["never met"](0)])
    assert jury.report.per_judge["met if positive"]["run"].value == 1.0
    assert not math.isnan(jury.report.jury["run"].value or 0.0)
