"""Defective data files (issue 15): byte-order marks and CRLF line ends, exact duplicate records,
empty files, and JSON decode errors are read right or refused with one whole, named message."""

import json
import logging

import pytest

from harness.data.sources import load_local, load_split, read_split
from harness.data.spec import LocalSource
from harness.errors import HarnessError
from harness.run.catalog import load_catalog
from harness.run.config import RunConfig
from harness.run.runner import Runner
from tests.conftest import ScriptedBackend

BOM = "\ufeff"
QUESTIONS = ["Ein 45-jähriger Mann — Schmerz?", "患者は何歳ですか？", "Which drug (café-au-lait)?"]


def medqa_record(q, answer="B"):
    return {"question": q, "options": {"A": "α-blocker", "B": "β-blocker", "C": "naïve", "D": "d"},
            "answer_idx": answer}


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings(v)


def assert_clean(samples):
    for s in samples:
        for text in strings(s.to_json()):
            assert "\ufeff" not in text and not text.endswith("\r"), repr(text)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_jsonl_with_bom_and_crlf_is_read_unchanged(tmp_path):
    path = tmp_path / "q.jsonl"
    body = "\r\n".join(json.dumps(medqa_record(q), ensure_ascii=False) for q in QUESTIONS) + "\r\n"
    path.write_bytes((BOM + body).encode("utf-8"))
    samples = load_local(LocalSource(path="q.jsonl", reader="jsonl", record="medqa_options"), tmp_path)
    assert [s.input for s in samples] == QUESTIONS  # non-ASCII round-trips
    assert samples[0].choices[:3] == ("α-blocker", "β-blocker", "naïve")
    assert_clean(samples)


def test_csv_with_bom_and_crlf_is_read_unchanged(tmp_path):
    path = tmp_path / "anatomy_test.csv"
    rows = [[q, "α", "β", "γ", "δ-last", "B"] for q in QUESTIONS]
    text = "\r\n".join(",".join(f'"{c}"' for c in row) for row in rows) + "\r\n"
    path.write_bytes((BOM + text).encode("utf-8"))
    src = LocalSource(path=path.name, reader="csv", record="mmlu_csv_row", options={"subject": "anatomy"})
    samples = load_local(src, tmp_path)
    assert [s.input for s in samples] == QUESTIONS
    assert samples[0].choices == ("α", "β", "γ", "δ-last") and samples[0].target == 1
    assert_clean(samples)


def test_csv_header_with_bom_keeps_the_first_column_name(tmp_path, cat):
    """With a BOM read as plain utf-8, the first header is "\\ufeffID" and records lose that field."""
    path = tmp_path / "dialogue/mts_dialog/MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv"
    path.parent.mkdir(parents=True)
    text = ("ID,section_header,section_text,dialogue\r\n"
            '0,GENHX,"Der Patient — 45 Jahre.","Doctor: Wie geht es?\r\nPatient: Gut."\r\n')
    path.write_bytes((BOM + text).encode("utf-8"))
    samples = load_split(cat.task("mts_dialog_section"), "test", "local", tmp_path)
    assert len(samples) == 1
    assert_clean(samples)
    assert "Der Patient — 45 Jahre." in json.dumps(samples[0].to_json(), ensure_ascii=False)


def test_json_with_bom_and_crlf_is_read(tmp_path):
    data = {"123": {"QUESTION": QUESTIONS[0], "CONTEXTS": ["Kontext — eins."], "final_decision": "yes"}}
    text = json.dumps(data, ensure_ascii=False, indent=1).replace("\n", "\r\n")
    (tmp_path / "p.json").write_bytes((BOM + text).encode("utf-8"))
    samples = load_local(LocalSource(path="p.json", reader="json", record="pubmedqa_pqal"), tmp_path)
    assert samples[0].input == QUESTIONS[0] and samples[0].metadata["contexts"] == ["Kontext — eins."]
    assert_clean(samples)


def write_medqa(tmp_path, records):
    path = tmp_path / "medqa/us_4options_test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def ten_with_duplicates():
    """Lines 7 and 9 repeat lines 2 and 4 exactly."""
    recs = [medqa_record(f"question {i}") for i in range(1, 11)]
    recs[6] = recs[1]
    recs[8] = recs[3]
    return recs


def test_exact_duplicates_are_warned_with_lines_and_kept_by_default(tmp_path, cat, caplog):
    write_medqa(tmp_path, ten_with_duplicates())
    with caplog.at_level(logging.WARNING):
        data = read_split(cat.task("medqa"), "test", "local", tmp_path)
    assert "lines 2 = 7, 4 = 9" in caplog.text and "both are scored" in caplog.text
    assert "us_4options_test.jsonl" in caplog.text
    assert len(data.samples) == 10 and len({s.id for s in data.samples}) == 10
    assert data.duplicates == [[2, 7], [4, 9]]
    deduped = read_split(cat.task("medqa"), "test", "local", tmp_path, dedup=True)
    assert len(deduped.samples) == 8 and deduped.deduplicated
    assert [s.input for s in deduped.samples] == [f"question {i}" for i in (1, 2, 3, 4, 5, 6, 8, 10)]


def test_duplicate_records_with_a_derived_id_get_unique_ids(tmp_path):
    rec = {"id": 7, "context": ["c"], "question": "q", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    samples = load_local(LocalSource(path="m.jsonl", reader="jsonl", record="mediq_case"), tmp_path)
    assert len(samples) == 2 and len({s.id for s in samples}) == 2


def test_duplicates_are_recorded_in_the_task_record_and_dedup_scores_once(tmp_path):
    write_medqa(tmp_path, ten_with_duplicates())
    base = dict(tasks=("medqa",), data_dir=tmp_path, data_source="local", cache=None)
    both = Runner(RunConfig(**base, output=tmp_path / "both"), backend=ScriptedBackend()).run()
    res = both.tasks["medqa|loglik|0shot"]
    assert res.extra["duplicates"] == [[2, 7], [4, 9]] and res.extra["duplicates_scored"] == "both"
    assert res.metrics["accuracy"]["n_scored"] == 10
    once = Runner(RunConfig(**base, dedup=True, output=tmp_path / "once"), backend=ScriptedBackend()).run()
    res = once.tasks["medqa|loglik|0shot"]
    assert res.extra["duplicates"] == [[2, 7], [4, 9]] and res.extra["duplicates_scored"] == "once"
    assert res.metrics["accuracy"]["n_scored"] == 8
    assert once.config["dedup"] is True


def test_empty_data_file_is_named(tmp_path, cat):
    path = write_medqa(tmp_path, [])
    path.write_text("\n\n")
    with pytest.raises(HarnessError, match=r"holds no samples: .*medqa/us_4options_test\.jsonl"):
        load_split(cat.task("medqa"), "test", "local", tmp_path)


def test_json_decode_error_message_is_whole(tmp_path, cat):
    path = write_medqa(tmp_path, [medqa_record("q")])
    path.write_text(path.read_text() + '{"question": "unterminated')
    with pytest.raises(HarnessError) as err:
        load_split(cat.task("medqa"), "test", "local", tmp_path)
    assert str(err.value).endswith("us_4options_test.jsonl:2: invalid JSON: Unterminated string starting at: column 14")
    (tmp_path / "p.json").write_text('{"1": {"QUESTION": "q",\n "CONTEXTS": [}')
    with pytest.raises(HarnessError, match=r"p\.json:2: invalid JSON: Expecting value: column 15$"):
        load_local(LocalSource(path="p.json", reader="json", record="pubmedqa_pqal"), tmp_path)
