"""The `rubric` protocol family (HealthBench tasks) through the runner, on scripted backends:
scripted graders with known scores, ungraded items (retried, then counted), partial rubrics,
graded ideal completions, the record's grader identity, and the upstream row adapter."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from harness.data.sources import load_bundled
from harness.errors import HarnessError
from harness.protocols.rubric import healthbench_row, sample_items
from harness.run.config import AuxModel, RubricOptions, RunConfig
from harness.run.runner import Runner
from harness.scoring.cost import cost_report, parse_price_table, run_usage
from harness.types import GenerationRequest
from judges.prompt import fenced_blocks
from tests.conftest import ROOT, ScriptedBackend

ITEM = re.compile(r"\n\[(-?\d+(?:\.\d+)?)\] (.+)")


def _item(request: GenerationRequest) -> tuple[float, str]:
    """The (points, criterion) a grader request asks about (the last "[points] text" line)."""
    assert request.messages is not None
    text = next(m.content for m in reversed(request.messages) if m.role == "user" and "RUBRIC CRITERION" in m.content)
    points, criterion = ITEM.findall(text)[-1]
    return float(points), criterion


def _reply(met: bool) -> str:
    return json.dumps({"explanation": "scripted", "criteria_met": met})


GRADERS = {
    "always met": lambda r: _reply(True),
    "never met": lambda r: _reply(False),
    "met if positive": lambda r: _reply(_item(r)[0] > 0),
}


def run(tmp_path: Path, grader: Any, *, task: str = "healthbench", protocol: str | None = None,
        rubric: RubricOptions | None = None, name: str = "run") -> tuple[Any, list[dict[str, Any]], ScriptedBackend,
                                                                          ScriptedBackend]:
    config = RunConfig(tasks=(task,), data_source="bundled", output=tmp_path / name, cache=None, protocol=protocol,
                       aux_models={"grader": AuxModel(backend="scripted", model="grader-x")}, rubric=rubric)
    candidate = ScriptedBackend(lambda r: "Please call an ambulance now and do not drive yourself.")
    judge = grader if isinstance(grader, ScriptedBackend) else ScriptedBackend(grader)
    record = Runner(config, backend=candidate, aux_backends={"grader": judge}).run()
    entries = [json.loads(x) for x in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
    key = f"{task}|{protocol or 'rubric'}|0shot"
    return record.tasks[key], entries, candidate, judge


def _expected_always_met() -> float:
    per = []
    for s in load_bundled("healthbench_test.jsonl"):
        items = sample_items(s)
        per.append(sum(i.points for i in items) / sum(i.points for i in items if i.points > 0))
    return min(1.0, max(0.0, sum(per) / len(per)))


@pytest.mark.parametrize("grader, expected", [("never met", 0.0), ("met if positive", 1.0),
                                              ("always met", None)])
def test_scripted_graders_give_known_scores(tmp_path: Path, grader: str, expected: float | None) -> None:
    res, entries, candidate, judge = run(tmp_path, GRADERS[grader])
    value = res.metrics["rubric_score"]["value"]
    assert value == pytest.approx(_expected_always_met() if expected is None else expected)
    n_items = sum(len(s.metadata["rubrics"]) for s in load_bundled("healthbench_test.jsonl"))
    assert len(candidate.generate_calls) == 7 and len(judge.generate_calls) == n_items  # one request per item
    assert res.metrics["rubric_ungraded_item_rate"]["value"] == 0.0
    by_theme = res.metrics["rubric_score"]["details"]["by_theme"]
    assert set(by_theme) == {"emergency_referrals", "health_data_tasks", "communication", "complex_responses",
                             "hedging", "context_seeking", "global_health"}
    if expected is not None:
        assert res.metrics["rubric_theme_hedging"]["value"] == pytest.approx(expected)
        assert res.metrics["rubric_axis_accuracy"]["value"] == pytest.approx(expected)
    grades = entries[0]["score"]["metadata"]["grades"]
    assert {"criterion", "points", "tags", "met", "explanation", "raw"} <= set(grades[0])


def test_record_names_the_grader(tmp_path: Path) -> None:
    res, *_ = run(tmp_path, GRADERS["never met"])
    extra = res.extra
    assert extra["aux_models"]["grader"]["fingerprint"] == "scripted-v1"
    assert extra["grader_prompt"]["name"] == "rubric_grader.yaml" and len(extra["grader_prompt"]["sha256"]) == 64
    assert extra["grader_generation"]["temperature"] == 0.0 and extra["partial_rubrics"] is False
    assert extra["length_penalty"]["penalty_per_step"] == pytest.approx(0.0147)


def test_the_grader_sees_fenced_texts(tmp_path: Path) -> None:
    _, _, _, judge = run(tmp_path, GRADERS["never met"])
    last = judge.generate_calls[0].messages[-1].content  # type: ignore[index]
    blocks = fenced_blocks(last)
    assert blocks["RESPONSE"] == "Please call an ambulance now and do not drive yourself."
    assert blocks["CONVERSATION"].startswith("user: ")


def _flaky(bad: str, *, heal: bool) -> ScriptedBackend:
    """met if positive, except on criteria containing `bad`: an unparseable reply (once, if `heal`)."""
    seen: set[str] = set()

    def reply(r: GenerationRequest) -> str:
        points, criterion = _item(r)
        if bad in criterion and (not heal or criterion not in seen):
            seen.add(criterion)
            return "The criterion is met."
        return _reply(points > 0)

    return ScriptedBackend(reply)


def test_unparseable_reply_is_retried_then_graded(tmp_path: Path) -> None:
    judge = _flaky("e", heal=True)  # most criteria contain an "e": their first reply fails
    res, entries, _, _ = run(tmp_path, judge)
    assert res.metrics["rubric_score"]["value"] == pytest.approx(1.0)
    assert res.metrics["rubric_ungraded_item_rate"]["value"] == 0.0
    retried = [g for e in entries for g in e["score"]["metadata"]["grades"] if len(g["raw"]) == 2]
    assert retried and all(g["raw"][0] == "The criterion is met." and g["met"] is not None for g in retried)
    assert any("not a valid reply" in m.content for r in judge.generate_calls for m in r.messages or ())


@pytest.mark.parametrize("partial", [False, True])
def test_ungraded_items_are_counted_never_not_met(tmp_path: Path, partial: bool) -> None:
    first = load_bundled("healthbench_test.jsonl")[0]
    bad = sample_items(first)[0].criterion[:40]
    res, entries, _, _ = run(tmp_path, _flaky(bad, heal=False), rubric=RubricOptions(partial=partial))
    by_id = {e["sample_id"]: e["score"] for e in entries}
    score = by_id[first.id]
    flagged = [g for g in score["metadata"]["grades"] if g["met"] is None]
    assert len(flagged) == 1 and len(flagged[0]["raw"]) == 2 and "not a JSON object" in flagged[0]["error"]
    rate = res.metrics["rubric_ungraded_item_rate"]
    n_items = sum(len(s.metadata["rubrics"]) for s in load_bundled("healthbench_test.jsonl"))
    assert rate["value"] == pytest.approx(1 / n_items)
    if partial:
        assert score["value"] == pytest.approx(1.0)  # the graded items all met (positive) / not met (negative)
        assert res.metrics["rubric_score"]["n_unscored"] == 0
    else:
        assert score["value"] is None and "ungraded" in score["explanation"]
        assert res.metrics["rubric_score"]["n_unscored"] == 1
        assert res.metrics["rubric_score"]["value"] == pytest.approx(1.0)
    assert res.extra["partial_rubrics"] is partial


def test_ideal_completions_are_graded_without_the_model(tmp_path: Path) -> None:
    res, entries, candidate, _ = run(tmp_path, GRADERS["met if positive"], protocol="rubric_ideal")
    assert candidate.generate_calls == []
    assert res.metrics["rubric_score"]["value"] == pytest.approx(1.0)
    ideal = {s.id: s.target for s in load_bundled("healthbench_test.jsonl")}
    for e in entries:
        assert e["score"]["metadata"]["output"] == ideal[e["sample_id"]]
        assert e["score"]["metadata"]["response_source"] == "ideal"
    assert res.extra["responses"] == "ideal"


def test_a_grader_is_required(tmp_path: Path) -> None:
    config = RunConfig(tasks=("healthbench",), data_source="bundled", output=tmp_path / "r", cache=None)
    with pytest.raises(HarnessError, match="--grader-model"):
        Runner(config, backend=ScriptedBackend()).run()


def test_a_custom_prompt_changes_the_fingerprint(tmp_path: Path) -> None:
    text = "Grade.\n<<conversation>>\n<<rubric_item>>\nReply with JSON."
    custom = RubricOptions(grader_prompt={"source": "mine.txt", "text": text})  # type: ignore[arg-type]
    a, *_ = run(tmp_path, GRADERS["never met"], name="a")
    b, _, _, judge = run(tmp_path, GRADERS["never met"], rubric=custom, name="b")
    assert a.task_fingerprint != b.task_fingerprint
    assert b.extra["grader_prompt"]["style"] == "upstream"
    assert judge.generate_calls[0].messages[-1].content.startswith("Grade.\nuser: ")  # type: ignore[index]


def test_resume_recomputes_nothing(tmp_path: Path) -> None:
    run(tmp_path, GRADERS["never met"])
    _, _, candidate, judge = run(tmp_path, GRADERS["never met"])
    assert candidate.generate_calls == [] and judge.generate_calls == []


def test_token_cost_per_role(tmp_path: Path) -> None:
    run(tmp_path, GRADERS["never met"], task="healthbench_consensus")
    from harness.run.folder import RunFolder

    folder = RunFolder(tmp_path / "run")
    record = json.loads(folder.record_path.read_text())
    usage = {u.role: u for u in run_usage(record, folder.read_samples())}
    # ScriptedBackend reports 10 prompt and 5 completion tokens per reply; 3 samples, 2 items each
    assert (usage["candidate"].prompt_tokens, usage["candidate"].completion_tokens) == (30, 15)
    assert (usage["grader"].prompt_tokens, usage["grader"].completion_tokens) == (60, 30)
    assert usage["grader"].model == "grader-x"
    table = parse_price_table("models: {grader-x: {input: 1000000, output: 2000000}, default: {input: 0, output: 0}}",
                              "p.yaml")
    report = cost_report(list(usage.values()), table)
    assert report.total_usd == pytest.approx(60 + 60)


def test_upstream_rows_are_read_strictly() -> None:
    path = ROOT.parent / "shared" / "data" / "healthbench" / "hard_sample50_seed42.jsonl"
    if not path.is_file():
        pytest.skip("shared HealthBench sample not present")
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    sample = healthbench_row(row, 0, {})
    assert sample.id == row["prompt_id"] and len(sample.metadata["rubrics"]) == len(row["rubrics"])
    assert sample.metadata["canary"].startswith("healthbench:")
    for bad, message in (({**row, "extra": 1}, "unknown key"),
                         ({**row, "prompt": row["prompt"] + [{"role": "assistant", "content": "x"}]}, "user turn"),
                         ({**row, "rubrics": [{"criterion": "x", "points": "5", "tags": []}]}, "points"),
                         ({**row, "example_tags": ["a", "a"]}, "example_tags")):
        with pytest.raises(ValueError, match=message):
            healthbench_row(bad, 0, {})
    assert not math.isnan(math.fsum(i.points for i in sample_items(sample)))


def test_a_jury_of_graders_over_two_runs(tmp_path: Path) -> None:
    from judges.rubric_grader import SCRIPTED, LLMRubricGrader, load_grader_prompt
    from judges.rubric_jury import jury_grade

    def run_with(name: str, text: str) -> Path:
        config = RunConfig(tasks=("healthbench_consensus",), data_source="bundled", output=tmp_path / name,
                           cache=None, aux_models={"grader": AuxModel(backend="scripted")})
        Runner(config, backend=ScriptedBackend(lambda r: text),
               aux_backends={"grader": ScriptedBackend(GRADERS["never met"])}).run()
        return tmp_path / name

    good = run_with("good", "Call an ambulance now.")
    poor = run_with("poor", "ok")
    broken: set[str] = set()

    def reply(r: GenerationRequest) -> str:  # met iff positive and the response says "ambulance"
        assert r.messages is not None
        asked = next(m.content for m in reversed(r.messages) if "RUBRIC" in m.content)  # one item of one example
        response = fenced_blocks(asked)["RESPONSE"]
        points, _ = _item(r)
        if response == "ok" and not broken:  # one broken item (twice: after the retry too) in run "poor"
            broken.add(asked)
        if asked in broken:
            return "no idea"
        return _reply(points > 0 and "ambulance" in response)

    llm = LLMRubricGrader(ScriptedBackend(reply), load_grader_prompt(), model_label="scripted:reader")
    jury = jury_grade([good, poor], [SCRIPTED["met if positive"](0), llm, SCRIPTED["never met"](0)])
    rep = jury.report
    assert rep.per_judge["met if positive"]["good"].value == 1.0 and rep.per_judge["never met"]["poor"].value == 0.0
    assert rep.per_judge["scripted:reader"]["good"].value == 1.0
    assert rep.per_judge["scripted:reader"]["poor"].value == 0.0
    assert rep.failures["scripted:reader"] == {"good": 0, "poor": 1}  # counted, not dropped silently
    assert jury.ungraded_items["scripted:reader"] == 1
    # per example: good (1 + 1 + 0) / 3; poor (1 + 0 + 0) / 3, and (1 + 0) / 2 where the reader failed
    assert rep.jury["good"].value == pytest.approx(2 / 3)
    assert rep.jury["poor"].value == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    assert rep.leave_one_out_tau["met if positive"] == pytest.approx(1.0)
    assert rep.leave_one_out_tau["never met"] == pytest.approx(1.0)
    assert "ungraded items" in jury.markdown()
