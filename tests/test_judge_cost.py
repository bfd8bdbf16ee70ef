"""Token cost of `harness judge pointwise|pairwise|rank|rubric`, on scripted judge backends:
tokens in and out per judge model in X.tokens.json beside each results file X.json, and with
`--price-table FILE` their cost in X.cost.json (harness.scoring.cost's shape, as `harness run`
writes); an unpriced judge is reported as unpriced, never $0; a bad price table is refused
before any judging, naming the file; tokens are counted whether or not the cache served them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import harness.backends as backends_module
from harness.cli import main
from harness.run.config import AuxModel, RunConfig
from harness.run.runner import Runner
from harness.types import GenerationRequest
from judges.judge import Judge
from judges.pairs import LLMPairJudge, always_first
from judges.pairwise import run_pairwise
from judges.prompt import load_prompt
from judges.runs import load_run
from leaderboard.rankings import JUDGE_DIMENSIONS
from tests.conftest import ScriptedBackend
from tests.test_judge_runs import as_backend, make_run
from tests.test_rubric_protocol import GRADERS

# ScriptedBackend answers every request with 10 prompt and 5 completion tokens
PROMPT, COMPLETION = 10, 5
IN_USD, OUT_USD = 3.0, 15.0  # per million tokens


def _reply(req: GenerationRequest) -> str:
    assert req.messages is not None
    text = req.messages[-1].content
    if "RUBRIC CRITERION" in text or any("RUBRIC CRITERION" in m.content for m in req.messages):
        return GRADERS["never met"](req)
    if "DOCTOR REPLY" in text:
        return json.dumps(dict.fromkeys(JUDGE_DIMENSIONS, 4))
    return '{"verdict": "tie"}'


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedBackend]:
    """Every judge backend the CLI opens is a scripted one (never a real model here)."""
    made: list[ScriptedBackend] = []

    def fake_create(name: str, model: str | None, **kwargs: Any) -> Any:
        made.append(ScriptedBackend(_reply))
        return made[-1]

    monkeypatch.setattr(backends_module, "create_backend", fake_create)
    return made


def _prices(tmp_path: Path, models: dict[str, tuple[float, float]]) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text("models:\n" + "".join(f'  "{m}": {{input: {i}, output: {o}}}\n' for m, (i, o) in models.items()))
    return path


JUDGE = ["--quiet", "--judge-backend", "openai", "--judge", "judge-model", "--base-url", "http://127.0.0.1:1/v1"]
LABEL = "openai:judge-model"


def _cost_line(out: str) -> tuple[str, Path]:
    line = next(x for x in out.splitlines() if x.startswith("cost: "))
    total, _, path = line.removeprefix("cost: ").partition(" -> ")
    return total, Path(path)


def _expected_usd(n_requests: int) -> float:
    return (n_requests * PROMPT * IN_USD + n_requests * COMPLETION * OUT_USD) / 1e6


def test_pointwise_records_tokens_and_prices_them(tmp_path: Path, created: list[ScriptedBackend],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "a", ["x", "y", None], model_fp="fp-a")  # the missing output is not judged
    prices = _prices(tmp_path, {LABEL: (IN_USD, OUT_USD)})
    assert main(["judge", "pointwise", str(run), "--no-cache", "--price-table", str(prices), *JUDGE]) == 0
    out = capsys.readouterr().out
    assert f"tokens judge {LABEL}: 20 in, 10 out over 2 judgements" in out
    assert "whether or not the request cache served it" in out
    total, path = _cost_line(out)
    assert path.name == "pointwise.cost.json" and path.parent.parent.name == "judgements"
    assert (path.parent / "pointwise.json").is_file()
    cost = json.loads(path.read_text())
    assert cost["total_usd"] == pytest.approx(_expected_usd(2)) and total == f"${_expected_usd(2):.4f}"
    assert cost["unpriced_models"] == [] and cost["price_table"]["source"] == str(prices)
    (role,) = cost["roles"]
    assert (role["role"], role["model"], role["prompt_tokens"], role["completion_tokens"], role["samples"]) == (
        "judge", LABEL, 20, 10, 2)
    assert role["price_entry"] == LABEL
    tokens = json.loads((path.parent / "pointwise.tokens.json").read_text())
    assert tokens["roles"] == [{"role": "judge", "model": LABEL, "prompt_tokens": 20, "completion_tokens": 10,
                                "samples": 2}]
    assert "cache" in tokens["note"]


def test_tokens_are_counted_when_the_cache_serves_them(tmp_path: Path, created: list[ScriptedBackend],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "a", ["x", "y"], model_fp="fp-a")
    cache = ["--cache", str(tmp_path / "cache.sqlite")]
    outs = []
    for _ in range(2):
        assert main(["judge", "pointwise", str(run), *cache, *JUDGE]) == 0
        outs.append(capsys.readouterr().out)
    assert len(created[1].generate_calls) == 0  # the second time, every request came from the cache
    assert all(f"tokens judge {LABEL}: 20 in, 10 out over 2 judgements" in o for o in outs)
    assert "cost: " not in outs[0]  # no --price-table, no cost


def test_a_retried_reply_counts_both_requests(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "a", ["x", "y"], model_fp="fp-a"))
    judge = Judge(as_backend(ScriptedBackend(lambda r: "not json")), load_prompt("pairwise"), model_label="s:j")
    b = load_run(make_run(tmp_path / "b", ["z", "w"], model_fp="fp-b"))
    report = run_pairwise(run, b, LLMPairJudge(judge))
    (usage,) = report.usage
    # 2 pairs x 2 orders, each asked twice (the reply never parses)
    assert (usage.role, usage.model, usage.prompt_tokens, usage.completion_tokens, usage.samples) == (
        "judge", "s:j", 8 * PROMPT, 8 * COMPLETION, 4)
    assert run_pairwise(run, b, always_first()).usage == ()  # a baseline spends no tokens and is not priced


def test_pairwise_and_rank(tmp_path: Path, created: list[ScriptedBackend], capsys: pytest.CaptureFixture[str]) -> None:
    runs = [make_run(tmp_path / n, ["x", "y"], model_fp=f"fp-{n}") for n in "abc"]
    prices = _prices(tmp_path, {"openai:judge-*": (IN_USD, OUT_USD)})  # a glob pattern
    assert main(["judge", "pairwise", str(runs[0]), str(runs[1]), "--no-cache", "--price-table", str(prices),
                 *JUDGE]) == 0
    out = capsys.readouterr().out
    assert "tokens judge openai:judge-model: 40 in, 20 out over 4 judgements" in out  # 2 pairs, both orders
    total, path = _cost_line(out)
    assert path.name.startswith("pairwise-") and path.name.endswith(".cost.json")
    assert total == f"${_expected_usd(4):.4f}"
    cost = json.loads(path.read_text())
    assert cost["total_usd"] == pytest.approx(_expected_usd(4)) and cost["roles"][0]["price_entry"] == "openai:judge-*"
    assert main(["judge", "rank", *map(str, runs), "--bootstrap", "20", "--no-cache", "--price-table", str(prices),
                 "--output", str(tmp_path / "rank"), *JUDGE]) == 0
    out = capsys.readouterr().out
    total, path = _cost_line(out)
    assert path == tmp_path / "rank" / "ranking.cost.json" and total == f"${_expected_usd(12):.4f}"
    cost = json.loads(path.read_text())
    (role,) = cost["roles"]  # one judge: the three pairs' tokens summed
    assert (role["prompt_tokens"], role["completion_tokens"], role["samples"]) == (120, 60, 12)
    assert cost["total_usd"] == pytest.approx(_expected_usd(12))
    assert json.loads((tmp_path / "rank" / "ranking.tokens.json").read_text())["roles"][0]["prompt_tokens"] == 120


def test_an_unpriced_judge_is_unpriced_not_free(tmp_path: Path, created: list[ScriptedBackend],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "a", ["x", "y"], model_fp="fp-a")
    prices = _prices(tmp_path, {"some-other-model": (1.0, 1.0)})
    assert main(["judge", "pointwise", str(run), "--no-cache", "--price-table", str(prices), *JUDGE]) == 0
    total, path = _cost_line(capsys.readouterr().out)
    assert total == f"n/a (unpriced: {LABEL})"
    cost = json.loads(path.read_text())
    assert cost["total_usd"] is None and cost["unpriced_models"] == [LABEL]
    assert cost["roles"][0]["usd"] is None and cost["roles"][0]["price_entry"] is None
    assert cost["roles"][0]["prompt_tokens"] == 20  # the tokens are still there


@pytest.mark.parametrize("content", [None, "models: [1, 2]", "models: {m: {input: -1, output: 0}}"])
def test_a_bad_price_table_is_refused_before_judging(tmp_path: Path, created: list[ScriptedBackend],
                                                     capsys: pytest.CaptureFixture[str], content: str | None) -> None:
    run = make_run(tmp_path / "a", ["x", "y"], model_fp="fp-a")
    prices = tmp_path / "bad_prices.yaml"
    if content is not None:
        prices.write_text(content)
    assert main(["judge", "pointwise", str(run), "--no-cache", "--price-table", str(prices), *JUDGE]) == 2
    err = capsys.readouterr().err
    assert str(prices) in err and "Traceback" not in err and err.startswith("error: ")
    assert created == []  # refused before any judge was opened
    assert not (run / "judgements").exists()


def test_a_rubric_jury_prices_each_grader(tmp_path: Path, created: list[ScriptedBackend],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = RunConfig(tasks=("healthbench_consensus",), data_source="bundled", output=tmp_path / "hb", cache=None,
                       aux_models={"grader": AuxModel(backend="scripted")})
    Runner(config, backend=ScriptedBackend(lambda r: "Call an ambulance now."),
           aux_backends={"grader": ScriptedBackend(GRADERS["never met"])}).run()
    prices = _prices(tmp_path, {"hf:a": (IN_USD, OUT_USD)})  # grader b has no price
    assert main(["judge", "rubric", str(tmp_path / "hb"), "--judge", "a", "--judge", "b", "--no-cache", "--quiet",
                 "--output", str(tmp_path / "jury"), "--price-table", str(prices)]) == 0
    out = capsys.readouterr().out
    # 3 examples of 2 rubric items: 6 decisions per grader
    assert "tokens judge hf:a: 60 in, 30 out over 6 judgements" in out
    assert "tokens judge_2 hf:b: 60 in, 30 out over 6 judgements" in out
    total, path = _cost_line(out)
    assert path == tmp_path / "jury" / "jury.cost.json" and total == "n/a (unpriced: hf:b)"
    cost = json.loads(path.read_text())
    assert cost["total_usd"] is None  # a partial sum would mislead
    by_role = {r["role"]: r for r in cost["roles"]}
    assert by_role["judge"]["usd"] == pytest.approx(_expected_usd(6)) and by_role["judge_2"]["usd"] is None


def test_harness_run_cost_goes_through_the_same_writer(tmp_path: Path) -> None:
    """`harness run --price-table` (harness.cli.run._write_cost) and the judge commands share
    harness.cli.options.write_cost: the same file shape and line."""
    from harness.cli.run import _write_cost

    config = RunConfig(tasks=("healthbench_consensus",), data_source="bundled", output=tmp_path / "hb", cache=None,
                       aux_models={"grader": AuxModel(backend="scripted", model="grader-x")})
    Runner(config, backend=ScriptedBackend(lambda r: "Call an ambulance now."),
           aux_backends={"grader": ScriptedBackend(GRADERS["never met"])}).run()
    line = _write_cost(tmp_path / "hb", _prices(tmp_path, {"grader-x": (IN_USD, OUT_USD)}))
    assert line == f"cost: n/a (unpriced: default) -> {tmp_path / 'hb' / 'cost.json'}"
    cost = json.loads((tmp_path / "hb" / "cost.json").read_text())
    by_role = {r["role"]: r for r in cost["roles"]}
    assert by_role["grader"]["usd"] == pytest.approx(_expected_usd(6)) and by_role["candidate"]["usd"] is None
