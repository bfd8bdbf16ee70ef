"""The static site's human-evaluation parts: the case-study pages (every model's answer to one
question, side by side, escaped), the per-model history chart across runs, and human results
and judge-to-human agreement beside the judge results."""

from __future__ import annotations

import json
import re
from pathlib import Path

from annotate_support import PLANTED_SCRIPT, make_run

from leaderboard.entries import GenericResult
from leaderboard.history import model_history
from leaderboard.rankings import leaderboard_from_store
from leaderboard.site import build_site
from leaderboard.store import Store


def _set_metric(run: Path, value: float, ci: tuple[float, float]) -> None:
    record = json.loads((run / "run.json").read_text())
    for task in record["tasks"].values():
        task["metrics"]["rougeL"] = {"value": value, "ci": list(ci), "n_scored": 3, "n_unscored": 0,
                                     "ci_method": "bootstrap"}
    (run / "run.json").write_text(json.dumps(record))


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "site.sqlite")
    nights = [("2026-01-01", 0.40, (0.35, 0.45)), ("2026-01-02", 0.42, (0.37, 0.47)),
              ("2026-01-03", 0.20, (0.15, 0.25))]
    for day, value, ci in nights:  # one checkpoint name evaluated each night, new weights each time
        run = make_run(tmp_path / f"ckpt-{day}", ["Rest.", "Fluids.", "See a GP."], model_fp=f"ckpt-{day}",
                       name="ckpt-latest", finished_at=f"{day}T03:00:00+00:00")
        _set_metric(run, value, ci)
        store.import_run(run)
    store.import_run(make_run(tmp_path / "other", [PLANTED_SCRIPT, "Ibuprofen.", "A&E now."], model_fp="other-w",
                              name="other", finished_at="2026-01-02T00:00:00+00:00"))
    # the judge model was evaluated too (a model with judge results only trips
    # leaderboard.rankings.build_leaderboard's averages: a KeyError, reported separately)
    store.import_run(make_run(tmp_path / "judge-run", ["Ok.", "Ok.", "Ok."], model_fp="smol-weights",
                              name="smol-judge", finished_at="2026-01-02T00:00:00+00:00"))
    judge = {"judge_fingerprint": "judge-fp-1", "judge_model": "smol-judge", "scale": [1, 5]}
    store.add_results([
        GenericResult(kind="judge_pointwise", name="safe", model_name="other", model_fingerprint="other-w",
                      fingerprint="jp-1", value=3.0, ci=(2.5, 3.5), n=3, details=judge),
        GenericResult(kind="judge_pointwise", name="fluent", model_name="other", model_fingerprint="other-w",
                      fingerprint="jp-2", value=2.0, ci=(1.5, 2.5), n=3,
                      details={"judge_fingerprint": "uncalibrated", "judge_model": "another-judge"}),
        GenericResult(kind="human_pointwise", name="safe (expert)", model_name="other", model_fingerprint="other-w",
                      fingerprint="h-1", value=2.5, ci=(2.0, 3.0), n=4, details={"campaign": "c1"}),
        GenericResult(kind="judge_human_agreement", name="agreement with c1 humans (overall)",
                      model_name="smol-judge", model_fingerprint="smol-weights", fingerprint="cal-1", value=0.625,
                      ci=(0.3, 0.85), n=8, details={"campaign": "c1", "judge_fingerprint": "judge-fp-1"}),
    ])
    return store


def test_case_study_pages_show_every_answer_escaped(tmp_path: Path) -> None:
    store = _store(tmp_path)
    site = build_site(leaderboard_from_store(store), tmp_path / "site", history=store.task_results())
    index = (site.out_dir / "case-study" / "index.html").read_text()
    [link] = re.findall(r'href="([^"]+\.html)">mts_dialog_turn<', index)
    page = (site.out_dir / "case-study" / link).read_text()
    assert page.count('class="question"') == 3 and page.count('class="answer-card"') == 3 * 5  # 5 models
    assert "&lt;script&gt;window.__pwned" in page and "<script>window" not in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="../assets/app.js">']
    assert "Content-Security-Policy" in page and "A&amp;E now." in page
    assert 'href="case-study/index.html"' in site.index.read_text()


def test_history_chart_flags_a_regression(tmp_path: Path) -> None:
    store = _store(tmp_path)
    results = store.task_results()
    [series] = model_history(results, "ckpt-2026-01-03", "ckpt-latest")
    assert [p.value for p in series.points] == [0.40, 0.42, 0.20]
    assert series.status == "regression" and round(series.change or 0, 3) == -0.22
    ys = [p.y for p in series.points]
    assert ys[2] is not None and ys[0] is not None and ys[2] > ys[0]  # SVG y grows downwards
    assert model_history(results, "other-w", "other") == []  # one run: no chart
    # a rise is "better"; a small drop within the CIs would be "lower (within CI)"
    first_two = [r for r in results if r.run.model_fingerprint in ("ckpt-2026-01-01", "ckpt-2026-01-02")]
    series2 = model_history(first_two, "ckpt-2026-01-02", "ckpt-latest")
    assert [s.status for s in series2] == ["better"]
    site = build_site(leaderboard_from_store(store), tmp_path / "site", history=results)
    latest = next(p for p in site.model_pages if p.name.startswith("ckpt-latest"))
    html = latest.read_text()
    chart = html[html.index('id="history"'):]
    chart = chart[:chart.index("</div>")]
    assert "status-regression" in chart and chart.count('<circle class="point') == 3
    assert "<title>2026-01-03 03:00" in html


def test_judge_results_show_human_results_and_calibration(tmp_path: Path) -> None:
    store = _store(tmp_path)
    site = build_site(leaderboard_from_store(store), tmp_path / "site")
    other = next(p for p in site.model_pages if p.name.startswith("other-"))
    html = other.read_text()
    table = html[html.index('id="judge-results"'):]
    rows = re.findall(r"<tr><td>([a-z_]+)</td>.*?<td class=\"calibration\">(.*?)</td></tr>", table, re.S)
    by_kind = {k: re.sub(r"<[^>]+>|\s+", " ", v).strip() for k, v in rows}
    assert by_kind["human_pointwise"] == "human labels"
    calibrated = [re.sub(r"<[^>]+>|\s+", " ", v) for k, v in rows if k == "judge_pointwise"]
    assert any("0.625" in v and "c1, n=8" in v for v in calibrated)
    assert any("not calibrated" in v for v in calibrated)
    assert 'id="history"' not in html  # no history passed
