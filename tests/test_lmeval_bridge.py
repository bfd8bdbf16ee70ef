"""The lm-eval bridge (lm_eval:NAME tasks through our runner) and `harness export-lmeval`."""

import json
import os

import pytest

from harness.errors import HarnessError
from harness.run.config import RunConfig
from harness.run.lmeval_export import export_lmeval
from harness.run.runner import Runner
from tests.conftest import ScriptedBackend

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'lm-eval[hf]==0.4.13')")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
LM_LIMIT = 16  # both take the first 16 documents; lm-eval's own hf model is the slow side


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    tasks = export_lmeval(out, ["medqa", "pubmedqa", "mmlu_anatomy"], "bundled")
    return out, {t.task: t for t in tasks}


def run(tmp_path, name, backend, **kw):
    config = RunConfig(output=tmp_path / name, cache=None, data_source="bundled", **kw)
    return Runner(config, backend=backend).run()


@pytest.mark.parametrize("task", ["medqa", "pubmedqa", "mmlu_anatomy"])
def test_exported_task_through_the_bridge_sends_our_exact_requests(tmp_path, exported, task):
    folder, tasks = exported
    ours, bridged = ScriptedBackend(), ScriptedBackend()
    own = run(tmp_path, "own", ours, tasks=(task,))
    via = run(tmp_path, "via", bridged, tasks=(f"lm_eval:{tasks[task].lm_task}",), lmeval_include=folder)
    assert sorted(ours.loglik_calls, key=repr) == sorted(bridged.loglik_calls, key=repr)
    (own_res,) = own.tasks.values()
    (via_res,) = via.tasks.values()
    assert via_res.metrics["acc"]["value"] == pytest.approx(own_res.metrics["accuracy"]["value"])
    assert via_res.metrics["acc"]["n_scored"] == tasks[task].n_samples
    assert via_res.extra["lm_eval_version"] == "0.4.13" and via_res.extra["lm_eval_task_version"] == 1


def test_bridge_run_resumes_from_its_sample_log(tmp_path, exported):
    folder, tasks = exported
    name = f"lm_eval:{tasks['pubmedqa'].lm_task}"
    first = run(tmp_path, "r", ScriptedBackend(), tasks=(name,), lmeval_include=folder, limit=7)
    again = ScriptedBackend()
    second = run(tmp_path, "r", again, tasks=(name,), lmeval_include=folder, limit=7)
    assert again.loglik_calls == []
    assert first.tasks[f"{name}|lm_eval|0shot"].metrics == second.tasks[f"{name}|lm_eval|0shot"].metrics
    lines = [json.loads(x) for x in (tmp_path / "r/samples.jsonl").read_text().splitlines()]
    assert len(lines) == 7 and all("acc" in e["score"]["metadata"]["values"] for e in lines)


def test_unknown_lmeval_task_is_one_clear_error(tmp_path, exported):
    folder, _ = exported
    with pytest.raises(HarnessError, match="lm-eval knows no task 'medllm_nope'"):
        run(tmp_path, "x", ScriptedBackend(), tasks=("lm_eval:medllm_nope",), lmeval_include=folder)


@pytest.mark.slow
def test_lm_eval_itself_on_the_export_gives_our_accuracy(tmp_path, exported, default_model_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    folder, tasks = exported
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={default_model_dir},dtype=float32,device=cpu",
        tasks=[tasks["medqa"].lm_task, tasks["pubmedqa"].lm_task],
        task_manager=TaskManager(include_path=str(folder)), batch_size=8, limit=LM_LIMIT,
    )
    ours = run(tmp_path, "own", None, tasks=("medqa", "pubmedqa"), model=str(default_model_dir), limit=LM_LIMIT)
    for task in ("medqa", "pubmedqa"):
        lm_acc = results["results"][tasks[task].lm_task]["acc,none"]
        assert ours.tasks[f"{task}|loglik|0shot"].metrics["accuracy"]["value"] == pytest.approx(lm_acc), task
