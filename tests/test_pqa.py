"""Proactive questioning (PQA): the ask/advise rule (golden cases), the metrics on scripted doctors
with known values, the turn-judge option, and the BianQue reader (never bundled)."""

import json

import pytest

from harness.data.sources import load_bundled, tasks_dir
from harness.protocols.pqa import PQA_F1, ask_rule, bianque_turn, parse_judge
from harness.run.config import AuxModel, RunConfig
from harness.run.runner import Runner
from harness.types import Score
from tests.conftest import ROOT, ScriptedBackend

CASES = json.loads((ROOT / "tests/fixtures/pqa_ask_rule_cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["text"][:30])
def test_ask_rule_golden_cases(case):
    assert ask_rule(case["text"]).asks is case["asks"]


def run(tmp_path, reply, task="pqa_mts_dialog", judge=None, limit=20):
    aux = {"turn_judge": AuxModel(backend="scripted")} if judge else {}
    config = RunConfig(tasks=(task,), data_source="bundled", output=tmp_path / "run", cache=None, limit=limit,
                       aux_models=aux)
    backend = ScriptedBackend(reply)
    record = Runner(config, backend=backend, aux_backends={"turn_judge": judge} if judge else None).run()
    entries = [json.loads(x) for x in (tmp_path / "run/samples.jsonl").read_text().splitlines()]
    return record.tasks[f"{task}|pqa|0shot"], entries, backend


def metric(res, name):
    return res.metrics[name]["value"]


def reference_asks(task_file="mts_dialog_turn_test.jsonl", limit=20):
    return [ask_rule(str(s.target)).asks for s in load_bundled(task_file)[:limit]]


def test_a_doctor_that_never_asks(tmp_path):
    res, entries, _ = run(tmp_path, lambda req: "Take ibuprofen twice a day and rest.")
    ref = reference_asks()
    assert 0 < sum(ref) < len(ref)  # both labels occur in the bundled sample
    assert metric(res, "ask_rate") == 0 and metric(res, "pqa_recall") == 0 and metric(res, "pqa_f1") == 0
    assert metric(res, "pqa_precision") is None  # no asking turn: precision is undefined, not 0
    assert metric(res, "pqa_agreement") == pytest.approx(1 - sum(ref) / len(ref))
    assert metric(res, "reference_ask_rate") == pytest.approx(sum(ref) / len(ref))
    assert res.metrics["pqa_f1"]["details"]["fn"] == sum(ref) and res.extra["pqa_labels"] == "ask_rule"
    for e in entries:
        meta = e["score"]["metadata"]
        assert meta["references"] == [e["target"]] and meta["rule"]["model"]["asks"] is False


def test_a_doctor_that_always_asks(tmp_path):
    res, _, _ = run(tmp_path, lambda req: "I see. Do you have a fever?")
    ref = reference_asks()
    precision = sum(ref) / len(ref)
    assert metric(res, "ask_rate") == 1 and metric(res, "pqa_recall") == 1
    assert metric(res, "pqa_precision") == pytest.approx(precision)
    assert metric(res, "pqa_f1") == pytest.approx(2 * precision / (1 + precision))
    assert metric(res, "pqa_agreement") == pytest.approx(precision)
    low, high = res.metrics["pqa_f1"]["ci"]
    assert low <= metric(res, "pqa_f1") <= high and high <= 1


def test_chinese_task_asks_and_advises(tmp_path):
    res, _, backend = run(tmp_path, lambda req: "请问您发烧几天了？", task="pqa_cmtmedqa", limit=40)
    ref = reference_asks("pqa_cmtmedqa_test.jsonl", 40)
    assert metric(res, "pqa_recall") == 1 and metric(res, "pqa_precision") == pytest.approx(sum(ref) / 40)
    assert backend.generate_calls[0].messages[0].content.startswith("你是一名医生")
    assert all(r.messages[-1].role == "user" for r in backend.generate_calls)  # the doctor speaks next


def test_turn_judge_labels_both_turns(tmp_path):
    judge = ScriptedBackend(lambda req: "ASKING" if "fever" in req.messages[0].content else "ADVISING")
    res, entries, _ = run(tmp_path, lambda req: "Do you have a fever?", judge=judge, limit=6)
    assert len(judge.generate_calls) == 12  # the model's turn and the doctor's, per sample
    assert all("<turn>" in r.messages[0].content for r in judge.generate_calls)
    assert metric(res, "ask_rate") == 1 and res.extra["pqa_labels"] == "turn_judge"
    assert res.extra["aux_models"]["turn_judge"]["fingerprint"] == "scripted-v1"
    for e in entries:
        meta = e["score"]["metadata"]
        assert meta["values"]["reference_asks"] == float("fever" in e["target"])
        assert "rule" in meta and meta["judge"]["model"] == "ASKING"


def test_an_unclear_judge_verdict_is_unscored(tmp_path):
    judge = ScriptedBackend(lambda req: "ASKING or ADVISING, hard to say")
    res, _, _ = run(tmp_path, lambda req: "Do you smoke?", judge=judge, limit=3)
    assert res.metrics["pqa_agreement"]["n_unscored"] == 3 and metric(res, "pqa_f1") is None


@pytest.mark.parametrize(("text", "label"), [("ASKING", True), ("advising.", False), ("**ASKING**", True),
                                             ("ASKING ADVISING", None), ("no idea", None)])
def test_judge_parser(text, label):
    assert parse_judge(text) is label


def test_f1_metric_from_counts():
    def s(model, ref):
        return Score(float(model == ref), metadata={"values": {"model_asks": model, "reference_asks": ref}})

    scores = [s(1.0, 1.0)] * 3 + [s(1.0, 0.0)] + [s(0.0, 1.0)] * 2 + [s(0.0, 0.0)] * 4
    value = PQA_F1.aggregate(scores)
    assert value.value == pytest.approx(6 / 9) and value.details["tn"] == 4
    assert value.ci_low <= value.value <= value.ci_high


def test_bianque_reader_and_it_is_never_bundled(shared_data):
    import csv

    path = shared_data / "dialogue/bianque/cMedialog_example.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    samples = [bianque_turn(r, i, {}) for i, r in enumerate(rows)]
    assert len(samples) == 128
    for s, r in zip(samples, rows, strict=True):
        assert s.input[0].role == "user" and s.input[-1].role == "user" and s.target == r["target"].strip()
    shipped = "".join(p.read_text(encoding="utf-8") for p in (tasks_dir() / "samples").glob("*.jsonl"))
    assert not any(r["target"].strip()[:40] in shipped for r in rows if len(r["target"].strip()) > 20)
    with pytest.raises(ValueError, match="医生"):
        bianque_turn({"input": "病人：头疼", "target": "多喝水"}, 0, {})


def test_pqa_local_data(shared_data):
    from harness.data.sources import load_split
    from harness.run.catalog import load_catalog

    cat = load_catalog()
    sizes = {t: len(load_split(cat.task(t), "test", "local", shared_data))
             for t in ("pqa_mts_dialog", "pqa_cmtmedqa", "pqa_bianque")}
    assert sizes == {"pqa_mts_dialog": 164, "pqa_cmtmedqa": 1000, "pqa_bianque": 128}
    full = {s.id: s for s in load_split(cat.task("pqa_cmtmedqa"), "test", "local", shared_data)}
    assert all(full[s.id] == s for s in load_bundled("pqa_cmtmedqa_test.jsonl"))
