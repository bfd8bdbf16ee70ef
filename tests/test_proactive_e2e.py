"""The interactive consultation and PQA end to end on the real default model (bundled samples)."""

import json

import pytest

from harness.run.config import RunConfig
from harness.run.runner import Runner
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def small_tasks(tmp_path):
    """Copies of the shipped tasks with short budgets, so that CI stays fast (same code paths)."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    text = (ROOT / "tasks/interactive.yaml").read_text().replace("task: mediq", "task: small_mediq")
    text = text.replace("max_tokens: 64, max_turns: 5", "max_tokens: 20, max_turns: 2")
    (folder / "interactive.yaml").write_text(text)
    text = (ROOT / "tasks/pqa.yaml").read_text().replace("task: pqa_", "task: small_pqa_")
    (folder / "pqa.yaml").write_text(text.replace("max_tokens: 96", "max_tokens: 20"))
    return folder


def test_interactive_and_pqa_on_the_real_model(tmp_path, hf_backend):
    out = tmp_path / "run"
    config = RunConfig(tasks=("small_mediq", "small_pqa_mts_dialog"), data_source="bundled", limit=2, output=out,
                       cache=None, task_dirs=(small_tasks(tmp_path),))
    record = Runner(config, backend=hf_backend).run()
    mediq, pqa = record.tasks["small_mediq|interactive|0shot"], record.tasks["small_pqa_mts_dialog|pqa|0shot"]
    assert mediq.extra["patient"]["kind"] == "retrieval" and mediq.extra["max_turns"] == 2
    for res in (mediq, pqa):
        for name, m in res.metrics.items():
            if m["value"] is not None:
                assert m["ci"][0] <= m["value"] <= m["ci"][1], name
    assert mediq.metrics["accuracy_full_case"]["n_scored"] + mediq.metrics["accuracy_full_case"]["n_unscored"] == 2
    entries = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    for e in entries:
        meta = e["score"]["metadata"]
        if e["task_key"].startswith("small_mediq"):
            conv = meta["conversation"]
            assert conv[0]["role"] == "doctor" and conv[-1]["role"] == "doctor" and conv[-1]["text"] == meta["output"]
            assert 1 <= meta["values"]["doctor_turns"] <= 3
        else:
            assert meta["output"].strip() and isinstance(meta["rule"]["model"]["asks"], bool)
    # the rerun resumes: every sample is already scored, nothing is generated again
    calls = []
    hf_generate = hf_backend.generate
    try:
        hf_backend.generate = lambda reqs: calls.append(reqs) or hf_generate(reqs)
        again = Runner(config, backend=hf_backend).run()
    finally:
        hf_backend.generate = hf_generate
    assert not calls and again.tasks["small_mediq|interactive|0shot"].metrics == mediq.metrics
