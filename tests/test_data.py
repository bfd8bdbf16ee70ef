import json
from pathlib import Path

import pytest

from harness.data.sources import load_split
from harness.errors import HarnessError
from harness.run.catalog import load_catalog

MMLU_CANONICAL = {"anatomy": 135, "clinical_knowledge": 265, "college_biology": 144,
                  "college_medicine": 173, "medical_genetics": 100, "professional_medicine": 272}


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_full_split_sizes(cat, shared_data):
    assert len(load_split(cat.task("medqa"), "test", "local", shared_data)) == 1273
    assert len(load_split(cat.task("medqa"), "dev", "local", shared_data)) == 1272
    assert len(load_split(cat.task("medmcqa"), "dev", "local", shared_data)) == 4183
    test = load_split(cat.task("pubmedqa"), "test", "local", shared_data)
    train = load_split(cat.task("pubmedqa"), "train", "local", shared_data)
    official = json.loads((shared_data / "pubmedqa/test_ground_truth.json").read_text())
    assert len(test) == 500 and len(train) == 500
    assert {s.metadata["pmid"] for s in test} == set(official)
    assert not {s.id for s in test} & {s.id for s in train}
    for s in test:
        assert s.choices[s.target] == official[s.metadata["pmid"]]
    for subject, n in MMLU_CANONICAL.items():
        spec = cat.task(f"mmlu_{subject}")
        assert len(load_split(spec, "test", "local", shared_data)) == n
        assert len(load_split(spec, "dev", "local", shared_data)) == 5


def test_medqa_targets_match_answer_text(cat, shared_data):
    samples = load_split(cat.task("medqa"), "test", "local", shared_data)
    raw = [json.loads(line) for line in (shared_data / "medqa/us_4options_test.jsonl").open()]
    for s, r in zip(samples, raw, strict=True):
        assert s.choices[s.target] == r["answer"]


def test_bundled_samples_are_subsets_of_the_real_data(cat, shared_data):
    for name in ("medqa", "medmcqa", "pubmedqa", "mmlu_anatomy"):
        spec = cat.task(name)
        bundled = load_split(spec, spec.eval_split, "bundled", None)
        full = {s.id: s for s in load_split(spec, spec.eval_split, "local", shared_data)}
        assert 20 <= len(bundled) <= 60
        for s in bundled:
            assert full[s.id] == s


# Local data only: BianQue has no licence; Craft-MD's cases predate MediQ's CC BY 4.0 recast.
NOT_BUNDLED = {"pqa_bianque", "mediq_craftmd"}


def test_bundled_samples_exist_for_every_split(cat):
    for spec in cat.tasks.values():
        for split, src in spec.splits.items():
            if spec.task in NOT_BUNDLED:
                assert src.bundled is None, f"{spec.task} must not ship a sample"
                continue
            assert src.bundled, f"{spec.task}/{split} has no bundled sample"
            assert load_split(spec, split, "bundled", None)


def test_missing_data_file_is_named(cat, tmp_path):
    with pytest.raises(HarnessError, match=r"data file not found: .*medqa/us_4options_test.jsonl"):
        load_split(cat.task("medqa"), "test", "local", tmp_path)


def test_malformed_record_names_file_and_line(cat, tmp_path):
    path = tmp_path / "medqa/us_4options_test.jsonl"
    path.parent.mkdir()
    good = {"question": "q", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "A"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"question": "q2"}) + "\n{broken\n")
    with pytest.raises(HarnessError, match=r"us_4options_test.jsonl: record 2: missing field 'options'"):
        load_split(cat.task("medqa"), "test", "local", tmp_path)
    path.write_text(json.dumps(good) + "\n{broken\n")
    with pytest.raises(HarnessError, match=r"us_4options_test.jsonl:2: invalid JSON"):
        load_split(cat.task("medqa"), "test", "local", tmp_path)


def test_hub_loader_through_datasets_on_local_files(cat, shared_data, tmp_path):
    """The hub path runs real `datasets` code; here it reads a local folder in the hub's schema
    (GBaker/MedQA-USMLE-4-options-hf: sent1, ending0..3, label), as no hub is reachable."""
    local = load_split(cat.task("medqa"), "test", "local", shared_data)[:30]
    folder = tmp_path / "medqa_hf"
    folder.mkdir()
    with (folder / "test.jsonl").open("w") as f:
        for s in local:
            rec = {"sent1": s.input, "label": s.target, **{f"ending{i}": c for i, c in enumerate(s.choices)}}
            f.write(json.dumps(rec) + "\n")
    spec = cat.task("medqa")
    hub = spec.splits["test"].hub.model_copy(update={"path": str(folder)})
    test_split = spec.splits["test"].model_copy(update={"hub": hub})
    spec = spec.model_copy(update={"splits": {**spec.splits, "test": test_split}})
    from_hub = load_split(spec, "test", "hub", None)
    assert [(s.input, s.choices, s.target) for s in from_hub] == [(s.input, s.choices, s.target) for s in local]
    assert spec.splits["test"].hub.revision and len(spec.splits["test"].hub.revision) == 40


def test_unreachable_hub_dataset_gives_one_clear_error(cat):
    spec = cat.task("pubmedqa")
    with pytest.raises(HarnessError, match=r"could not load hub dataset qiaojin/PubMedQA/pqa_labeled@9001f2853fb8"):
        load_split(spec, "test", "hub", None)


def test_every_hub_source_pins_a_commit(cat):
    for spec in cat.tasks.values():
        for split in spec.splits.values():
            if split.hub is not None:
                assert len(split.hub.revision) == 40 and int(split.hub.revision, 16) >= 0


def test_sample_roundtrip(cat):
    from harness.types import Sample

    s = load_split(cat.task("pubmedqa"), "test", "bundled", None)[0]
    assert Sample.from_json(json.loads(json.dumps(s.to_json()))) == s


def test_tasks_dir_is_the_package(cat):
    from harness.data.sources import tasks_dir

    assert (tasks_dir() / "medqa.yaml").is_file()
    assert Path(cat.task("medqa").source_file).parent == tasks_dir()
