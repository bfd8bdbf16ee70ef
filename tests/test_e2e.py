"""End to end on the real default model: the quick suite through the CLI, and resume after a
SIGKILL part-way through a run."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from harness.run.records import read_record


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=900, **kw)


def samples(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_quick_suite_limited_then_show(tmp_path):
    out = tmp_path / "quick"
    proc = run_cli("run", "--suite", "quick", "--limit", "6", "--output", str(out), "--no-cache")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "medqa" in proc.stdout and "value [95% CI]" in proc.stdout
    assert "sample/s" in proc.stderr  # progress bars
    record = read_record(out)
    assert record.status == "finished" and len(record.tasks) == 9
    assert record.model.name == "default" and len(record.model.fingerprint) >= 64
    for res in record.tasks.values():
        acc = res.metrics["accuracy"]
        assert acc["n_scored"] + acc["n_unscored"] == 6
        assert 0.0 <= acc["value"] <= 1.0 and res.data_source == "bundled"
    assert record.environment["torch"] and record.config["seed"] == 1234
    show = run_cli("show", str(out))
    assert show.returncode == 0 and show.stdout.splitlines()[0].startswith(f"run {record.run_id}")


@pytest.mark.slow
def test_sigkill_then_resume_recomputes_nothing(tmp_path):
    args = ["run", "--tasks", "medqa,medmcqa", "--data-source", "bundled", "--limit", "24",
            "--batch-size", "2", "--quiet"]
    out, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    cmd = [sys.executable, "-m", "harness", *args, "--output", str(out), "--cache", str(cache)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "samples.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 16:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = samples(log)
    assert 16 <= len(before) < 48, "the kill must land part-way"
    with sqlite3.connect(cache) as db:
        cached_before = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert read_record(out).status == "running"

    resumed = run_cli(*args, "--output", str(out), "--cache", str(cache))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    record = read_record(out)
    total_requests = 24 * 4 + 24 * 4
    # Only requests not cached before the kill were computed after it...
    assert record.cache["misses"] == total_requests - cached_before
    # ...and every sample logged before the kill kept its line and was not logged again.
    after = samples(log)
    assert after[: len(before)] == before
    keys = [(e["task_key"], e["sample_id"]) for e in after]
    assert len(keys) == len(set(keys)) == 48

    clean = run_cli(*args, "--output", str(tmp_path / "clean"), "--no-cache")
    assert clean.returncode == 0, clean.stderr[-2000:]
    reference = read_record(tmp_path / "clean")
    for key, res in reference.tasks.items():
        got = record.tasks[key].model_dump()
        want = res.model_dump()
        got.pop("duration_s"), want.pop("duration_s")
        assert got == want
    clean_log = samples(tmp_path / "clean/samples.jsonl")
    ref_preds = {(e["task_key"], e["sample_id"]): e["score"]["answer"] for e in clean_log}
    assert {(e["task_key"], e["sample_id"]): e["score"]["answer"] for e in after} == ref_preds
