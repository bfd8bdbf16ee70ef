from pathlib import Path

import pytest

from harness.data.spec import load_task_file
from harness.errors import ConfigError, HarnessError
from harness.run.catalog import load_catalog

GOOD = """
task: mytask
version: 1
format: medqa
eval_split: test
splits:
  test:
    local: {path: x.jsonl, reader: jsonl, record: medqa_options}
  dev:
    local: {path: y.jsonl, reader: jsonl, record: medqa_options}
fewshot: {split: dev}
protocols: {loglik: {}}
default_protocol: loglik
metrics: [accuracy]
"""


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_task_loads(tmp_path):
    (spec,) = load_task_file(write(tmp_path, GOOD))
    assert spec.task == "mytask" and spec.fewshot.split == "dev"


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "task: x\nversion: [1,\n")
    with pytest.raises(ConfigError) as err:
        load_task_file(path)
    assert str(path) in str(err.value) and "line" in str(err.value)


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, GOOD + "temperature: 0.3\n")
    with pytest.raises(ConfigError, match=r"t.yaml: task 'mytask': temperature: Extra inputs"):
        load_task_file(path)


def test_bad_value_is_quoted(tmp_path):
    path = write(tmp_path, GOOD.replace("version: 1", "version: one"))
    with pytest.raises(ConfigError, match=r"version: .*\(got 'one'\)"):
        load_task_file(path)


def test_fewshot_from_eval_split_is_refused(tmp_path):
    path = write(tmp_path, GOOD.replace("fewshot: {split: dev}", "fewshot: {split: test}"))
    with pytest.raises(ConfigError, match="must not come from the eval split"):
        load_task_file(path)


def test_yaml_cannot_execute_code(tmp_path):
    path = write(tmp_path, GOOD.replace("format: medqa", "format: !function evil.run"))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_task_file(path)


def test_unknown_registered_name_is_caught_at_load(tmp_path):
    write(tmp_path, GOOD.replace("format: medqa", "format: medqaa"))
    with pytest.raises(ConfigError, match=r"format: unknown prompt format 'medqaa'; did you mean 'medqa'"):
        load_catalog([tmp_path])


def test_family_defaults_merge(tmp_path):
    text = """
family: f
defaults:
  version: 2
  format: medqa
  eval_split: test
  protocols: {loglik: {}}
  default_protocol: loglik
  metrics: [accuracy]
tasks:
  - task: a
    splits: {test: {bundled: a.jsonl}}
  - task: b
    version: 3
    splits: {test: {bundled: b.jsonl}}
"""
    a, b = load_task_file(write(tmp_path, text))
    assert (a.task, a.version, b.version) == ("a", 2, 3)


def test_bundled_catalog_is_valid():
    cat = load_catalog()
    assert {"medqa", "medmcqa", "pubmedqa", "mmlu_anatomy"} <= set(cat.tasks)
    assert {"quick", "full", "mcqa"} <= set(cat.suites)
    with pytest.raises(HarnessError, match="did you mean 'medqa'"):
        cat.task("medqa4")
