"""Cost per task on the leaderboard: `harness leaderboard import` reads RUN/cost.json (what
`harness run --price-table` writes) or prices a run's recorded tokens with `--price-table`,
stores the USD per task result, and `leaderboard show` / the site show it beside the score;
an unpriced task shows "—", never $0. Stores made before the cost columns still open."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from harness.cli import main
from harness.run.config import AuxModel, RunConfig
from harness.run.folder import RunFolder
from harness.run.runner import Runner
from harness.scoring.cost import cost_report, load_price_table, run_usage
from leaderboard.cost import format_usd
from leaderboard.export import render
from leaderboard.rankings import leaderboard_from_store
from leaderboard.site import build_site
from leaderboard.store import Store
from tests.conftest import ScriptedBackend

RUBRIC = "healthbench_consensus|rubric|0shot"
MCQA = "medqa|loglik|0shot"
# ScriptedBackend: 10 prompt and 5 completion tokens per reply; healthbench_consensus bundled:
# 3 samples with 2 rubric items each -> candidate 30 / 15 tokens, grader 60 / 30 tokens
PRICED = "models: {grader-x: {input: 100, output: 200}, default: {input: 1, output: 2}}\n"
GRADER_USD = (60 * 100 + 30 * 200) / 1e6
CANDIDATE_USD = (30 * 1 + 15 * 2) / 1e6


class Candidate(ScriptedBackend):
    """A scripted model under test with weights of its own (one leaderboard row per name)."""

    def __init__(self, reply: str, fingerprint: str):
        super().__init__(lambda r: reply)
        self._fp = fingerprint

    def fingerprint(self) -> str:
        return self._fp


def make_run(tmp_path: Path, name: str, reply: str = "Call an ambulance now.") -> Path:
    """A real run: a rubric task (records tokens per role) and an MCQA task (records none)."""
    config = RunConfig(tasks=("healthbench_consensus", "medqa"), data_source="bundled", output=tmp_path / name,
                       cache=None, limit=3, aux_models={"grader": AuxModel(backend="scripted", model="grader-x")})
    grader = ScriptedBackend(lambda r: json.dumps({"explanation": "scripted", "criteria_met": True}))
    Runner(config, backend=Candidate(reply, f"weights-{name}"), aux_backends={"grader": grader}).run()
    return tmp_path / name


def write_cost(folder: Path, table_text: str, tmp_path: Path) -> Path:
    """RUN/cost.json as `harness run --price-table` writes it (harness.cli.run._write_cost)."""
    table = tmp_path / "prices.yaml"
    table.write_text(table_text, encoding="utf-8")
    run = RunFolder(folder)
    record = json.loads(run.record_path.read_text(encoding="utf-8"))
    report = cost_report(run_usage(record, run.read_samples()), load_price_table(table))
    (folder / "cost.json").write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return table


def _cells(store: Store) -> dict[str, dict[str, float | None]]:
    lb = leaderboard_from_store(store)
    return {r.runs[0].run_path.rsplit("/", 1)[-1]: {c.split("#")[0]: cell.cost_usd for c, cell in r.cells.items()}
            for r in lb.rows}


def test_import_reads_cost_json(tmp_path: Path) -> None:
    run = make_run(tmp_path, "priced")
    write_cost(run, PRICED, tmp_path)
    with Store(tmp_path / "s.sqlite") as store:
        outcome = store.import_run(run)
        assert outcome.added and outcome.n_costs == 1
        costs = _cells(store)["priced"]
        assert costs[RUBRIC] == pytest.approx(GRADER_USD + CANDIDATE_USD)
        assert costs[MCQA] is None  # no tokens recorded: unpriced, not 0
        [stored] = [r for r in store.task_results() if r.task_key == RUBRIC]
        assert stored.cost is not None and {r["role"] for r in stored.cost["roles"]} == {"candidate", "grader"}
        assert stored.cost["source"].endswith("cost.json")


def test_unpriced_model_shows_no_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    priced, unpriced = make_run(tmp_path, "priced"), make_run(tmp_path, "unpriced", reply="Rest at home.")
    write_cost(priced, PRICED, tmp_path)
    write_cost(unpriced, "models: {default: {input: 1, output: 2}}\n", tmp_path)  # grader-x has no price
    store = str(tmp_path / "s.sqlite")
    assert main(["leaderboard", "import", "--store", store, str(priced), str(unpriced)]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith("2 tasks, 1 priced") and second.endswith("2 tasks")
    with Store(store) as s:
        costs = _cells(s)
        assert costs["unpriced"][RUBRIC] is None  # the candidate is priced, the grader not: no partial sum
        [row] = [r for r in s.task_results() if r.task_key == RUBRIC and r.run.run_path.endswith("unpriced")]
        assert row.cost is not None and row.cost["unpriced_models"] == ["grader-x"] and row.cost_usd is None
    assert main(["leaderboard", "show", "--store", store]) == 0
    table = capsys.readouterr().out
    [line] = [x for x in table.splitlines() if x.startswith("healthbench_consensus")]
    assert format_usd(GRADER_USD + CANDIDATE_USD) in line and line.count("· —") == 1
    assert "$0.00" not in table
    [mcqa] = [x for x in table.splitlines() if x.startswith("medqa")]
    assert mcqa.count("· —") == 2  # no tokens recorded for MCQA: unpriced for both models
    assert main(["leaderboard", "show", "--store", store, "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    assert "cost_usd" in csv_text.splitlines()[0]
    with Store(store) as s:
        site = build_site(leaderboard_from_store(s), tmp_path / "site")
    index = site.index.read_text(encoding="utf-8")
    shown = re.findall(r'<small class="cost"[^>]*>(.*?)</small>', index)
    assert sorted(shown) == sorted([format_usd(GRADER_USD + CANDIDATE_USD), "—", "—", "—"])
    page = next(p for p in site.model_pages if format_usd(GRADER_USD + CANDIDATE_USD) in p.read_text(encoding="utf-8"))
    assert '<td class="cost"' in page.read_text(encoding="utf-8")


def test_no_cost_anywhere_leaves_the_table_as_it_was(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.import_run(make_run(tmp_path, "plain"))
        lb = leaderboard_from_store(store)
    assert not lb.has_costs
    table = render(lb, "table")
    assert "$" not in table and "—" not in table and "USD" not in table


def test_import_price_table_prices_a_run_without_cost_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path, "later")
    table = tmp_path / "prices.yaml"
    table.write_text(PRICED, encoding="utf-8")
    store = str(tmp_path / "s.sqlite")
    assert main(["leaderboard", "import", "--store", store, str(run)]) == 0  # first without prices
    with Store(store) as s:
        assert _cells(s)["later"][RUBRIC] is None
    capsys.readouterr()
    assert main(["leaderboard", "import", "--store", store, "--price-table", str(table), str(run)]) == 0
    assert "already held (cost added)" in capsys.readouterr().out
    with Store(store) as s:
        assert _cells(s)["later"][RUBRIC] == pytest.approx(GRADER_USD + CANDIDATE_USD)
        [row] = [r for r in s.task_results() if r.task_key == RUBRIC]
        assert row.cost is not None and row.cost["source"] == f"price table {table}"
    # a stored cost is never changed by a later table
    table.write_text(PRICED.replace("100", "999"), encoding="utf-8")
    assert main(["leaderboard", "import", "--store", store, "--price-table", str(table), str(run)]) == 0
    assert "already held (no change)" in capsys.readouterr().out
    with Store(store) as s:
        assert _cells(s)["later"][RUBRIC] == pytest.approx(GRADER_USD + CANDIDATE_USD)


def test_a_bad_cost_json_names_file_and_field(tmp_path: Path) -> None:
    run = make_run(tmp_path, "bad")
    (run / "cost.json").write_text(json.dumps({"roles": [{"task": RUBRIC, "usd": -1}]}), encoding="utf-8")
    with Store(tmp_path / "s.sqlite") as store, pytest.raises(Exception, match=r"cost\.json: field roles\.0\.usd"):
        store.import_run(run)


def test_old_store_without_cost_columns_opens(tmp_path: Path) -> None:
    run = make_run(tmp_path, "old")
    path = tmp_path / "old.sqlite"
    Store(path).import_run(run)
    with sqlite3.connect(path) as db:  # the schema before the cost columns (and before higher_is_better)
        for table, column in (("task_results", "cost_usd"), ("task_results", "cost"), ("metrics", "higher_is_better")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        assert "cost_usd" not in {r[1] for r in db.execute("PRAGMA table_info(task_results)")}
    with Store(path) as store:
        assert {r.task_key: r.cost_usd for r in store.task_results()} == {RUBRIC: None, MCQA: None}
        table = render(leaderboard_from_store(store), "table")
        assert "$" not in table and "—" not in table
        write_cost(run, PRICED, tmp_path)
        assert store.import_run(run).n_costs == 1  # the reopened store takes the cost now
        assert _cells(store)["old"][RUBRIC] == pytest.approx(GRADER_USD + CANDIDATE_USD)
    with sqlite3.connect(path) as db:
        assert {"cost_usd", "cost"} <= {r[1] for r in db.execute("PRAGMA table_info(task_results)")}


def test_format_usd() -> None:
    assert format_usd(None) == "—" and format_usd(0.0) == "$0.00"
    assert format_usd(0.0123) == "$0.0123" and format_usd(175.4) == "$175.40" and format_usd(3.1e-6) == "$3.1e-06"
