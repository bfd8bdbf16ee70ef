"""End to end on the real default model: `harness run --store` lands the run in the store,
`leaderboard show/build` rank it, and `compare` refuses runs whose task fingerprints differ
(here: another --limit, so other prompts) and passes a run compared with itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.run.records import read_record


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_run_store_show_build_compare(tmp_path: Path) -> None:
    store = str(tmp_path / "results.sqlite")
    a, b = tmp_path / "a", tmp_path / "b"
    for out, limit in [(a, "4"), (b, "5")]:
        proc = run_cli("run", "--tasks", "medqa,pubmedqa", "--data-source", "bundled", "--limit", limit,
                       "--output", str(out), "--quiet", "--no-cache", "--store", store)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"store: added run {read_record(out).run_id}" in proc.stdout

    show = run_cli("leaderboard", "show", "--store", store)
    assert show.returncode == 0, show.stderr
    lines = show.stdout.splitlines()
    assert lines[0].split()[:5] == ["task", "protocol", "metric", "#1", "default"]
    assert lines[2].startswith("macro avg (2 tasks)")  # the later run only: 2 tasks, not 4
    assert sum(line.startswith(("medqa ", "pubmedqa ")) for line in lines) == 2

    site = run_cli("leaderboard", "build", "--store", store, "--out", str(tmp_path / "site"))
    assert site.returncode == 0 and "(1 model pages)" in site.stdout
    page = next((tmp_path / "site" / "models").glob("default-*.html")).read_text()
    assert page.count('class="sample"') == 6 and "Question:" in page  # 3 real samples per task

    same = run_cli("compare", str(b), str(b))
    assert same.returncode == 0 and "no regression" in same.stdout
    refused = run_cli("compare", str(a), str(b))
    assert refused.returncode == 2
    assert "task_fingerprint" in refused.stderr and "not comparable" in refused.stderr
