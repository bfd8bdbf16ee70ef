"""Results store: imports are idempotent and immutable, concurrent writers all land, generic
(judge) results share the store, errors name the file and the field."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from test_leaderboard_support import import_worker, make_run, make_task

from harness.errors import HarnessError
from leaderboard.store import GenericResult, Store, store_url


def _run(tmp_path: Path, name: str = "run_a", **kw: object) -> Path:
    tasks = {"medqa": make_task([1, 0, 1, 1], fingerprint="f-medqa"),
             "pubmedqa": make_task([0, 0, 1, None], fingerprint="f-pubmedqa")}
    return make_run(tmp_path / name, tasks, **kw)  # type: ignore[arg-type]


def test_import_stores_run_tasks_and_metrics(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with Store(tmp_path / "s.sqlite") as store:
        outcome = store.import_run(run)
        assert outcome.added and outcome.n_tasks == 2
        [stored] = store.runs()
        assert stored.run_path == str(run.resolve())
        results = {r.task_key: r for r in store.task_results()}
        assert set(results) == {"medqa|loglik|0shot", "pubmedqa|loglik|0shot"}
        m = results["pubmedqa|loglik|0shot"].metrics["accuracy"]
        assert (m.value, m.n_scored, m.n_unscored, m.ci_method) == (pytest.approx(1 / 3), 3, 1, "wilson")
        assert m.ci_low is not None and m.ci_low < 1 / 3 < m.ci_high  # type: ignore[operator]
        assert store.record(outcome.run_key).run_id == outcome.run_id
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reimport_is_a_noop(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with Store(tmp_path / "s.sqlite") as store:
        assert store.import_run(run).added
        assert not store.import_run(run / "run.json").added
        # the same numbers with a rewritten finished_at: still the same record
        data = json.loads((run / "run.json").read_text())
        data["finished_at"] = "2026-02-02T00:00:00+00:00"
        (run / "run.json").write_text(json.dumps(data))
        assert not store.import_run(run).added
        assert len(store.runs()) == 1 and len(store.task_results()) == 2


def test_changed_results_under_a_stored_key_are_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    with Store(tmp_path / "s.sqlite") as store:
        store.import_run(run)
        data = json.loads((run / "run.json").read_text())
        data["tasks"]["medqa|loglik|0shot"]["metrics"]["accuracy"]["value"] = 0.99
        (run / "run.json").write_text(json.dumps(data))
        with pytest.raises(HarnessError, match="already stored with different results"):
            store.import_run(run)


def test_unfinished_and_broken_runs_are_refused_with_the_file(tmp_path: Path) -> None:
    running = _run(tmp_path, "running", status="running")
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(HarnessError, match=r"running/run.json: run status is 'running'"):
            store.import_run(running)
        bad = _run(tmp_path, "bad")
        data = json.loads((bad / "run.json").read_text())
        del data["model"]["fingerprint"]
        (bad / "run.json").write_text(json.dumps(data))
        with pytest.raises(HarnessError, match=r"bad/run.json: field model.fingerprint"):
            store.import_run(bad)
        with pytest.raises(HarnessError, match="no such run folder"):
            store.import_path(tmp_path / "missing")


def test_concurrent_imports_all_land(tmp_path: Path) -> None:
    """Four processes import at the same moment into a store none has created yet: every run
    lands once; two of them import the same run, and exactly one of those adds it."""
    runs = [_run(tmp_path, f"run_{i}", model=f"m{i}") for i in range(3)]
    jobs = [str(runs[0]), str(runs[1]), str(runs[2]), str(runs[2])]
    store = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [ctx.Process(target=import_worker, args=(store, job, barrier, out)) for job in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    outcomes = [out.get(timeout=10) for _ in jobs]
    added = [run for run, was_added in outcomes if was_added]
    assert sorted(added) == sorted(str(r) for r in runs)
    with Store(store) as s:
        assert sorted(r.model_name for r in s.runs()) == ["m0", "m1", "m2"]
        assert len(s.task_results()) == 6


def _judge(dim: str, value: float, **kw: object) -> GenericResult:
    fields: dict[str, object] = dict(kind="judge_pointwise", name=dim, model_name="m", model_fingerprint="w-m",
                                     fingerprint="judge-1", value=value, ci=(value - 0.5, value + 0.5), n=20)
    fields.update(kw)
    return GenericResult(**fields)  # type: ignore[arg-type]


def test_generic_results_are_immutable_and_idempotent(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        assert store.add_results([_judge("safe", 4.0), _judge("fluent", 3.5)]) == 2
        assert store.add_results([_judge("safe", 4.0)]) == 0
        with pytest.raises(HarnessError, match="already stored with a different value"):
            store.add_results([_judge("safe", 2.0)])
        # another judge (fingerprint) is another result, not a conflict
        assert store.add_results([_judge("safe", 2.0, fingerprint="judge-2")]) == 1
        got = {(r.name, r.fingerprint): r.value for r in store.generic_results()}
        assert got == {("safe", "judge-1"): 4.0, ("fluent", "judge-1"): 3.5, ("safe", "judge-2"): 2.0}


def test_results_file_import_names_the_bad_field(tmp_path: Path) -> None:
    good = tmp_path / "judge.json"
    good.write_text(json.dumps({"results": [_judge("safe", 4.0).model_dump(mode="json")]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"results": [{"kind": "judge_pointwise", "name": "safe"}]}))
    with Store(tmp_path / "s.sqlite") as store:
        assert store.import_path(good) == 1
        assert store.generic_results()[0].source == str(good.resolve())
        with pytest.raises(HarnessError, match=r"bad.json: field results.0.model_name"):
            store.import_path(bad)


def test_store_url_accepts_paths_and_urls(tmp_path: Path) -> None:
    assert store_url(tmp_path / "a" / "b.sqlite") == f"sqlite:///{tmp_path / 'a' / 'b.sqlite'}"
    assert (tmp_path / "a").is_dir()
    assert store_url("postgresql://u@db/results") == "postgresql://u@db/results"
    with pytest.raises(HarnessError, match="store nosuchdialect://"):
        Store("nosuchdialect://x")
