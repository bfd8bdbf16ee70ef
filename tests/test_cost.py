"""Price tables and token cost (harness.scoring.cost)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.scoring.cost import RoleUsage, cost_report, load_price_table, parse_price_table

TABLE = """
# USD per 1M tokens
models:
  gpt-4.1-2025-04-14: {input: 2.0, output: 8.0}
  "openai:gpt-4.1-mini*": {input: 0.4, output: 1.6}
  "openai:*": {input: 5, output: 15}
  HuggingFaceTB/SmolLM2-135M-Instruct: {input: 0, output: 0}
"""


def test_cost_per_role_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(TABLE, encoding="utf-8")
    table = load_price_table(path)
    report = cost_report([
        RoleUsage("candidate", "huggingfacetb/smollm2-135m-instruct", 120_000, 40_000, 30),  # case-insensitive
        RoleUsage("grader", "gpt-4.1-2025-04-14", 3_000_000, 250_000, 352),
        RoleUsage("judge:mini", "openai:gpt-4.1-mini-2025-04-14", 1_000_000, 500_000, 10),  # longest pattern wins
        RoleUsage("judge:other", "openai:o3", 2_000, 1_000, 1),
    ], table)
    usd = [r.usd for r in report.roles]
    assert usd == pytest.approx([0.0, 3 * 2.0 + 0.25 * 8.0, 0.4 + 0.5 * 1.6, (2_000 * 5 + 1_000 * 15) / 1e6])
    assert [r.price_entry for r in report.roles][2:] == ["openai:gpt-4.1-mini*", "openai:*"]
    assert report.total_usd == pytest.approx(8.0 + 1.2 + 0.025)
    data = report.to_json()
    assert data["price_table"]["sha256"] == table.sha256 and len(table.sha256) == 64
    assert data["roles"][1]["samples"] == 352


def test_unpriced_model_is_reported_not_zero() -> None:
    table = parse_price_table(json.dumps({"models": {"a": {"input": 1, "output": 1}}}), "p.json")
    report = cost_report([RoleUsage("candidate", "a", 10, 10), RoleUsage("grader", "b", 10, 10)], table)
    assert report.roles[1].usd is None and report.total_usd is None and report.unpriced == ["b"]


@pytest.mark.parametrize("text, message", [
    ("models: {a: {input: 1}}", "input: USD, output: USD"),
    ("models: {a: {input: -1, output: 1}}", ">= 0"),
    ("models: {a: {input: '1', output: 1}}", "expected a price"),
    ("prices: {}", "one key, models"),
    ("models: {a: {input: 1, output: 1, cached: 0.5}}", "input: USD, output: USD"),
    ("models: [a]", "one key, models"),
    ("models: {a: {input: 1, output: .nan}}", "expected a price"),
    ("models: {a: [", "invalid price table"),
])
def test_bad_tables(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_price_table(text, "prices.yaml")
    assert "prices.yaml" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such price table"):
        load_price_table(tmp_path / "none.yaml")
