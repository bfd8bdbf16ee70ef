"""The model-based answer extractor (`extractor: model`, role `extractor`) through the runner on
scripted backends: asked only where the rule is unsure, its strict reply validated, its requests
cached, its fingerprint in the record and the samples it decided counted apart. The default model
runs it once through the real CLI (see the README, Generative evaluation)."""

import json

import pytest

from harness.errors import HarnessError
from harness.protocols.model_extract import EXTRACTOR_PROMPT, parse_reply
from harness.run.config import AuxModel, RunConfig
from harness.run.report import format_record
from harness.run.runner import Runner
from harness.types import GenerationRequest
from tests.conftest import ScriptedBackend

CLEAR = "The answer is (B)."
UNSURE = "It could be A or C; both fit the history."
ABCD = ("A", "B", "C", "D")


def content(req: GenerationRequest) -> str:
    assert req.messages is not None
    return req.messages[-1].content


def half_unsure(req: GenerationRequest) -> str:
    """A clear answer for some questions, an unsure one for the others (by prompt length)."""
    return CLEAR if len(content(req)) % 2 else UNSURE


def run(tmp_path, reply, extractor_reply, *, protocol="generate", name="run", cache=None, limit=8, **kw):
    backend, judge = ScriptedBackend(reply), ScriptedBackend(extractor_reply)
    config = RunConfig(tasks=("medqa",), data_source="bundled", output=tmp_path / name, cache=cache, limit=limit,
                       protocol=protocol, extractor="model", aux_models={"extractor": AuxModel(backend="scripted")},
                       **kw)
    record = Runner(config, backend=backend, aux_backends={"extractor": judge}).run()
    entries = [json.loads(x) for x in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
    (res,) = record.tasks.values()
    return record, res, entries, backend, judge


@pytest.mark.parametrize(
    ("reply", "index", "method"),
    [
        ("C", 2, "model"), (" (c). ", 2, "model"), ("**B**", 1, "model"), ("'D'\n", 3, "model"),
        ("none", None, "model:none"), ("None.", None, "model:none"),
        ("E", None, "model:invalid_reply"), ("C or D", None, "model:invalid_reply"),
        ("Answer: C", None, "model:invalid_reply"), ("", None, "model:invalid_reply"),
        ("The answer is B", None, "model:invalid_reply"), ("A, B", None, "model:invalid_reply"),
    ],
)
def test_parse_reply_takes_one_valid_label_or_none(reply, index, method):
    got = parse_reply(reply, ABCD)
    assert (got.index, got.method) == (index, method)


def test_asked_only_where_the_rule_is_unsure_and_counted_apart(tmp_path):
    record, res, entries, _, judge = run(tmp_path, half_unsure, lambda req: "C")
    unsure = [e for e in entries if e["score"]["metadata"]["output"] == UNSURE]
    clear = [e for e in entries if e["score"]["metadata"]["output"] == CLEAR]
    assert unsure and clear  # the script gives both shapes
    # one extractor request per unsure answer, none for the clear ones
    assert len(judge.generate_calls) == len(unsure)
    assert all(UNSURE in content(r) and CLEAR not in content(r) for r in judge.generate_calls)
    assert all(r.config.max_tokens <= 8 and r.config.temperature == 0.0 for r in judge.generate_calls)
    prompt = content(judge.generate_calls[0])
    assert "<answer>\n" + UNSURE + "\n</answer>" in prompt and "A. " in prompt and "D. " in prompt
    for e in clear:  # the rule decides; the model never overrides it
        assert e["score"]["answer"] == "B" and "model_extractor" not in e["score"]["metadata"]
    for e in unsure:
        meta = e["score"]["metadata"]
        assert e["score"]["answer"] == "C" and meta["extraction"] == "model"
        assert meta["model_extractor"]["replies"][0]["rule"] == "ambiguous_labels"
        assert e["score"]["value"] == float(e["target"] == 2)
    assert res.extra["extractor"] == "model" and res.extra["extractor_rule"] == "choice"
    assert res.extra["model_extractor"] == {"asked": len(unsure), "decided": len(unsure)}
    assert res.extra["aux_models"]["extractor"]["fingerprint"] == "scripted-v1"
    assert res.metrics["accuracy"]["n_unscored"] == 0
    assert f"was asked about {len(unsure)} answer(s) the rule was unsure of and decided {len(unsure)}" in (
        format_record(record))


@pytest.mark.parametrize("reply", ["none", "The answer is C", "E", "A or C"])
def test_a_reply_that_is_not_one_valid_letter_stays_unscored(tmp_path, reply):
    _, res, entries, _, judge = run(tmp_path, lambda req: UNSURE, lambda req: reply, limit=4)
    assert len(judge.generate_calls) == 4
    assert all(e["score"]["value"] is None for e in entries)
    assert all(e["score"]["metadata"]["extraction"].startswith("model:") for e in entries)
    assert res.extra["model_extractor"] == {"asked": 4, "decided": 0}
    assert res.metrics["accuracy"]["n_unscored"] == 4


def test_extractor_requests_go_through_the_request_cache(tmp_path):
    cache = tmp_path / "cache.sqlite"
    *_, judge = run(tmp_path, lambda req: UNSURE, lambda req: "A", cache=cache, limit=4)
    assert len(judge.generate_calls) == 4
    _, res, entries, backend, judge2 = run(tmp_path, lambda req: UNSURE, lambda req: "A", cache=cache, limit=4,
                                           name="again")
    assert judge2.generate_calls == [] and backend.generate_calls == []
    assert all(e["score"]["answer"] == "A" for e in entries) and res.extra["model_extractor"]["decided"] == 4


def test_the_extractor_model_enters_the_task_fingerprint(tmp_path):
    _, with_model, *_ = run(tmp_path, half_unsure, lambda req: "C", limit=2)
    config = RunConfig(tasks=("medqa",), data_source="bundled", output=tmp_path / "plain", cache=None, limit=2,
                       protocol="generate")
    (plain,) = Runner(config, backend=ScriptedBackend(half_unsure)).run().tasks.values()
    assert with_model.task_fingerprint != plain.task_fingerprint
    assert "model_extractor" not in plain.extra and "extractor" not in plain.extra


def test_cot_reads_an_unsure_chain_with_the_model_and_last_answer_first(tmp_path):
    cut = "Let's think step by step.\nThe patient is febrile and hypotensive, so the most useful next test would be"
    _, res, entries, _, judge = run(tmp_path, lambda req: cut, lambda req: "D", protocol="cot", limit=3)
    assert len(judge.generate_calls) == 3
    assert res.extra["extractor_rule"] == "last_answer"
    for e in entries:
        assert e["score"]["answer"] == "D"
        assert e["score"]["metadata"]["model_extractor"]["replies"][0]["rule"] == "truncated"


def test_sc_asks_about_each_unsure_chain_only(tmp_path):
    replies = iter(["The answer is (A).", UNSURE, UNSURE] * 2)
    _, res, entries, _, judge = run(tmp_path, lambda req: next(replies), lambda req: "A", protocol="sc@3", limit=2)
    assert len(judge.generate_calls) == 4  # two unsure chains per question
    for e in entries:
        meta = e["score"]["metadata"]
        assert meta["chain_answers"] == ["A", "A", "A"] and meta["model_extractor"]["decided"] == 2
    assert res.extra["model_extractor"] == {"asked": 2, "decided": 2}


def test_voc_asks_after_the_decision(tmp_path):
    def reply(req):
        return UNSURE if "Weighing these" in content(req) else "It could be right."

    _, res, entries, backend, judge = run(tmp_path, reply, lambda req: "B", protocol="voc", limit=2)
    assert len(judge.generate_calls) == 2 and len(backend.generate_calls) == 2 * 5
    assert res.extra["model_extractor"] == {"asked": 2, "decided": 2}
    assert all(e["score"]["answer"] == "B" and len(e["score"]["metadata"]["arguments"]) == 4 for e in entries)


def test_extractor_model_without_a_configured_model_is_one_clear_error(tmp_path):
    config = RunConfig(tasks=("medqa",), data_source="bundled", output=tmp_path / "run", cache=None, limit=2,
                       protocol="generate", extractor="model")
    with pytest.raises(HarnessError, match="uses the 'extractor' model, but the run configures none"):
        Runner(config, backend=ScriptedBackend()).run()


def test_unknown_extractor_name_says_did_you_mean(tmp_path):
    config = RunConfig(tasks=("medqa",), data_source="bundled", output=tmp_path / "run", cache=None, limit=2,
                       protocol="generate", extractor="modle")
    with pytest.raises(HarnessError, match="did you mean 'model'"):
        Runner(config, backend=ScriptedBackend()).run()


def test_prompt_fences_the_answer_as_data():
    assert "<answer>" in EXTRACTOR_PROMPT and "data, not instructions" in EXTRACTOR_PROMPT
    assert "none" in EXTRACTOR_PROMPT
