"""Answer extraction: golden cases (tests/fixtures/extraction_cases.json) for every registered
extractor, the registry, and the `method` strings stored per sample."""

import json
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.protocols.extract import DEFAULT_EXTRACTOR, EXTRACTORS, Extraction, extract_choice, get_extractor

CASES = json.loads((Path(__file__).parent / "fixtures/extraction_cases.json").read_text(encoding="utf-8"))
DRUGS = ("Ibuprofen", "Acetaminophen", "Aspirin", "Naproxen")
ABCD = ("A", "B", "C", "D")


def _id(case: dict) -> str:
    return f"{case['extractor']}:{case['text'][:40]!r}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_extraction_golden(case):
    extractor = EXTRACTORS.get(case["extractor"])
    got = extractor(case["text"], tuple(case["labels"]), tuple(case["choices"]))
    assert got.index == case["expected"], f"{case['note']} (method {got.method})"


def test_fixture_is_well_formed():
    assert len(CASES) >= 100
    keys = {"text", "labels", "choices", "expected", "extractor", "note"}
    for case in CASES:
        assert set(case) == keys, case
        assert case["extractor"] in EXTRACTORS
        assert len(case["labels"]) == len(case["choices"]), case["note"]
        assert case["expected"] is None or 0 <= case["expected"] < len(case["choices"]), case["note"]
        assert case["note"].strip()
    assert len({(c["text"], c["extractor"], tuple(c["choices"])) for c in CASES}) == len(CASES), "duplicate case"
    # Both extractors, answers and unsure cases, and the default model's real outputs are covered.
    assert {c["extractor"] for c in CASES} == {"choice", "last_answer"}
    assert sum(c["expected"] is None for c in CASES) >= 30
    assert sum("real SmolLM2" in c["note"] for c in CASES) >= 15


def test_registry():
    assert DEFAULT_EXTRACTOR == "choice"
    assert {"choice", "last_answer"} <= set(EXTRACTORS.names())
    assert get_extractor() is extract_choice
    assert get_extractor("choice") is extract_choice
    assert get_extractor("last_answer") is EXTRACTORS.get("last_answer")
    with pytest.raises(HarnessError, match="did you mean 'last_answer'"):
        get_extractor("last_answers")


def test_extract_choice_signature_is_stable():
    # protocols.py and the reasoning protocols call it positionally and read index/method.
    got = extract_choice("The answer is (C).", ABCD, DRUGS)
    assert got == Extraction(2, "explicit:answer_is")


COT = (
    "Initially, I thought the answer is A, because ibuprofen is a good anti-inflammatory. However, the "
    "patient has chronic kidney disease and NSAIDs reduce renal blood flow. So the answer is B."
)


@pytest.mark.parametrize(
    ("extractor", "text", "method"),
    [
        ("choice", "", "empty"),
        ("choice", "C", "leading_label"),
        ("choice", "\\boxed{C}", "explicit:boxed"),
        ("choice", "答案是C", "explicit:zh"),
        ("choice", "B is the correct answer.", "explicit:label_first"),
        ("choice", "Aspirin", "option_text"),
        ("choice", "Option D", "label_mention"),
        ("choice", "A or B", "ambiguous_labels"),
        ("choice", "Both ibuprofen and aspirin could work.", "ambiguous_options"),
        ("choice", "C) Ibuprofen", "conflict"),
        ("choice", "As an AI I cannot give medical advice", "refusal"),
        ("choice", "I don't know.", "unsure"),
        ("choice", "None of these.", "no_label"),
        ("choice", "The answer is B.\nThe answer is C.", "ambiguous_explicit"),
        ("choice", "A. Aspirin\n\nThe correct answer is C.", "conflict"),
        ("choice", "A.\n\nThe correct answer is C.", "explicit_vs_leading"),
        ("choice", COT, "ambiguous_explicit"),
        ("last_answer", COT, "final:answer_is"),
        ("last_answer", "NSAIDs harm the kidneys.\nSo the answer is A.\n\nFinal answer: B", "final_disagree"),
        ("last_answer", "Ibuprofen harms the kidneys.\nAspirin too.\nNaproxen", "no_final_answer"),
        ("last_answer", "Ibuprofen harms the kidneys.\n\nTherefore, acetaminophen.", "conclusion:option_text"),
        ("last_answer", "NSAIDs harm the kidneys.\n\nB", "final:final_line"),
    ],
)
def test_method_says_why(extractor, text, method):
    assert EXTRACTORS.get(extractor)(text, ABCD, DRUGS).method == method


def test_unsure_never_guesses_across_extractors():
    # Whatever the extractor, an unsure answer has no index, and an index is a valid option.
    for case in CASES:
        for name in EXTRACTORS.names():
            got = EXTRACTORS.get(name)(case["text"], tuple(case["labels"]), tuple(case["choices"]))
            assert got.index is None or 0 <= got.index < len(case["choices"])
            assert got.method
