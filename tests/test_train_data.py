"""Training data processing: PII masking, quality filter, de-duplication, leakage check,
formatting (the response-only mask on the real tokenizer), readers, recipes and configs.
No training here (see test_train_stages.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="needs the `train` extra: pip install -e '.[train]'")

from harness.errors import ConfigError, HarnessError
from harness.types import Message, Sample
from trainers.data.config import DataSourceSpec, DedupSpec, FilterSpec, LeakageSpec, QualitySpec
from trainers.data.dedup import duplicates
from trainers.data.formatting import (
    IGNORE_INDEX,
    chat_features,
    chat_to_text,
    pack_texts,
    preference_row,
    unpaired_rows,
)
from trainers.data.leakage import LeakageIndex, build_index
from trainers.data.pii import mask_pii
from trainers.data.pipeline import check_leakage, prepare_records
from trainers.data.quality import quality_reason
from trainers.data.records import ChatRecord, PreferenceRecord, TextRecord
from trainers.data.sources import ReadContext, dialogue_messages, read_source

FIXTURES = Path(__file__).parent / "fixtures"
CASES = json.loads((FIXTURES / "train_data_cases.json").read_text(encoding="utf-8"))


# --- PII -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES["pii"], ids=lambda c: c["text"][:30])
def test_pii_golden(case: dict[str, Any]) -> None:
    masked, counts = mask_pii(case["text"])
    assert masked == case["masked"]
    assert dict(counts) == case["counts"]


def test_pii_planted_record_is_masked_and_never_reported(tmp_path: Path) -> None:
    planted = ("Discharge summary. Patient: Jane Roe, DOB: 02/11/1958, MRN: 44710023. Seen by Dr. Alan Grant on "
               "March 3, 2020 for pneumonia and treated with antibiotics. Phone (617) 555-0199, jroe@mail.com, "
               "17 Elm Street, Salem, MA 01970.")
    path = tmp_path / "notes.jsonl"
    path.write_text(json.dumps({"doc_id": "n1", "text": planted}) + "\n", encoding="utf-8")
    filters = FilterSpec(quality=None, dedup=None, leakage=LeakageSpec(enabled=False))
    records, report = prepare_records("cp", [DataSourceSpec(reader="jsonl_text", path=str(path))], filters, None)
    assert len(records) == 1 and isinstance(records[0], TextRecord)
    text = records[0].text
    for original in ("Jane Roe", "02/11/1958", "44710023", "Alan Grant", "March 3, 2020", "555-0199",
                     "jroe@mail.com", "17 Elm Street"):
        assert original not in text
    assert "treated with antibiotics" in text and "Dr. [NAME]" in text
    assert report.pii == {"masked": {"NAME": 2, "DATE": 2, "RECORD_ID": 1, "PHONE": 1, "EMAIL": 1, "ADDRESS": 1},
                          "records_changed": 1}
    dumped = json.dumps(report.to_json())
    assert "Roe" not in dumped and "44710023" not in dumped


# --- quality ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES["quality"], ids=lambda c: c["text"][:30])
def test_quality_golden(case: dict[str, Any]) -> None:
    assert quality_reason(case["text"], QualitySpec()) == case["reason"]


def test_quality_thresholds_are_settings() -> None:
    text = "Gout is an inflammatory arthritis caused by uric acid crystals in the joints."
    assert quality_reason(text, QualitySpec()) is None
    assert quality_reason(text, QualitySpec(min_terms=10)) == "few_medical_terms"
    assert quality_reason(text, QualitySpec(min_density=0.9)) == "low_medical_density"
    assert quality_reason(text, QualitySpec(max_chars=20)) == "too_long"


# --- de-duplication ----------------------------------------------------------------------------

def test_exact_and_near_duplicates() -> None:
    base = ("Metformin is the first-line drug for type 2 diabetes mellitus. It lowers hepatic glucose output, "
            "improves insulin sensitivity, rarely causes hypoglycaemia and may cause lactic acidosis in patients "
            "with renal failure; vitamin B12 deficiency can develop during long-term use.")
    texts = [
        base,
        base.upper().replace(".", " !"),  # same normalised text
        base.replace("first-line", "preferred initial"),  # a near duplicate
        "Warfarin inhibits vitamin K epoxide reductase; its effect is monitored with the INR in anticoagulated "
        "patients, and many drugs and foods interact with it.",
    ]
    dropped = duplicates(texts, DedupSpec(threshold=0.7))
    assert dropped == {1: ("exact", 0), 2: ("near", 0)}
    assert duplicates(texts, DedupSpec(near=False)) == {1: ("exact", 0)}


# --- leakage -----------------------------------------------------------------------------------

def _index(**kw: Any) -> LeakageIndex:
    samples = [
        ("medqa", Sample("q1", "A 45-year-old man presents with crushing substernal chest pain radiating to the left "
                               "arm for two hours. Which enzyme rises first?", ("Troponin", "CK-MB"), 0)),
        ("pubmedqa", Sample("p1", "Does he have a cold for two days now or is it the flu this week?",
                            ("yes", "no", "maybe"), 0)),
    ]
    return LeakageIndex.build(samples, **kw)


def test_leakage_64_char_overlap() -> None:
    index = _index()
    leaked = "Notes: a 45-year-old man presents with crushing substernal chest pain radiating to the LEFT arm."
    hits = index.check(leaked)
    assert [(i.task, i.sample_id) for i in hits["chars"]] == [("medqa", "q1")]
    assert index.check("A 45-year-old woman with chest pain and dyspnoea after a long flight.") == {}


def test_leakage_13_gram_overlap_without_64_chars() -> None:
    index = _index()
    text = "Patient asks: he have a cold for two days now or is it the flu"  # 13 shared words, 48 characters
    hits = index.check(text)
    assert "ngram" in hits and "chars" not in hits
    assert hits["ngram"][0].sample_id == "p1"
    assert index.check("Patient asks: does he have a cold for two days") == {}


def test_leakage_min_matches_asks_for_longer_overlaps() -> None:
    text = "crushing substernal chest pain radiating to the left arm for two hours, said the note."
    assert _index().check(text)
    assert _index(min_matches=40).check(text) == {}


def test_leakage_catches_planted_test_question_bundled() -> None:
    """Every harness task's bundled test samples; a MedQA test question planted in a chat."""
    from harness.data.sources import load_split
    from harness.run.catalog import load_catalog

    spec = load_catalog().task("medqa")
    planted = load_split(spec, spec.eval_split, "bundled", None)[3]
    assert isinstance(planted.input, str)
    index = build_index(LeakageSpec(source="bundled"), None)
    assert {"medqa", "pubmedqa", "mmlu_anatomy"} <= set(index.tasks)
    records = [
        ChatRecord("clean", "t", (Message("user", "What causes gout?"),
                                  Message("assistant", "Deposition of monosodium urate crystals in joints."))),
        ChatRecord("leak", "t", (Message("user", planted.input), Message("assistant", planted.choices[0]))),
    ]
    kept, report = check_leakage(records, index)
    assert [r.id for r in kept] == ["clean"]
    assert report["dropped"] == 1 and report["by_task"]["medqa"] == 1
    assert report["by_test"] == {"chars": 1, "ngram": 1}
    assert f"medqa/{planted.id}" in report["examples"][0]["matches"]
    assert planted.input not in json.dumps(report)


def test_leakage_local_test_split_through_pipeline(shared_data: Path, tmp_path: Path) -> None:
    """The full local MedQA test split: a question planted among PubMed abstracts is dropped."""
    test_q = json.loads((shared_data / "medqa" / "us_4options_test.jsonl").read_text().splitlines()[700])
    docs = [{"doc_id": "leak", "text": f"Practice case. {test_q['question']} Answer: {test_q['answer']}."},
            {"doc_id": "clean", "text": "Gout is an inflammatory arthritis caused by uric acid crystals in the joints; "
                                        "colchicine treats acute attacks."}]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    filters = FilterSpec(quality=None, dedup=None, pii=False, leakage=LeakageSpec(tasks=["medqa", "pubmedqa"]))
    records, report = prepare_records("cp", [DataSourceSpec(reader="jsonl_text", path=str(path))], filters,
                                      shared_data)
    assert [r.id for r in records] == ["docs:clean"]
    assert report.leakage["dropped"] == 1
    assert report.leakage["tasks_checked"] == {"medqa": 1273, "pubmedqa": 500}
    assert report.leakage["examples"][0]["sample"] == "medqa-00700"


# --- formatting --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_dir))


def _labelled_spans(features: dict[str, list[int]], tokenizer: Any) -> list[str]:
    spans: list[str] = []
    current: list[int] = []
    for tok, label in zip(features["input_ids"], features["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == tok
            current.append(tok)
        elif current:
            spans.append(tokenizer.decode(current))
            current = []
    if current:
        spans.append(tokenizer.decode(current))
    return spans


def test_response_only_mask_single_turn(tokenizer: Any) -> None:
    msgs = (Message("user", "What causes gout?"), Message("assistant", "Uric acid crystals in the joints."))
    f = chat_features(msgs, tokenizer)
    assert f is not None
    ids, labels = f["input_ids"], f["labels"]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in msgs], tokenize=False)
    start = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
    # everything up to and including the generation prompt is masked; the reply starts right after it
    assert tokenizer.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(ids[:start]).count("What causes gout?") == 1
    assert _labelled_spans(f, tokenizer) == ["Uric acid crystals in the joints.<|im_end|>"]
    assert labels[-1] == IGNORE_INDEX and tokenizer.decode(ids[-1:]) == "\n"  # the separator after <|im_end|>


def test_response_only_mask_multi_turn(tokenizer: Any) -> None:
    msgs = dialogue_messages("Doctor: Hello, what brings you in?\nPatient: My knee hurts.\n"
                             "Doctor: Since when?\nPatient: Two days.\nDoctor: Any swelling?\nPatient: No.")
    assert [m.role for m in msgs] == ["system", "assistant", "user", "assistant", "user", "assistant"]
    f = chat_features(msgs, tokenizer)
    assert f is not None
    assert _labelled_spans(f, tokenizer) == ["Hello, what brings you in?<|im_end|>", "Since when?<|im_end|>",
                                             "Any swelling?<|im_end|>"]
    assert sum(1 for x in f["labels"] if x != IGNORE_INDEX) == sum(
        len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1
        for t in ("Hello, what brings you in?", "Since when?", "Any swelling?"))


def test_response_mask_skips_an_opening_assistant_turn(tokenizer: Any) -> None:
    """Without a system message the template adds its own; a reply with nothing before it is
    not trained (its span would swallow that system prompt)."""
    msgs = (Message("assistant", "Hello."), Message("user", "Hi, my knee hurts."), Message("assistant", "Since when?"))
    f = chat_features(msgs, tokenizer)
    assert f is not None and _labelled_spans(f, tokenizer) == ["Since when?<|im_end|>"]
    assert chat_features(msgs[:1], tokenizer) is None


def test_response_mask_truncation(tokenizer: Any) -> None:
    msgs = (Message("user", "word " * 200), Message("assistant", "Short reply."))
    assert chat_features(msgs, tokenizer, max_length=50) is None
    f = chat_features(msgs, tokenizer, max_length=2000)
    assert f is not None and len(f["input_ids"]) < 2000
    with pytest.raises(HarnessError, match="assistant"):
        chat_features((Message("user", "hi"),), tokenizer)


def test_pack_texts_blocks(tokenizer: Any) -> None:
    texts = ["Aspirin inhibits cyclooxygenase. " * 5, "Insulin lowers blood glucose. " * 7, "Short note."]
    ds = pack_texts(texts, tokenizer, block_size=16)
    lengths = [len(r["input_ids"]) for r in ds]
    total = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)
    assert sum(lengths) == total and all(n == 16 for n in lengths[:-1]) and lengths[-1] <= 16
    flat = [t for r in ds for t in r["input_ids"]]
    assert flat.count(tokenizer.eos_token_id) == 3
    assert all(r["input_ids"] == r["labels"] for r in ds)


def test_text_conversions() -> None:
    qa = (Message("system", "s"), Message("user", "What is gout?"), Message("assistant", "An arthritis."))
    assert chat_to_text(qa) == "Question: What is gout?\nAnswer: An arthritis."
    chat = (Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Pain"),
            Message("assistant", "Where?"))
    assert chat_to_text(chat) == "User: Hi\nAssistant: Hello\nUser: Pain\nAssistant: Where?"
    ctx = ReadContext(FIXTURES)
    recs = read_source(DataSourceSpec(reader="triples_jsonl", path="train_triples.jsonl",
                                      options={"templates": {"treats": "{head} is used to treat {tail}."}}), ctx)
    assert [r.text for r in recs if isinstance(r, TextRecord)] == [
        "Metformin is used to treat type 2 diabetes. Metformin may cause lactic acidosis.",
        "Warfarin interacts with aspirin.",
    ]


def test_preference_rows() -> None:
    pairs = [PreferenceRecord(f"p{i}", "t", (Message("user", f"q{i}"),), f"good{i}", f"bad{i}") for i in range(2)]
    assert preference_row(pairs[0]) == {"prompt": [{"role": "user", "content": "q0"}],
                                        "chosen": [{"role": "assistant", "content": "good0"}],
                                        "rejected": [{"role": "assistant", "content": "bad0"}]}
    rows = unpaired_rows(pairs)
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [
        ("good0", True), ("bad0", False), ("good1", True), ("bad1", False)]


# --- readers -----------------------------------------------------------------------------------

def test_readers_on_shared_data(shared_data: Path) -> None:
    ctx = ReadContext(shared_data)
    sft = read_source(DataSourceSpec(reader="sharegpt", path="sft/medicalgpt_medical_sft_zh_1k.jsonl"), ctx)
    assert len(sft) == 1000 and all(isinstance(r, ChatRecord) for r in sft)
    qa = read_source(DataSourceSpec(reader="selfbiorag", path="medqa/train_subset_selfbiorag.jsonl", limit=5), ctx)
    assert len(qa) == 5 and isinstance(qa[0], ChatRecord) and qa[0].messages[0].content.startswith("Given four")
    abstracts = read_source(DataSourceSpec(reader="pubtator", path="pretrain/ncbi_disease_train_pubtator.txt"), ctx)
    assert len(abstracts) == 592  # 593 documents, PMID 8528200 twice (MANIFEST.md)
    chats = read_source(DataSourceSpec(reader="dialogue_csv", path="dialogue/aci_bench/train.csv", limit=3), ctx)
    assert all(isinstance(c, ChatRecord) and c.messages[-1].role == "assistant" for c in chats)
    prefs = read_source(DataSourceSpec(reader="preference_jsonl", path="preference/medicalgpt_reward_zh_100.jsonl"),
                        ctx)
    assert len(prefs) == 100 and isinstance(prefs[0], PreferenceRecord)
    mcqa = read_source(DataSourceSpec(reader="benchmark_preference", task="medmcqa", split="train", limit=20), ctx)
    assert all(isinstance(p, PreferenceRecord) and p.chosen != p.rejected for p in mcqa)


def test_benchmark_reader_refuses_the_scored_split() -> None:
    with pytest.raises(HarnessError, match="scores"):
        read_source(DataSourceSpec(reader="benchmark_qa", task="pubmedqa", split="test"), ReadContext(None))
    qa = read_source(DataSourceSpec(reader="benchmark_qa", task="pubmedqa", split="train", limit=3), ReadContext(None))
    assert isinstance(qa[0], ChatRecord) and qa[0].messages[1].content in ("Yes", "No", "Maybe")


def test_stage_kind_checks_record_kind(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question": "q", "chosen": "a", "rejected": "b"}) + "\n")
    filters = FilterSpec(quality=None, leakage=LeakageSpec(enabled=False))
    src = [DataSourceSpec(reader="preference_jsonl", path=str(path))]
    with pytest.raises(HarnessError, match="preference records"):
        prepare_records("ift", src, filters, None)
    records, report = prepare_records("cp", src, filters, None)  # plain text for CP
    assert report.converted_to_text == 1 and isinstance(records[0], TextRecord)
    assert records[0].text == "Question: q\nAnswer: a"


# --- recipes and configs -------------------------------------------------------------------------

def test_shipped_recipes_validate() -> None:
    from trainers.recipe import load_recipe

    kinds = {name: [s.kind for s in load_recipe(name).stages] for name in ("ift", "cp-ift", "ift-ha", "cp-ift-ha")}
    assert kinds == {"ift": ["ift"], "cp-ift": ["cp", "ift"], "ift-ha": ["ift", "dpo"],
                     "cp-ift-ha": ["cp", "ift", "reward", "dpo"]}


@pytest.mark.parametrize(("patch", "match"), [
    ({"stages": [{"name": "ift", "kind": "sft", "data": [{"reader": "x", "path": "y"}]}]}, "stages.0.kind"),
    ({"stagez": []}, "stagez"),
    ({"stages": [{"name": "ift", "kind": "ift", "data": [{"reader": "x", "path": "y"}],
                  "train": {"learning_rat": 0.1}}]}, "did you mean 'learning_rate'"),
    ({"stages": [{"name": "ift", "kind": "ift", "data": [{"reader": "x", "path": "y"}],
                  "train": {"max_steps": "ten"}}]}, "stages.0.train.max_steps.*'ten'"),
    ({"stages": [{"name": "r", "kind": "reward", "data": [{"reader": "x", "path": "y"}],
                  "merge": {"method": "linear"}}]}, "merge"),
])
def test_recipe_errors_name_file_and_key(tmp_path: Path, patch: dict[str, Any], match: str) -> None:
    import yaml

    from trainers.recipe import load_recipe

    raw = {"recipe": "t", "stages": [{"name": "ift", "kind": "ift", "data": [{"reader": "x", "path": "y"}]}], **patch}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=match) as err:
        load_recipe(path)
    assert str(path) in str(err.value)


def test_configs_cpu_defaults_and_precedence(tmp_path: Path) -> None:
    from trainers.configs import IFTConfig, build_config, hardware_defaults

    hw = hardware_defaults()
    assert hw["bf16"] is False and hw["use_cpu"] is True and hw["activation_checkpointing"] is False
    cfg = build_config("ift", tmp_path, {"learning_rate": "1e-4", "method": "lora", "lora_r": 4})
    assert isinstance(cfg, IFTConfig)
    assert (cfg.learning_rate, cfg.method, cfg.lora_r, cfg.bf16, cfg.gradient_checkpointing) == (1e-4, "lora", 4,
                                                                                                  False, False)
    assert cfg.report_to == [] and cfg.logging_steps == 1 and cfg.output_dir == str(tmp_path)


def test_qlora_config_path_refuses_without_gpu(tmp_path: Path) -> None:
    from trainers.configs import build_config, has_cuda
    from trainers.stages.common import lora_config, quantization_config

    cfg = build_config("ift", tmp_path, {"method": "qlora", "lora_r": 8})
    lora = lora_config(cfg, "CAUSAL_LM")
    assert lora.r == 8 and lora.task_type == "CAUSAL_LM"
    if has_cuda():  # pragma: no cover - GPU machines
        pytest.skip("a GPU is visible")
    with pytest.raises(HarnessError, match="CUDA GPU"):
        quantization_config(cfg)


def test_merge_task_vector_methods() -> None:
    import copy

    import torch

    from trainers.merge import MergeSpec, merge_task_vector

    torch.manual_seed(0)

    def pair() -> tuple[torch.nn.Linear, torch.nn.Linear]:
        base = torch.nn.Linear(8, 8)
        tuned = torch.nn.Linear(8, 8)
        tuned.load_state_dict(base.state_dict())
        with torch.no_grad():
            tuned.weight.add_(torch.randn(8, 8))
        return base, tuned

    base, tuned = pair()
    delta = tuned.weight.detach() - base.weight.detach()
    out: Any = merge_task_vector(base, copy.deepcopy(tuned), MergeSpec(method="linear", weight=0.5))
    assert torch.allclose(out.weight, base.weight + 0.5 * delta, atol=1e-6)
    out = merge_task_vector(base, copy.deepcopy(tuned), MergeSpec(method="linear", weight=0.0))
    assert torch.allclose(out.weight, base.weight)
    out = merge_task_vector(base, copy.deepcopy(tuned), MergeSpec(method="ties", weight=1.0, density=0.25))
    changed = (out.weight - base.weight).abs() > 1e-7
    assert changed.sum().item() == 16  # the largest quarter of the 64 changes survive
    kept = (out.weight - base.weight)[changed]
    assert torch.allclose(kept, delta[changed], atol=1e-6)
    a = merge_task_vector(base, copy.deepcopy(tuned), MergeSpec(method="dare_linear", density=0.5, seed=3)).weight
    b = merge_task_vector(base, copy.deepcopy(tuned), MergeSpec(method="dare_linear", density=0.5, seed=3)).weight
    assert torch.equal(a, b) and not torch.allclose(a, tuned.weight)
    with pytest.raises(ValueError, match="density"):
        MergeSpec(method="ties")


def test_counts_are_counters() -> None:
    _, counts = mask_pii("Dr. Who called Dr. Strange at 555-123-4567.")
    assert counts == Counter({"NAME": 2, "PHONE": 1})


def test_output_folder_refuses_other_settings(tmp_path: Path) -> None:
    from harness.cli.train import _parse_set
    from trainers.pipeline import TrainOptions, _check_identity, _identity
    from trainers.recipe import load_recipe

    recipe = load_recipe("ift", check_train=False)
    options = TrainOptions(max_steps=5, train_overrides=_parse_set(["save_steps=5", "learning_rate=1e-4"]))
    assert options.stage_overrides() == {"save_steps": 5, "learning_rate": "1e-4", "max_steps": 5}
    _check_identity(tmp_path, _identity(recipe, options, None))
    _check_identity(tmp_path, _identity(recipe, options, None))  # the same settings resume
    with pytest.raises(HarnessError, match="other settings \\(overrides\\)"):
        _check_identity(tmp_path, _identity(recipe, TrainOptions(max_steps=6), None))
