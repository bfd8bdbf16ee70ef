import json
from pathlib import Path

import pytest

from harness.extract import extract_choice

CASES = json.loads((Path(__file__).parent / "fixtures/extraction_cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["text"][:30] or "<empty>" for c in CASES])
def test_extraction_golden(case):
    got = extract_choice(case["text"], tuple(case["labels"]), tuple(case["choices"]))
    assert got.index == case["expected"], got.method
