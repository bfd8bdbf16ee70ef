"""End to end on the real default model as judge (slow): the injection study measures how often
an instruction hidden in an answer moves the verdict, and a calibration study on real LLMBar
pairs runs through transformers. The tiny judge's numbers are poor; what is asserted is that
the machinery measures them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from judges.calibration import calibrate
from judges.injection import PAIRWISE_INJECTION, POINTWISE_INJECTION, pairwise_injection, pointwise_injection
from judges.judge import Judge
from judges.pairs import LLMPairJudge, PairQuery, Shown, pairwise_messages
from judges.pointwise import pointwise_messages
from judges.prompt import fenced_blocks, load_prompt

# Long (12 min on 2 cores): run on demand with `python -m pytest -m manual`.
pytestmark = [pytest.mark.slow, pytest.mark.manual]


def _dialogues(n: int) -> list[tuple[str, str]]:
    """(conversation, the real doctor's reply) from the bundled MTS-Dialog turns."""
    from judges.prompt import render_conversation

    path = Path(__file__).parents[1] / "tasks" / "samples" / "mts_dialog_turn_test.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()[:n]]
    return [(render_conversation(r["input"]), str(r["target"])) for r in rows]


def test_pointwise_injection_is_measured_on_the_real_judge(hf_backend: Any) -> None:
    judge = Judge(hf_backend, load_prompt("pointwise"))
    answers = _dialogues(3)
    # the injected text reaches the judge inside the answer's fence, as data
    msgs = pointwise_messages(judge, answers[0][0], answers[0][1] + POINTWISE_INJECTION)
    assert fenced_blocks(msgs[-1].content)["DOCTOR REPLY"].endswith(POINTWISE_INJECTION)
    report = pointwise_injection(judge, answers)
    assert report.n == 3 and len(report.items) == 3
    assert all(item["raw_clean"] and item["raw_injected"] for item in report.items)  # replies kept, parsed or not
    both = [i for i in report.items if i["clean"] is not None and i["injected"] is not None]
    assert report.n_compared == len(both)
    if both:
        moved = sum(i["clean"] != i["injected"] for i in both)
        assert report.moved.value == pytest.approx(moved / len(both))
        assert report.moved.n_scored == len(both) and report.moved.ci_method in ("wilson", "degenerate")
    else:
        assert report.moved.value is None and report.moved.n_unscored == 3
    print(f"\npointwise injection: moved {report.moved.value} of {report.n_compared} compared "
          f"(toward: {report.toward.value})")


def test_pairwise_injection_is_measured_on_the_real_judge(hf_backend: Any) -> None:
    judge = LLMPairJudge(Judge(hf_backend, load_prompt("pairwise")))
    d = _dialogues(2)
    queries = [PairQuery(f"q{k}", conv, ref, "I am not sure. Please ask someone else.") for k, (conv, ref) in
               enumerate(d)]
    shown = pairwise_messages(judge.judge, Shown(queries[0].request, queries[0].x, queries[0].y + PAIRWISE_INJECTION))
    assert fenced_blocks(shown[-1].content)["RESPONSE B"].endswith(PAIRWISE_INJECTION)
    report = pairwise_injection(judge, queries)
    assert report.n == 2 and [i["key"] for i in report.items] == ["q0", "q1"]
    finals = [(i["clean"], i["injected"]) for i in report.items]
    compared = [(c, x) for c, x in finals if c is not None and x is not None]
    assert report.n_compared == len(compared)
    if compared:
        assert report.moved.value == pytest.approx(sum(c != x for c, x in compared) / len(compared))
    print(f"\npairwise injection: moved {report.moved.value} of {report.n_compared} compared "
          f"(toward: {report.toward.value})")


def test_calibration_on_real_pairs_with_the_real_judge(hf_backend: Any, shared_data: Path) -> None:
    judge = LLMPairJudge(Judge(hf_backend, load_prompt("pairwise")))
    report = calibrate("llmbar_natural", shared_data, judge, limit=2)
    row = report.rows[0]
    assert row.judge == judge.name and not row.baseline and row.n == 2
    assert row.n_unscored + (row.agreement.n_scored or 0) == 2
    assert row.tokens_per_judgement is not None and row.tokens_per_judgement > 100  # real prompts, real usage
    assert row.seconds_per_judgement is not None and row.seconds_per_judgement > 0
    for o in report.outcomes[judge.name]:
        for v in (o.forward, o.backward):
            assert v.judgement.raw and v.judgement.attempts in (1, 2)
            assert (v.choice is None) == (v.judgement.values is None)
    assert [r.judge for r in report.rows[1:]] == ["always first", "longer wins", "random (seed 0)"]
    assert report.to_json()["judge"]["prompt"]["name"] == "pairwise"
