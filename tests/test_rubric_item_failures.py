"""Item-level request failures of rubric tasks, on scripted backends: a grader request that still
fails after the backend's bounded retries leaves only its item ungraded (counted, its reason in
the item's grade record, never "not met"); the example is scored on its graded items with
--partial-rubrics, else unscored; the run's exit status says requests failed; a resumed run asks
the failed request again (and nothing else); a failure of the candidate's own request still
leaves the whole sample unscored."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.cli.run import EXIT_UNSCORED, unscored_status
from harness.data.sources import load_bundled
from harness.protocols.rubric import sample_items
from harness.run.config import AuxModel, RubricOptions, RunConfig
from harness.run.runner import Runner
from harness.types import GenerationRequest, GenerationResult, RequestFailure
from tests.conftest import ScriptedBackend
from tests.test_rubric_protocol import GRADERS, _item

SAMPLES = load_bundled("healthbench_test.jsonl")
N_ITEMS = sum(len(s.metadata["rubrics"]) for s in SAMPLES)
FIRST = SAMPLES[0]
BAD = sample_items(FIRST)[0].criterion  # the first item of the first example


class FailingGrader(ScriptedBackend):
    """Met iff the item's points are positive; a request matching `fails` gets a RequestFailure
    (retryable: the retry wrapper tries it again, up to max_attempts)."""

    def __init__(self, fails: Callable[[GenerationRequest], bool], reply: Callable[[GenerationRequest], str] | None
                 = None):
        super().__init__(reply or GRADERS["met if positive"])
        self.fails = fails

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Any]:  # type: ignore[override]
        self.generate_calls.extend(requests)
        return [RequestFailure("HTTP 503: overloaded", retryable=True) if self.fails(r)
                else GenerationResult(self.reply(r), 10, 5, "stop") for r in requests]


def _asks_bad(r: GenerationRequest) -> bool:
    return _item(r)[1] == BAD.splitlines()[0]  # _item reads the item's first line


def run(tmp_path: Path, grader: ScriptedBackend, *, partial: bool = False, candidate: ScriptedBackend | None = None,
        cache: bool = False) -> tuple[Any, dict[str, dict[str, Any]], ScriptedBackend]:
    config = RunConfig(tasks=("healthbench",), data_source="bundled", output=tmp_path / "run",
                       cache=tmp_path / "cache.sqlite" if cache else None, max_attempts=3,
                       aux_models={"grader": AuxModel(backend="scripted", model="grader-x")},
                       rubric=RubricOptions(partial=True) if partial else None)
    candidate = candidate or ScriptedBackend(lambda r: "Please call an ambulance now and do not drive yourself.")
    record = Runner(config, backend=candidate, aux_backends={"grader": grader}, retry_base_delay=0.0).run()
    lines = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    entries = {e["sample_id"]: e for e in lines}  # a later line replaces an earlier one (a resume)
    return record, entries, candidate


@pytest.mark.parametrize("partial", [False, True])
def test_a_failed_grader_request_ungrades_only_its_item(tmp_path: Path, partial: bool) -> None:
    grader = FailingGrader(_asks_bad)
    record, entries, _ = run(tmp_path, grader, partial=partial)
    res = record.tasks["healthbench|rubric|0shot"]
    asked = [r for r in grader.generate_calls if _asks_bad(r)]
    assert len(asked) == 3  # the backend's bounded retries (max_attempts 3), then given up; no reminder retry
    score = entries[FIRST.id]["score"]
    grade = next(g for g in score["metadata"]["grades"] if g["criterion"] == BAD)
    assert grade["met"] is None and grade["raw"] == []  # ungraded, never "not met"
    assert grade["failure"] == "HTTP 503: overloaded" and grade["error"] == "request failed: HTTP 503: overloaded"
    others = [g for g in score["metadata"]["grades"] if g["criterion"] != BAD]
    assert others and all(g["met"] is not None for g in others)  # the other items of the example are graded
    assert score["metadata"]["request_failed"] is True and score["metadata"]["failures"] == ["HTTP 503: overloaded"]
    assert res.metrics["rubric_ungraded_item_rate"]["value"] == pytest.approx(1 / N_ITEMS)
    assert res.extra["request_failed"] == 1 and res.extra["first_error"] == "request failed: HTTP 503: overloaded"
    if partial:  # scored on its graded items: met if positive meets every positive one
        assert score["value"] == pytest.approx(1.0)
        assert res.metrics["rubric_score"]["n_unscored"] == 0
    else:
        assert score["value"] is None and score["explanation"] == f"1 of {len(FIRST.metadata['rubrics'])} rubric " \
            "items ungraded"
        assert res.metrics["rubric_score"]["n_unscored"] == 1 and res.metrics["rubric_score"]["n_scored"] == 6
    assert res.metrics["rubric_score"]["value"] == pytest.approx(1.0)  # the rest is scored as before
    assert unscored_status(record, allow_unscored=False) == EXIT_UNSCORED  # the run does not exit 0
    assert unscored_status(record, allow_unscored=True) == 0


def test_a_failure_on_the_reminder_retry_keeps_both_reasons(tmp_path: Path) -> None:
    """The first reply does not parse; the retry with the reminder fails as a request."""
    def fails(r: GenerationRequest) -> bool:
        return _asks_bad(r) and any("not a valid reply" in m.content for m in r.messages or ())

    def reply(r: GenerationRequest) -> str:
        return "The criterion is met." if _asks_bad(r) else GRADERS["met if positive"](r)

    _, entries, _ = run(tmp_path, FailingGrader(fails, reply), partial=True)
    grade = next(g for g in entries[FIRST.id]["score"]["metadata"]["grades"] if g["criterion"] == BAD)
    assert grade["met"] is None and grade["raw"] == ["The criterion is met."]
    assert "not a JSON object" in grade["error"] and "request failed: HTTP 503" in grade["error"]


def test_resume_asks_the_failed_request_again_and_nothing_else(tmp_path: Path) -> None:
    broken = {"on": True}
    grader = FailingGrader(lambda r: broken["on"] and _asks_bad(r))
    record, entries, _ = run(tmp_path, grader, cache=True)
    assert entries[FIRST.id]["score"]["value"] is None and record.tasks["healthbench|rubric|0shot"].extra[
        "request_failed"] == 1
    broken["on"] = False  # the server is back
    healed = FailingGrader(lambda r: False)
    record, entries, candidate = run(tmp_path, healed, cache=True)
    assert [_asks_bad(r) for r in healed.generate_calls] == [True]  # the cache serves every other reply
    assert candidate.generate_calls == []  # the candidate's response came from the cache
    score = entries[FIRST.id]["score"]
    assert score["value"] == pytest.approx(1.0) and "request_failed" not in score["metadata"]
    res = record.tasks["healthbench|rubric|0shot"]
    assert "request_failed" not in res.extra and res.metrics["rubric_ungraded_item_rate"]["value"] == 0.0
    assert res.metrics["rubric_score"]["n_scored"] == len(SAMPLES)
    assert unscored_status(record, allow_unscored=False) == 0


def test_a_failed_candidate_request_still_leaves_the_sample_unscored(tmp_path: Path) -> None:
    class FailingCandidate(ScriptedBackend):
        def generate(self, requests: Sequence[GenerationRequest]) -> list[Any]:  # type: ignore[override]
            self.generate_calls.extend(requests)
            return [RequestFailure("HTTP 500: boom", retryable=False)
                    if r.messages and r.messages[-1].content == FIRST.input[-1].content  # type: ignore[union-attr]
                    else GenerationResult("Call an ambulance.", 10, 5, "stop") for r in requests]

    grader = ScriptedBackend(GRADERS["met if positive"])
    record, entries, _ = run(tmp_path, grader, candidate=FailingCandidate())
    score = entries[FIRST.id]["score"]
    assert score["value"] is None and score["explanation"] == "request failed: HTTP 500: boom"
    assert score["metadata"]["request_failed"] is True and "grades" not in score["metadata"]
    assert len(grader.generate_calls) == N_ITEMS - len(FIRST.metadata["rubrics"])  # its stages stopped
    res = record.tasks["healthbench|rubric|0shot"]
    assert res.extra["request_failed"] == 1 and res.metrics["rubric_score"]["n_unscored"] == 1
    assert unscored_status(record, allow_unscored=False) == EXIT_UNSCORED


def test_a_grader_request_too_long_for_its_model_ungrades_its_item_unsent(tmp_path: Path) -> None:
    """Not sent (the grader's context is too small): the item is ungraded with that reason, but no
    request failed (resuming would not change it), so the exit status is 0."""
    class SmallContextGrader(ScriptedBackend):
        def context_length(self) -> int | None:
            return 4096

        def count_tokens(self, request: Any) -> int | None:
            return 99_999 if isinstance(request, GenerationRequest) and _asks_bad(request) else 10

    grader = SmallContextGrader(GRADERS["met if positive"])
    record, entries, _ = run(tmp_path, grader, partial=True)
    assert not any(_asks_bad(r) for r in grader.generate_calls)
    score = entries[FIRST.id]["score"]
    grade = next(g for g in score["metadata"]["grades"] if g["criterion"] == BAD)
    assert grade["met"] is None and grade["error"].startswith("not sent: prompt exceeds context: 99999 tokens")
    assert "request_failed" not in score["metadata"] and score["value"] == pytest.approx(1.0)
    res = record.tasks["healthbench|rubric|0shot"]
    assert res.metrics["rubric_ungraded_item_rate"]["value"] == pytest.approx(1 / N_ITEMS)
    assert unscored_status(record, allow_unscored=False) == 0
