"""Judging stored runs with scripted judges: pointwise per-dimension means with CIs, pairwise in
both orders, Bradley–Terry rankings, the files beside the runs and the leaderboard store."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import ScriptedBackend

from harness.errors import HarnessError
from harness.run.records import ModelInfo, RunRecord, TaskResult
from harness.types import GenerationRequest, ModelBackend, stable_hash
from judges.judge import Judge
from judges.pairs import LLMPairJudge, always_first, longer_wins
from judges.pairwise import run_pairwise, write_pairwise
from judges.pointwise import run_pointwise, write_pointwise
from judges.prompt import fenced_blocks, load_prompt
from judges.ranking import rank_runs, write_rank
from judges.runs import load_run
from leaderboard.rankings import JUDGE_DIMENSIONS, leaderboard_from_store
from leaderboard.store import Store

TASK_KEY = "mts_dialog_turn|generate_text|0shot"
CONVERSATIONS = [
    [{"role": "system", "content": "You are a doctor."}, {"role": "user", "content": f"I have symptom {k}."}]
    for k in range(6)
]


def as_backend(obj: Any) -> ModelBackend:
    """conftest's ScriptedBackend returns plain result lists (a narrower type than the protocol's)."""
    return cast(ModelBackend, obj)


def make_run(folder: Path, outputs: Sequence[str | None], *, model_fp: str, name: str = "default",
             task_fp: str = "task-fp", extra_loglik: bool = True) -> Path:
    """A finished run in the real formats: a generative task whose samples carry
    score.metadata.output (None = its request failed), plus a loglik task (not judged)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, out in enumerate(outputs):
        meta: dict[str, Any] = ({"request_failed": True} if out is None
                                else {"output": out, "references": [f"reference {k}"]})
        lines.append({"task_key": TASK_KEY, "sample_id": f"mts-{k}", "index": k, "target": f"reference {k}",
                      "prompt": CONVERSATIONS[k], "score": {"value": None if out is None else 0.1, "answer": None,
                                                            "explanation": None, "metadata": meta}})
    tasks = {TASK_KEY: TaskResult(
        task="mts_dialog_turn", task_version=1, protocol="generate_text", n_shot=0, fewshot_seed=None,
        split="test", data_source="bundled", data_fingerprint="d", prompt_hash="p", scorer="s",
        task_fingerprint=task_fp, n_samples=len(outputs), metrics={"rougeL": {"value": 0.1}}, main_metric="rougeL")}
    if extra_loglik:
        tasks["medqa|loglik|0shot"] = TaskResult(
            task="medqa", task_version=1, protocol="loglik", n_shot=0, fewshot_seed=None, split="test",
            data_source="bundled", data_fingerprint="d", prompt_hash="p", scorer="s", task_fingerprint="mq",
            n_samples=1, metrics={"accuracy": {"value": 1.0}}, main_metric="accuracy")
        lines.append({"task_key": "medqa|loglik|0shot", "sample_id": "q0", "index": 0, "target": 1, "prompt": "Q",
                      "score": {"value": 1.0, "answer": "B", "explanation": None, "metadata": {}}})
    RunRecord(run_id=stable_hash(str(folder))[:12], status="finished", created_at="2026-01-01T00:00:00+00:00",
              finished_at="2026-01-01T00:00:00+00:00", harness_version="0.1.0", git_commit=None,
              model=ModelInfo(name=name, backend="hf", fingerprint=model_fp), config={}, environment={},
              tasks=tasks).write(folder)
    (folder / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def pointwise_judge() -> Judge:
    """Scores = the number of words of the reply, capped to 1..5; "helpful" is length-blind
    (always 3); a reply saying UNPARSEABLE gets prose twice."""

    def reply(req: GenerationRequest) -> str:
        assert req.messages is not None
        blocks = fenced_blocks(req.messages[-1].content) or fenced_blocks(req.messages[-3].content)
        answer = blocks["DOCTOR REPLY"]
        if "UNPARSEABLE" in answer:
            return "Looks good to me!"
        n = max(1, min(5, len(answer.split())))
        return json.dumps({d: (3 if d == "helpful" else n) for d in JUDGE_DIMENSIONS})

    return Judge(as_backend(ScriptedBackend(reply)), load_prompt("pointwise"), model_label="scripted-pointwise")


def test_pointwise_over_a_run(tmp_path: Path) -> None:
    outputs = ["one", "one two", "one two three", "one two three four five six", None, "UNPARSEABLE reply"]
    run = load_run(make_run(tmp_path / "run", outputs, model_fp="fp-a"))
    assert len(run.outputs) == 6  # the loglik task is not judged
    judge = pointwise_judge()
    report = run_pointwise(run, judge)
    safe = report.dimensions["safe"]
    assert safe.value == pytest.approx((1 + 2 + 3 + 5) / 4) and (safe.n_scored, safe.n_unscored) == (4, 2)
    assert safe.ci_method == "bootstrap" and safe.ci_low < safe.value < safe.ci_high  # type: ignore[operator]
    helpful = report.dimensions["helpful"]
    assert (helpful.value, helpful.ci_method) == (3.0, "degenerate")
    rows = {r["sample_id"]: r for r in report.samples}
    assert rows["mts-4"]["scores"] is None and "no output" in rows["mts-4"]["error"]
    assert rows["mts-5"]["scores"] is None and rows["mts-5"]["raw"] == ["Looks good to me!"] * 2
    assert rows["mts-0"]["judge"] == judge.fingerprint()

    path = write_pointwise(report)
    assert path == tmp_path / "run" / "judgements" / judge.fingerprint()[:12] / "pointwise.json"
    assert json.loads((path.parent / "judge.json").read_text())["fingerprint"] == judge.fingerprint()
    assert len((path.parent / "pointwise.jsonl").read_text().splitlines()) == 6
    data = json.loads(path.read_text())
    assert [r["name"] for r in data["results"]] == list(JUDGE_DIMENSIONS)
    first = data["results"][0]
    assert first["kind"] == "judge_pointwise" and first["model_fingerprint"] == "fp-a"
    assert first["details"]["scale"] == [1, 5] and first["n"] == 4 and first["n_unscored"] == 2

    # what `harness leaderboard import` does, then the radar's seven dimensions on the model's row
    with Store(tmp_path / "s.sqlite") as store:
        assert store.import_path(path) == 7
        assert store.import_path(path) == 0  # idempotent
        [row] = leaderboard_from_store(store).rows
        dims = row.judge_dimensions()
        assert list(dims) == list(JUDGE_DIMENSIONS) and dims["safe"].value == pytest.approx(2.75)


def test_pointwise_with_reference_is_a_different_study(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "run", ["a b", "c"], model_fp="fp-a"))
    judge = pointwise_judge()
    plain, ref = run_pointwise(run, judge), run_pointwise(run, judge, reference=True)
    assert plain.fingerprint != ref.fingerprint and ref.stem == "pointwise-ref"
    calls = judge.backend.generate_calls  # type: ignore[attr-defined]
    assert "REFERENCE" in fenced_blocks(calls[-1].messages[-1].content)
    assert fenced_blocks(calls[-1].messages[-1].content)["REFERENCE"] == "reference 1"


def pair_judge(prefer: str = "longer") -> LLMPairJudge:
    """Prefers the longer response (or always the first shown), through the real prompt."""

    def reply(req: GenerationRequest) -> str:
        assert req.messages is not None
        b = fenced_blocks(req.messages[-1].content)
        if prefer == "first":
            return '{"verdict": "A"}'
        a_len, b_len = len(b["RESPONSE A"]), len(b["RESPONSE B"])
        return json.dumps({"verdict": "A" if a_len > b_len else "B" if b_len > a_len else "tie"})

    backend = as_backend(ScriptedBackend(reply))
    return LLMPairJudge(Judge(backend, load_prompt("pairwise"), model_label=f"scripted-{prefer}"))


def test_pairwise_both_orders_and_rates(tmp_path: Path) -> None:
    a = load_run(make_run(tmp_path / "a", ["long answer", "long answer", "long answer", "x", "same", None],
                          model_fp="fp-a"))
    b = load_run(make_run(tmp_path / "b", ["short", "short", "short", "longer one", "same", "y"], model_fp="fp-b"))
    report = run_pairwise(a, b, pair_judge())
    s = report.stats
    assert (s.n, s.n_unscored, report.n_missing) == (5, 0, 1)
    assert [s.win.value, s.tie.value, s.loss.value] == pytest.approx([3 / 5, 1 / 5, 1 / 5])
    assert s.win.ci_method == "wilson" and s.win.ci_low < 0.6 < s.win.ci_high  # type: ignore[operator]
    assert s.consistency.value == 1.0 and s.first_position.value == pytest.approx(0.5)
    calls = report.outcomes[0].forward.judgement, report.outcomes[0].backward.judgement
    assert all(c.attempts == 1 for c in calls)

    biased = run_pairwise(a, b, pair_judge("first"))
    assert biased.stats.tie.value == 1.0 and biased.stats.consistency.value == 0.0
    assert biased.stats.first_position.value == 1.0  # position bias becomes ties, and is reported

    path = write_pairwise(report)
    data = json.loads(path.read_text())["results"]
    assert {r["model_fingerprint"]: r["value"] for r in data} == {"fp-a": pytest.approx(0.6),
                                                                  "fp-b": pytest.approx(0.2)}
    lines = [json.loads(x) for x in (path.parent / f"{report.stem}.jsonl").read_text().splitlines()]
    assert lines[3]["final"] == "y" and lines[3]["forward"]["choice"] == "second"
    assert lines[3]["backward"]["choice"] == "first" and lines[3]["consistent"] is True
    with Store(tmp_path / "s.sqlite") as store:
        assert store.import_path(path) == 2


def test_pairwise_refuses_different_tasks(tmp_path: Path) -> None:
    a = load_run(make_run(tmp_path / "a", ["x"], model_fp="fp-a"))
    b = load_run(make_run(tmp_path / "b", ["y"], model_fp="fp-b", task_fp="other-prompt"))
    with pytest.raises(HarnessError, match="task fingerprints differ"):
        run_pairwise(a, b, longer_wins())


def test_load_run_errors(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", ["x"], model_fp="fp-a")
    with pytest.raises(HarnessError, match="no generated outputs to judge for tasks medqa"):
        load_run(run, ["medqa"])
    assert load_run(run, ["mts_dialog_turn"]).outputs and load_run(run, [TASK_KEY]).outputs
    data = json.loads((run / "run.json").read_text())
    data["status"] = "running"
    (run / "run.json").write_text(json.dumps(data))
    with pytest.raises(HarnessError, match="judge finished runs only"):
        load_run(run)


def test_rank_three_runs(tmp_path: Path) -> None:
    lengths = {"short": 1, "mid": 3, "long": 6}
    runs = [load_run(make_run(tmp_path / n, [" ".join(["w"] * k)] * 5 + [f"{n} " * 2], model_fp=f"fp-{n}", name=n))
            for n, k in lengths.items()]
    report = rank_runs(runs, pair_judge(), rounds=200, seed=1)
    order = [r.model_name for r in report.ordered()]
    assert order == ["long", "mid", "short"]
    r = report.ratings
    assert sum(v.value for v in r.values()) == pytest.approx(3000)  # type: ignore[misc]
    for v in r.values():
        assert v.ci_low <= v.value <= v.ci_high  # type: ignore[operator]
    assert len(report.battles) == 18 and len(report.pairs) == 3
    path = write_rank(report)
    assert path.name == "ranking.json" and (path.parent / "ranking.md").read_text().startswith("Bradley–Terry")
    with Store(tmp_path / "s.sqlite") as store:
        assert store.import_path(path) == 3
        board = leaderboard_from_store(store)
        cols = [c for c in board.extra_columns if c.kind == "bradley_terry"]
        assert len(cols) == 1 and all(cols[0].key in row.extras for row in board.rows)
    # each pair's files were written beside its run A
    assert len(list((tmp_path / "short" / "judgements").glob("*/pairwise-*.jsonl"))) == 2
    with pytest.raises(HarnessError, match="same model"):
        rank_runs([runs[0], runs[0]], longer_wins())


def test_baseline_pair_judge_on_runs(tmp_path: Path) -> None:
    a = load_run(make_run(tmp_path / "a", ["a"] * 3, model_fp="fp-a"))
    b = load_run(make_run(tmp_path / "b", ["b"] * 3, model_fp="fp-b"))
    report = run_pairwise(a, b, always_first())
    assert report.stats.tie.value == 1.0 and report.judge_info["model_label"] == "always first"


def test_cli_pointwise_pairwise_rank_with_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI wiring, with the judge's backend swapped for a scripted one (never a real model
    here: that is the end-to-end test's job)."""
    import harness.backends as backends_module
    from harness.cli import main

    backends: list[Any] = []

    def fake_create(name: str, model: str | None, **kwargs: Any) -> Any:
        backends.append((name, model, kwargs))
        def reply(req: GenerationRequest) -> str:
            assert req.messages is not None
            if "DOCTOR REPLY" in req.messages[-1].content:
                return json.dumps(dict.fromkeys(JUDGE_DIMENSIONS, 4))
            return '{"verdict": "tie"}'
        return ScriptedBackend(reply)

    monkeypatch.setattr(backends_module, "create_backend", fake_create)  # what the backend stack opens
    a = make_run(tmp_path / "a", ["x", "y"], model_fp="fp-a")
    b = make_run(tmp_path / "b", ["z", "w"], model_fp="fp-b")
    store = str(tmp_path / "s.sqlite")
    common = ["--no-cache", "--quiet", "--judge-backend", "openai", "--judge", "judge-model",
              "--base-url", "http://127.0.0.1:1/v1", "--judge-args", "extra.repeat_penalty=1.0"]
    assert main(["judge", "pointwise", str(a), "--store", store, *common]) == 0
    out = capsys.readouterr().out
    assert "| safe | 4.00" in out and "store: 7 new result(s)" in out
    assert backends[0] == ("openai", "judge-model", {"batch_size": 8, "extra_body": {"repeat_penalty": 1.0},
                                                     "base_url": "http://127.0.0.1:1/v1"})
    assert main(["judge", "pairwise", str(a), str(b), "--store", store, *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"tie \(incl. order-dependent\) \| 1\.000", out) and "store: 2 new" in out
    assert main(["judge", "rank", str(a), str(b), "--bootstrap", "50", "--store", store, *common]) == 0
    out = capsys.readouterr().out
    assert "Bradley–Terry ranking" in out and "store: 2 new" in out
    with Store(store) as s:
        kinds = sorted({g.kind for g in s.generic_results()})
    assert kinds == ["bradley_terry", "judge_pairwise", "judge_pointwise"]
    assert main(["judge", "pointwise", str(tmp_path / "nope"), *common]) == 2


def test_scale_means_are_not_mistaken_for_proportions() -> None:
    from judges.pointwise import scale_mean_with_ci

    ones = scale_mean_with_ci("safe", [1.0, 1.0, 1.0, None])
    assert (ones.value, ones.ci_low, ones.ci_high, ones.ci_method, ones.n_unscored) == (1.0, 1.0, 1.0, "degenerate", 1)
    mixed = scale_mean_with_ci("safe", [1.0, 5.0, 3.0, 4.0])
    assert mixed.ci_method == "bootstrap" and mixed.value == pytest.approx(3.25)
    assert mixed.ci_low is not None and 1.0 <= mixed.ci_low < 3.25 < mixed.ci_high <= 5.0  # type: ignore[operator]
    empty = scale_mean_with_ci("safe", [None, None])
    assert (empty.value, empty.n_scored, empty.n_unscored) == (None, 0, 2)
