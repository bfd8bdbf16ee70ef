"""Issue 15, the leaderboard side: nothing with n = 0 is stored or shown, a subset never replaces
the whole, n is on every cell, and the model page shows the model's generated text."""

from __future__ import annotations

import json
from pathlib import Path

from test_leaderboard_support import make_run, make_task

from leaderboard.rankings import leaderboard_from_store
from leaderboard.site import build_site
from leaderboard.store import GenericResult, Store


def test_a_task_with_nothing_scored_is_not_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    run = make_run(tmp_path / "r", {"medqa": make_task([None, None, None], fingerprint="f"),
                                    "pubmedqa": make_task([1, 0], fingerprint="g")})
    assert store.import_run(run).added
    assert [r.task for r in store.task_results()] == ["pubmedqa"]
    lb = leaderboard_from_store(store)
    assert [c.task for c in lb.columns] == ["pubmedqa"]


def test_a_judge_result_with_n_0_is_not_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    empty = GenericResult(kind="judge_pointwise", name="safe", model_name="m", model_fingerprint="w",
                          fingerprint="j", value=None, n=0, n_unscored=40)
    full = empty.model_copy(update={"name": "fluent", "value": 3.5, "n": 40, "n_unscored": 0})
    assert store.add_results([empty, full]) == 1
    assert [g.name for g in store.generic_results()] == ["fluent"]


def test_a_later_smaller_run_never_replaces_the_full_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.import_run(make_run(tmp_path / "full", {"medqa": make_task([1, 0] * 25, fingerprint="full")},
                              finished_at="2026-01-01T00:00:00+00:00"))
    store.import_run(make_run(tmp_path / "limit10", {"medqa": make_task([1] * 10, fingerprint="limit10")},
                              finished_at="2026-02-01T00:00:00+00:00"))
    lb = leaderboard_from_store(store)
    (cell,) = lb.rows[0].cells.values()
    assert cell.n_scored == 50 and cell.value == 0.5
    index = build_site(lb, tmp_path / "site").index.read_text()
    assert '<small class="n">n=50</small>' in index  # n shown on the cell, not only in a tooltip


def test_model_page_examples_show_the_generated_text(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    run = make_run(tmp_path / "r", {"ner_ncbi_disease": make_task([0.5, 1.0], fingerprint="n", protocol="generate",
                                                                  answers=[None, None])})
    path = run / "samples.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for i, e in enumerate(lines):
        e["score"]["metadata"] = {"output": f'["breast cancer", "ataxia telangiectasia {i}"]'}
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    store.import_run(run)
    site = build_site(leaderboard_from_store(store), tmp_path / "site")
    page = site.model_pages[0].read_text()
    assert "ataxia telangiectasia 0" in page and "ataxia telangiectasia 1" in page
