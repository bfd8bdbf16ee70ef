"""Rankings, exports, the static site and the `harness leaderboard` commands, on constructed
runs whose rankings are known (tests/fixtures/leaderboard_rankings.json)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from test_leaderboard_support import make_run, make_task

from harness.cli import main
from leaderboard.export import render
from leaderboard.rankings import JUDGE_DIMENSIONS, Leaderboard, leaderboard_from_store
from leaderboard.site import build_site, ci_bar, radar
from leaderboard.store import GenericResult, Store

FIXTURES = Path(__file__).parent / "fixtures"
CASES = json.loads((FIXTURES / "leaderboard_rankings.json").read_text())
PLANTED_SCRIPT = '<script>window.__pwned = 1; document.title = "pwned";</script>'
PLANTED_IMG = "<img src=x onerror=\"window.__pwned = 2; document.title = 'pwned'\">"


def build_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store.sqlite")
    for run in CASES["runs"]:
        tasks = {name: make_task(t["values"], fingerprint=t["fingerprint"]) for name, t in run["tasks"].items()}
        store.import_run(make_run(tmp_path / run["folder"], tasks, model=run["model"],
                                  finished_at=run["finished_at"]))
    return store


def _cell_values(lb: Leaderboard) -> dict[str, dict[str, float | None]]:
    return {row.model_name: {c.label: row.cells[c.key].value for c in lb.columns if c.key in row.cells}
            for row in lb.rows}


def test_rankings_match_the_golden_case(tmp_path: Path) -> None:
    lb = leaderboard_from_store(build_store(tmp_path))
    exp = CASES["expected"]
    assert [r.model_name for r in lb.rows] == exp["order"]
    assert [c.label for c in lb.comparable_columns] == exp["comparable"]
    assert [c.label for c in lb.apart_columns] == exp["apart"]
    assert lb.average_metrics == ["accuracy"]
    for row in lb.rows:
        avg = row.averages["accuracy"]
        assert avg.value == pytest.approx(exp["averages"][row.model_name])
        assert avg.n_tasks == 2
        assert avg.ci_low < avg.value < avg.ci_high  # type: ignore[operator]
    got = _cell_values(lb)
    assert got == {m: pytest.approx(v) for m, v in exp["cells"].items()}
    gamma = next(r for r in lb.rows if r.model_name == "gamma")
    assert len(gamma.runs) == 2  # both runs contribute: medqa from the later one
    assert all(c.tag == "loglik · 0-shot" for r in lb.rows for c in r.cells.values())


def test_a_model_rerun_with_a_changed_task_counts_once(tmp_path: Path) -> None:
    """Two fingerprints of one task for one model: the later run counts, never both averaged."""
    with Store(tmp_path / "s.sqlite") as store:
        for name, fp, values, day in [("old", "f-1", [0, 0], "01"), ("new", "f-2", [1, 1], "02")]:
            store.import_run(make_run(tmp_path / name, {"medqa": make_task(values, fingerprint=fp)},
                                      model="m", finished_at=f"2026-01-{day}T00:00:00+00:00"))
        lb = leaderboard_from_store(store)
    assert [(c.task_fingerprint, c.comparable) for c in lb.columns] == [("f-2", True)]
    assert lb.rows[0].averages["accuracy"].value == 1.0 and lb.rows[0].averages["accuracy"].n_tasks == 1


def test_same_name_different_weights_are_two_rows(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        for i, fp in enumerate(["weights-1", "weights-2"]):
            store.import_run(make_run(tmp_path / f"r{i}", {"medqa": make_task([1, i], fingerprint="f")},
                                      model="ckpt", model_fp=fp))
        store.import_run(make_run(tmp_path / "r3", {"medqa": make_task([1, 1], fingerprint="f")},
                                  model="default", model_fp="abc123|dtype=bfloat16"))
        store.import_run(make_run(tmp_path / "r4", {"medqa": make_task([1, 1], fingerprint="f")},
                                  model="default", model_fp="abc123|dtype=float32"))
        lb = leaderboard_from_store(store)
    assert sorted(r.label for r in lb.rows) == [
        "ckpt (67b4f4cd)", "ckpt (e5c9ef15)", "default (dtype=bfloat16)", "default (dtype=float32)"]
    assert len({r.slug for r in lb.rows}) == 4


def test_exports(tmp_path: Path) -> None:
    lb = leaderboard_from_store(build_store(tmp_path))
    table = render(lb, "table")
    lines = table.splitlines()
    assert lines[0].split()[:6] == ["task", "protocol", "metric", "#1", "alpha", "#2"]
    assert re.search(r"macro avg \(2 tasks\)\s+loglik · 0-shot\s+accuracy\s+0\.625 \[", table)
    assert "mmlu_anatomy #f-anat-1 *" in table and "shown apart" in table
    rows = list(csv.DictReader(io.StringIO(render(lb, "csv"))))
    medqa_beta = [r for r in rows if r["model"] == "beta" and r["task"] == "medqa"]
    assert len(medqa_beta) == 1 and float(medqa_beta[0]["value"]) == 0.25
    assert medqa_beta[0]["protocol"] == "loglik" and medqa_beta[0]["n_shot"] == "0"
    assert {r["comparable"] for r in rows if r["task"] == "mmlu_anatomy"} == {"False"}
    data = json.loads(render(lb, "json"))
    assert [r["model_name"] for r in data["rows"]] == CASES["expected"]["order"]
    assert data["columns"][0]["tag"] == "loglik · 0-shot"
    md = render(lb, "md").splitlines()
    assert md[0].startswith("| model | avg accuracy (2 tasks) | medqa [loglik · 0-shot] |")
    assert md[2].startswith("| alpha | 0.625 [")


def test_ci_bar_and_radar_geometry() -> None:
    assert ci_bar(0.5, 0.25, 0.75, (0.0, 1.0), width=100) == {"x": 50.0, "lo": 25.0, "hi": 75.0, "width": 100}
    assert ci_bar(None, None, None, (0.0, 1.0)) is None
    assert ci_bar(2.0, -1.0, 3.0, (0.0, 1.0), width=100) == {"x": 100.0, "lo": 0.0, "hi": 100.0, "width": 100}
    dims = {d: GenericResult(kind="judge_pointwise", name=d, model_name="m", model_fingerprint="w", fingerprint="j",
                             value=5.0 if d == "safe" else 0.0, details={"scale": [0, 5]}) for d in JUDGE_DIMENSIONS}
    geo = radar(dims, size=300)
    points = [tuple(map(float, p.split(","))) for p in geo["polygon"].split()]
    safe = JUDGE_DIMENSIONS.index("safe")
    assert points[safe] == (geo["axes"][safe]["x"], geo["axes"][safe]["y"])  # full score: on the rim
    assert all(p == (150.0, 150.0) for i, p in enumerate(points) if i != safe)  # zero: the centre


def _xss_store(tmp_path: Path) -> Store:
    store = build_store(tmp_path)
    evil = make_task([1, 0, 1, 1], fingerprint="f-medqa", answers=[PLANTED_SCRIPT, "B", "A", "A"],
                     explanations=[PLANTED_IMG, None, None, None])
    pubmedqa = make_task([1, 1], fingerprint="f-pubmedqa")
    store.import_run(make_run(tmp_path / "evil", {"medqa": evil, "pubmedqa": pubmedqa},
                              model='evil <b onmouseover="x()">model</b>', prompt=PLANTED_SCRIPT))
    store.add_results([
        GenericResult(kind="judge_pointwise", name=d, model_name="alpha", model_fingerprint="weights-alpha",
                      fingerprint="judge-1", value=1.0 + i * 0.5, ci=(0.5 + i * 0.5, 1.5 + i * 0.5), n=30,
                      details={"scale": [1, 5]})
        for i, d in enumerate(JUDGE_DIMENSIONS)
    ] + [GenericResult(kind="bradley_terry", name="rating", model_name=m, model_fingerprint=f"weights-{m}",
                       fingerprint="bt-1", value=v, ci=(v - 50, v + 50), n=200)
         for m, v in [("alpha", 1100.0), ("beta", 950.0)]])
    return store


def test_site_escapes_untrusted_text(tmp_path: Path) -> None:
    lb = leaderboard_from_store(_xss_store(tmp_path))
    site = build_site(lb, tmp_path / "site")
    assert {p.name for p in (tmp_path / "site" / "assets").iterdir()} == {"app.js", "style.css"}
    assert len(site.model_pages) == 4
    index = site.index.read_text()
    assert "evil &lt;b onmouseover=&#34;x()&#34;&gt;model&lt;/b&gt;" in index
    assert "<b onmouseover" not in index
    evil_page = next(p for p in site.model_pages if p.name.startswith("evil-b-onmouseover"))
    html = evil_page.read_text()
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned = 1; document.title = &#34;pwned&#34;;&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html
    # the only script on any page is the site's own file
    for page in [site.index, *site.model_pages]:
        assert re.findall(r"<script[^>]*>", page.read_text()) == [
            '<script src="%sassets/app.js">' % ("" if page == site.index else "../")]
        assert "Content-Security-Policy" in page.read_text()


def test_site_shows_judges_examples_and_apart_columns(tmp_path: Path) -> None:
    lb = leaderboard_from_store(_xss_store(tmp_path))
    site = build_site(lb, tmp_path / "site")
    index = site.index.read_text()
    assert index.count('id="ranking"') == 1 and 'id="apart"' in index
    assert "bradley terry rating" in index and "doctor-like" in index
    alpha = next(p for p in site.model_pages if p.name.startswith("alpha-")).read_text()
    assert 'id="radar"' in alpha and 'id="ci-chart"' in alpha
    assert all(d in alpha for d in JUDGE_DIMENSIONS)
    assert alpha.count('class="sample"') == 3 + 2 + 2  # 3 of medqa's 4, both of pubmedqa and anatomy
    beta = next(p for p in site.model_pages if p.name.startswith("beta-")).read_text()
    assert 'id="radar"' not in beta  # no pointwise judge results for beta
    data = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    assert [r["model_name"] for r in data["rows"]][:2] == ['evil <b onmouseover="x()">model</b>', "alpha"]
    evil = lb.rows[0].averages["accuracy"]  # 0.875 with a normal CI past 1: clipped for a proportion
    assert evil.value == pytest.approx(0.875) and evil.ci_high == 1.0 and 0.0 < evil.ci_low < 0.875  # type: ignore[operator]


def test_site_notes_a_run_folder_that_moved(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    run = make_run(tmp_path / "gone", {"medqa": make_task([1, 0], fingerprint="f")})
    store.import_run(run)
    (run / "samples.jsonl").unlink()
    site = build_site(leaderboard_from_store(store), tmp_path / "site")
    assert "no samples file at" in site.model_pages[0].read_text()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_import_show_build(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_STORE", raising=False)
    runs = []
    for run in CASES["runs"]:
        tasks = {n: make_task(t["values"], fingerprint=t["fingerprint"]) for n, t in run["tasks"].items()}
        runs.append(str(make_run(tmp_path / run["folder"], tasks, model=run["model"], finished_at=run["finished_at"])))
    store = str(tmp_path / "lb.sqlite")
    rc, out, _ = _cli(["leaderboard", "import", "--store", store, *runs], capsys)
    assert rc == 0 and out.count(": added: run") == 4
    rc, out, _ = _cli(["leaderboard", "import", "--store", store, runs[0]], capsys)
    assert rc == 0 and "already held (no change)" in out
    rc, out, _ = _cli(["leaderboard", "show", "--store", store], capsys)
    assert rc == 0 and out.splitlines()[0].split()[3:9] == ["#1", "alpha", "#2", "gamma", "#3", "beta"]
    monkeypatch.setenv("HARNESS_STORE", store)
    for fmt, check in [("csv", lambda t: t.startswith("model,model_fingerprint,column")),
                       ("json", lambda t: json.loads(t)["rows"][2]["model_name"] == "beta"),
                       ("md", lambda t: t.startswith("| model |"))]:
        rc, out, _ = _cli(["leaderboard", "show", "--format", fmt], capsys)
        assert rc == 0 and check(out), fmt
    rc, out, _ = _cli(["leaderboard", "build", "--out", str(tmp_path / "site")], capsys)
    assert rc == 0 and "(3 model pages)" in out and (tmp_path / "site" / "index.html").is_file()


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_STORE", raising=False)
    rc, _, err = _cli(["leaderboard", "show"], capsys)
    assert rc == 2 and err.strip() == "error: name the results store: --store PATH_OR_URL (or set HARNESS_STORE)"
    rc, _, err = _cli(["leaderboard", "import", "--store", str(tmp_path / "s.sqlite"), str(tmp_path / "nope")], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "nope: no such run folder" in err


def test_sft_results_are_apart_and_never_averaged_with_zero_shot(tmp_path: Path) -> None:
    """A model's `--protocol sft` results (protocol sft+...) get their own columns, after the
    zero-/few-shot ones, and their own macro average; the zero-shot average ignores them."""
    with Store(tmp_path / "s.sqlite") as store:
        for model, zero, sft in [("a", [1, 0, 0, 0], [1, 1, 1, 0]), ("b", [1, 1, 0, 0], [1, 1, 1, 1])]:
            store.import_run(make_run(tmp_path / f"{model}-0shot", {
                "medqa": make_task(zero, fingerprint="medqa-0"),
                "pubmedqa": make_task([1, 1, 1, 1], fingerprint="pubmedqa-0")}, model=model))
            store.import_run(make_run(tmp_path / f"{model}-5shot", {
                "medqa": make_task(zero, fingerprint="medqa-5", n_shot=5)}, model=model))
            store.import_run(make_run(tmp_path / f"{model}-sft", {
                "medqa": make_task(sft, fingerprint="medqa-sft", protocol="sft+loglik")}, model=model))
        lb = leaderboard_from_store(store)
    assert [(c.task, c.protocol, c.n_shot) for c in lb.columns] == [
        ("medqa", "loglik", 0), ("medqa", "loglik", 5), ("pubmedqa", "loglik", 0), ("medqa", "sft+loglik", 0)]
    assert all(c.comparable for c in lb.columns)
    assert lb.average_metrics == ["accuracy", "accuracy (sft)"]
    rows = {r.model_name: r for r in lb.rows}
    for model, zero, sft in [("a", 0.25, 0.75), ("b", 0.5, 1.0)]:
        prompted, tuned = rows[model].averages["accuracy"], rows[model].averages["accuracy (sft)"]
        assert prompted.n_tasks == 3 and prompted.value == pytest.approx((zero + zero + 1.0) / 3)
        assert "sft" not in prompted.tag
        assert tuned.n_tasks == 1 and tuned.value == pytest.approx(sft) and tuned.tag == "sft+loglik · 0-shot"
    assert [r.model_name for r in lb.rows] == ["b", "a"]  # ranked by the zero-/few-shot average
    table = render(lb, "table")
    assert re.search(r"macro avg \(1 tasks\)\s+sft\+loglik · 0-shot\s+accuracy \(sft\)\s+1\.000", table)
    assert "fine-tuned on the task's own train split" in table
    macro = [r for r in csv.DictReader(io.StringIO(render(lb, "csv"))) if r["column"].startswith("macro_avg")]
    assert sorted((r["model"], r["column"], r["metric"], r["task"]) for r in macro) == [
        ("a", "macro_avg", "accuracy", "3 tasks"), ("a", "macro_avg_sft", "accuracy", "1 tasks"),
        ("b", "macro_avg", "accuracy", "3 tasks"), ("b", "macro_avg_sft", "accuracy", "1 tasks")]
    site = build_site(lb, tmp_path / "site")
    assert "avg accuracy (sft)" in site.index.read_text(encoding="utf-8")
