"""Generative tasks and reasoning protocols end to end on the real default model (small
generation budgets so that CI stays fast; the shipped tasks use the same code paths)."""

import json

import pytest

from harness.run.config import RunConfig
from harness.run.runner import Runner
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

TEXT_METRICS = ["rougeL", "rouge1", "rouge2", "bleu", "gleu", "distinct1", "distinct2"]


def small_tasks(tmp_path):
    """Copies of medqa and mts_dialog_turn with short generation budgets."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    medqa = (ROOT / "tasks/medqa.yaml").read_text()
    medqa = medqa.replace("task: medqa\n", "task: medqa_small\n")
    for line in ("cot: {max_tokens: 512}", "sc: {max_tokens: 512, k: 5, temperature: 0.7}", "voc: {max_tokens: 192}"):
        medqa = medqa.replace(line, line.replace("512", "48").replace("192", "24"))
    (folder / "medqa_small.yaml").write_text(medqa)
    turns = (ROOT / "tasks/dialogue_turns.yaml").read_text()
    turns = turns.replace("task: ", "task: small_").replace("max_tokens: 128", "max_tokens: 24")
    turns = turns.replace("max_tokens: 384", "max_tokens: 24").replace("max_tokens: 64", "max_tokens: 24")
    (folder / "turns_small.yaml").write_text(turns)
    return folder


def entries(out):
    return [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]


def test_dialogue_turns_score_every_metric_with_ci(tmp_path, hf_backend):
    out = tmp_path / "run"
    config = RunConfig(tasks=("small_mts_dialog_turn", "small_cmtmedqa_turn"), data_source="bundled",
                       limit=2, output=out, cache=None, task_dirs=(small_tasks(tmp_path),))
    record = Runner(config, backend=hf_backend).run()
    en = record.tasks["small_mts_dialog_turn|generate_text|0shot"]
    zh = record.tasks["small_cmtmedqa_turn|generate_text|0shot"]
    assert zh.language == "zh" and en.language == "en"
    assert set(en.metrics) == {*TEXT_METRICS, "bertscore_f1"} and set(zh.metrics) == set(TEXT_METRICS)
    for res in (en, zh):
        for name, m in res.metrics.items():
            assert m["n_scored"] == 2 and m["n_unscored"] == 0, name
            assert m["ci"][0] <= m["value"] <= m["ci"][1], name
    assert "all-MiniLM-L6-v2" in json.dumps(en.metrics["bertscore_f1"]["details"])
    assert en.metrics["bertscore_f1"]["details"]["num_layers"] == 6
    assert "zh" in json.dumps(zh.metrics["bleu"]["details"])  # sacrebleu's zh tokenizer
    for e in entries(out):
        meta = e["score"]["metadata"]
        assert meta["output"].strip() and meta["references"] == [e["target"]]
        assert 0.0 <= e["score"]["value"] <= 1.0


def test_reasoning_protocols_on_the_real_model(tmp_path, hf_backend):
    folder = small_tasks(tmp_path)
    for protocol in ("cot", "sc@2", "voc"):
        out = tmp_path / protocol
        config = RunConfig(tasks=("medqa_small",), protocol=protocol, data_source="bundled", limit=1,
                           output=out, cache=None, task_dirs=(folder,))
        record = Runner(config, backend=hf_backend).run()
        (res,) = record.tasks.values()
        acc = res.metrics["accuracy"]
        assert res.protocol == protocol and acc["n_scored"] + acc["n_unscored"] == 1
        for e in entries(out):
            meta = e["score"]["metadata"]
            assert "extraction" in meta or "chain_extraction" in meta
            if protocol == "sc@2":
                assert len(meta["outputs"]) == 2 and sum(meta["votes"].values()) <= 2
            if protocol == "voc":
                assert len(meta["arguments"]) == 4 and meta["output"]
