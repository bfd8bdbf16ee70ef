"""Bad input gives one clear error line and a non-zero exit, never a traceback."""

import json
import subprocess
import sys

import pytest


def harness(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for frag in fragments:
        assert frag in err, err


def test_tasks_lists_tasks_and_suites():
    proc = harness("tasks")
    assert proc.returncode == 0
    assert "medqa" in proc.stdout and "quick" in proc.stdout and "mmlu_professional_medicine" in proc.stdout


def test_malformed_task_yaml(tmp_path):
    (tmp_path / "broken.yaml").write_text("task: broken\nversion: [1,\n")
    proc = harness("tasks", "--include-tasks", str(tmp_path))
    assert_one_line_error(proc, "broken.yaml", "line", "invalid YAML")


def test_unknown_task():
    proc = harness("run", "--tasks", "medqaa", "--no-cache")
    assert_one_line_error(proc, "unknown task 'medqaa'", "did you mean 'medqa'")


def test_missing_data_file(tmp_path):
    proc = harness("run", "--tasks", "medqa", "--data-dir", str(tmp_path), "--no-cache",
                   "--output", str(tmp_path / "run"))
    assert_one_line_error(proc, "data file not found", "us_4options_test.jsonl")


def test_unknown_model(tmp_path):
    proc = harness("run", "--tasks", "medqa", "--data-source", "bundled", "--model", str(tmp_path / "nope"),
                   "--no-cache", "--output", str(tmp_path / "run"), "--limit", "2")
    assert_one_line_error(proc, "model folder not found")
    proc = harness("run", "--tasks", "medqa", "--data-source", "bundled", "--model", "nobody/no-such-model",
                   "--no-cache", "--output", str(tmp_path / "run2"), "--limit", "2")
    assert_one_line_error(proc, "nobody/no-such-model")


def test_unknown_backend_and_protocol(tmp_path):
    proc = harness("run", "--tasks", "medqa", "--backend", "hff", "--data-source", "bundled", "--no-cache",
                   "--output", str(tmp_path / "r"))
    assert_one_line_error(proc, "unknown backend 'hff'", "did you mean 'hf'")
    proc = harness("run", "--tasks", "pubmedqa", "--protocol", "loglik_text", "--data-source", "bundled",
                   "--no-cache", "--output", str(tmp_path / "r2"))
    assert_one_line_error(proc, "task 'pubmedqa' has no protocol 'loglik_text'")


def test_record_missing_a_field(tmp_path):
    from harness.run.records import SCHEMA_VERSION

    (tmp_path / "run.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "run_id": "x"}))
    proc = harness("show", str(tmp_path))
    assert_one_line_error(proc, "run.json", "field status")


def test_show_nonexistent_run(tmp_path):
    assert_one_line_error(harness("show", str(tmp_path / "none")), "no run record")


@pytest.mark.parametrize("bad", ["--batch-size=0", "--limit=0"])
def test_invalid_option_values(tmp_path, bad):
    proc = harness("run", "--tasks", "medqa", bad, "--no-cache", "--output", str(tmp_path / "r"))
    assert_one_line_error(proc, "invalid option")


@pytest.mark.parametrize("shard", ["2/2", "a/3", "1-3"])
def test_invalid_shard(tmp_path, shard):
    proc = harness("run", "--tasks", "medqa", "--shard", shard, "--no-cache", "--output", str(tmp_path / "r"))
    assert_one_line_error(proc, "invalid option shard")


def test_merge_of_a_non_shard_run_is_refused(tmp_path):
    proc = harness("merge", str(tmp_path / "nope"), "--output", str(tmp_path / "m"))
    assert_one_line_error(proc, "no run record")
