"""Calibration studies: scripted judges (oracle, always A, always first, random) go through the
real prompt, parser and two-order protocol and must give the known agreement, kappa, alpha
and bias values (hand-computed golden cases); the data set readers on the shared data."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import ScriptedBackend

from harness.errors import HarnessError
from harness.types import GenerationRequest, ModelBackend, stable_hash
from judges.agreement import JudgeRow
from judges.calibration import CalibrationDataset, CalibrationItem, CalibrationReport, load_dataset, run_study
from judges.judge import Judge
from judges.pairs import LLMPairJudge
from judges.prompt import fenced_blocks, load_prompt

CASES = json.loads((Path(__file__).parent / "fixtures" / "judge_calibration_cases.json").read_text())["cases"]
DS = CalibrationDataset("golden", "-", "llmbar", "golden case")


def as_backend(obj: Any) -> ModelBackend:
    """conftest's ScriptedBackend returns plain result lists (a narrower type than the protocol's)."""
    return cast(ModelBackend, obj)


def _items(case: dict[str, Any]) -> list[CalibrationItem]:
    return [CalibrationItem(f"g-{k}", i["request"], i["output_1"], i["output_2"], tuple(i["annotations"]))
            for k, i in enumerate(case["items"])]


Decide = Callable[[str, str, str], str]  # (request, first shown, second shown) -> "A" | "B" | "tie"


def _llm_judge(name: str, decide: Decide) -> LLMPairJudge:
    """A scripted model behind the real pairwise prompt and parser: it reads the fenced texts."""

    def reply(req: GenerationRequest) -> str:
        assert req.messages is not None
        blocks = fenced_blocks(req.messages[-1].content)
        return json.dumps({"verdict": decide(blocks["REQUEST"], blocks["RESPONSE A"], blocks["RESPONSE B"])})

    return LLMPairJudge(Judge(as_backend(ScriptedBackend(reply)), load_prompt("pairwise")), name=name)


def scripted_judges(items: list[CalibrationItem]) -> dict[str, LLMPairJudge]:
    best = {i.request: i for i in items}

    def oracle(request: str, first: str, second: str) -> str:
        item = best[request]
        if item.human == 0:
            return "tie"
        winner = item.output_1 if item.human == 1 else item.output_2
        return "A" if first == winner else "B"

    def always_a(request: str, first: str, second: str) -> str:
        return "A" if first == best[request].output_1 else "B"

    return {"oracle": _llm_judge("oracle", oracle), "always_a": _llm_judge("always A", always_a),
            "always_first": _llm_judge("always first (scripted)", lambda r, a, b: "A")}


def _value(row: JudgeRow, key: str) -> float | None:
    if key == "n_no_ties":
        return row.agreement_no_ties.n_scored
    if key in ("kappa", "alpha"):
        return getattr(row, key)  # type: ignore[no-any-return]
    return getattr(row, key).value  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_scripted_judges_give_the_known_values(case: dict[str, Any]) -> None:
    items = _items(case)
    assert [i.human for i in items] == case["humans"]["labels"]
    for name, judge in scripted_judges(items).items():
        report = run_study(DS, items, judge)
        row = report.rows[0]
        assert not row.baseline and row.n == len(items) and row.n_unscored == 0
        for key, expected in case["expected"][name].items():
            got = _value(row, key)
            if expected is None:
                assert got is None, (name, key, got)
            else:
                assert got == pytest.approx(expected, abs=1e-5), (name, key)
        # model judges report cost per judgement (tokens from the backend's usage)
        assert row.tokens_per_judgement == 15 and row.seconds_per_judgement is not None and row.n_cached == 0
    report = run_study(DS, items, None)
    humans = case["humans"]
    assert report.human_tie_rate == humans["tie_rate"]
    assert report.human_prefer_longer.value == pytest.approx(humans["prefer_longer"])
    assert report.human_alpha == (None if humans["alpha"] is None else pytest.approx(humans["alpha"], abs=1e-5))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_baselines_match_their_scripted_twins(case: dict[str, Any]) -> None:
    """The built-in "always first" baseline equals the scripted always-first model judge, and
    "longer wins" is consistent and always prefers the longer answer."""
    items = _items(case)
    report = run_study(DS, items, scripted_judges(items)["always_first"])
    rows = {r.judge: r for r in report.rows}
    assert list(rows) == ["always first (scripted)", "always first", "longer wins", "random (seed 0)"]
    a, b = rows["always first (scripted)"], rows["always first"]
    assert (a.agreement.value, a.kappa, a.alpha, a.consistency.value, a.prefer_first.value) == \
        (b.agreement.value, b.kappa, b.alpha, b.consistency.value, b.prefer_first.value)
    longer = rows["longer wins"]
    assert longer.consistency.value == 1.0 and longer.prefer_longer.value == 1.0
    assert longer.seconds_per_judgement is None and longer.tokens_per_judgement is None  # not a model


def test_random_judge_is_seeded_and_near_chance() -> None:
    rng = random.Random(7)
    items = []
    for k in range(400):
        a, b = f"answer one {k} " * rng.randint(1, 4), f"answer two {k} " * rng.randint(1, 4)
        items.append(CalibrationItem(f"r{k}", f"request {k}", a, b, (rng.choice([1, 2]),)))
    one = run_study(DS, items, None, seed=1)
    rnd = {r.judge: r for r in one.rows}["random (seed 1)"]
    # each order is a fair coin: half the pairs are order-stable; a stable verdict is right half
    # the time (bounds: about 3.5 standard errors at n = 400)
    assert rnd.consistency.value == pytest.approx(0.5, abs=0.09)
    assert rnd.agreement.value == pytest.approx(0.25, abs=0.08)
    assert rnd.agreement_no_ties.value == pytest.approx(0.5, abs=0.125)
    assert rnd.prefer_first.value == pytest.approx(0.5, abs=0.065)
    assert rnd.kappa is not None and abs(rnd.kappa) < 0.15
    again = {r.judge: r for r in run_study(DS, items, None, seed=1).rows}["random (seed 1)"]
    other = {r.judge: r for r in run_study(DS, items, None, seed=2).rows}["random (seed 2)"]
    assert again.to_json() == rnd.to_json()  # same seed, same coins
    assert other.agreement.value != rnd.agreement.value or other.consistency.value != rnd.consistency.value


def test_unparseable_judge_is_unscored_not_counted_wrong() -> None:
    items = _items(CASES[0])
    chatty = as_backend(ScriptedBackend(lambda r: "I prefer the first one."))
    judge = LLMPairJudge(Judge(chatty, load_prompt("pairwise")))
    report = run_study(DS, items, judge)
    row = report.rows[0]
    assert row.n_unscored == len(items) and row.agreement.value is None and row.agreement.n_unscored == len(items)
    assert row.kappa is None and row.consistency.value is None
    outcome = report.outcomes[judge.name][0]
    assert outcome.forward.judgement.raw == ("I prefer the first one.", "I prefer the first one.")


def test_report_renders_markdown_and_json(tmp_path: Path) -> None:
    from judges.calibration import write_calibration

    items = _items(CASES[1])
    report: CalibrationReport = run_study(DS, items, scripted_judges(items)["oracle"])
    folder = write_calibration(report, tmp_path / "cal")
    md = (folder / "calibration.md").read_text()
    assert md.count("\n| ") == 6 and "| oracle | 4 | 0 | 1.000" in md and "humans (3 annotators)" in md
    data = json.loads((folder / "calibration.json").read_text())
    assert data["n_items"] == 4 and data["humans"]["alpha_between_annotators"] == pytest.approx(0.180851, abs=1e-5)
    assert [r["judge"] for r in data["rows"]] == ["oracle", "always first", "longer wins", "random (seed 0)"]
    assert data["data_fingerprint"] == stable_hash([i.__dict__ for i in items])
    lines = (folder / "items.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[2])["final"] == "tie" and json.loads(lines[2])["human"] == 0


def test_dataset_readers_on_shared_data(shared_data: Path) -> None:
    ds, natural = load_dataset("llmbar_natural", shared_data)
    raw = json.loads((shared_data / "judge_calibration/llmbar/natural.json").read_text())
    assert ds.reader == "llmbar" and len(natural) == 100
    assert Counter(i.human for i in natural) == Counter(r["label"] for r in raw)
    assert natural[0].output_1 == raw[0]["output_1"] and natural[0].request == raw[0]["input"]
    _, first40 = load_dataset("mt_bench", shared_data, limit=40)
    assert len(first40) == 40 and all(i.human in (1, 2) for i in first40)
    _, panda = load_dataset("pandalm", shared_data)
    praw = json.loads((shared_data / "judge_calibration/pandalm/testset-v1.json").read_text())
    assert len(panda) == 999 and panda[0].annotations == (praw[0]["annotator1"], praw[0]["annotator2"],
                                                          praw[0]["annotator3"])
    unanimous_ties = sum(1 for r in praw if r["annotator1"] == r["annotator2"] == r["annotator3"] == 0)
    three_way = sum(1 for r in praw if len({r["annotator1"], r["annotator2"], r["annotator3"]}) == 3)
    assert sum(i.human == 0 for i in panda) >= unanimous_ties + three_way
    assert "\n\n" in panda[0].request  # instruction, then its input
    for name in ("llmbar_adversarial_gptinst", "llmbar_adversarial_gptout", "llmbar_adversarial_manual",
                 "llmbar_adversarial_neighbor", "faireval", "llmeval2"):
        assert load_dataset(name, shared_data, limit=3)[1]


def test_unknown_dataset_and_missing_data(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="did you mean 'llmbar_natural'"):
        load_dataset("llmbar_natral", tmp_path)
    with pytest.raises(HarnessError, match="pass --data-dir"):
        load_dataset("pandalm", tmp_path)


def test_cli_calibrate_baselines(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    out = tmp_path / "cal"
    rc = main(["judge", "calibrate", "--dataset", "llmbar_natural", "--data-dir", str(shared_data), "--limit", "20",
               "--baselines-only", "--output", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| always first | 20 | 0 | 0.000" in text and "| longer wins |" in text
    data = json.loads((out / "calibration.json").read_text())
    assert data["n_items"] == 20 and data["judge"] is None
    assert main(["judge", "calibrate", "--dataset", "nope", "--data-dir", str(shared_data), "--baselines-only",
                 "--output", str(out)]) == 2


def test_cached_judgements_are_counted_and_kept_out_of_the_timing(tmp_path: Path) -> None:
    from harness.backends import CachingBackend

    items = _items(CASES[0])
    scripted = scripted_judges(items)["oracle"]
    cached = CachingBackend(scripted.judge.backend, tmp_path / "c.sqlite")
    judge = LLMPairJudge(Judge(cached, load_prompt("pairwise")), name="oracle")
    cold = run_study(DS, items, judge).rows[0]
    warm = run_study(DS, items, judge).rows[0]
    cached.close()
    assert (cold.n_cached, warm.n_cached) == (0, 2 * len(items))
    assert cold.seconds_per_judgement is not None and warm.seconds_per_judgement is None
    assert warm.tokens_per_judgement == cold.tokens_per_judgement == 15  # usage is kept in the cache
    assert warm.agreement.value == cold.agreement.value == 1.0
