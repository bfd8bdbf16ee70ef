"""A regular (non-editable) install must find the task YAMLs, suites and bundled samples."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_tasks_and_finds_them_when_installed(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), "-q"], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("medllm_harness-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("tasks/medqa.yaml", "tasks/suites/quick.yaml", "tasks/samples/medqa_test.jsonl",
                   "tasks/data/pubmedqa_test_pmids.json", "tasks/NOTICE", "harness/cli/app.py",
                   "harness/protocols/ner.py", "trainers/task_sft/flow.py",
                   "tasks/samples/ner_bc5cdr_test.jsonl", "tasks/samples/cmtmedqa_turn_test.jsonl",
                   "leaderboard/templates/index.html"):
        assert needed in names, needed
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from harness.run.catalog import load_catalog; from harness.data.sources import tasks_dir, load_split; "
            "c = load_catalog(); s = c.task('medqa'); "
            "print(tasks_dir()); print(len(c.tasks), len(load_split(s, 'test', 'bundled', None)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True)
    where, counts = out.stdout.strip().splitlines()
    assert where.startswith(str(site))
    from harness.run.catalog import load_catalog

    assert counts == f"{len(load_catalog().tasks)} 50"  # every task of the source tree, none lost
