"""Token cost: a price table (USD per million tokens, per model name) and the cost of a run's
or a judgement's token counts per model role (candidate, grader, judges, patient, ...).

Price table file (`--price-table FILE`), YAML or JSON:

    # USD per 1M tokens
    models:
      gpt-4.1-2025-04-14: {input: 2.00, output: 8.00}
      "openai:gpt-4.1-mini*": {input: 0.40, output: 1.60}   # a glob pattern
      default: {input: 0, output: 0}                          # local models cost nothing

A model name is looked up exactly, then case-insensitively, then against the glob patterns
(the longest matching pattern wins); a name with no price is reported, never priced as zero
(add a `*` pattern to price everything else). The tokens are the caller's: `run_usage` counts
every scored sample's, whether or not the request cache served it (the cost of the run from
scratch, the figure to plan a full run with).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

PER_TOKENS = 1_000_000
_ENTRY_KEYS = frozenset({"input", "output"})


@dataclass(frozen=True)
class Price:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, Price]
    source: str = ""
    sha256: str = ""

    def lookup(self, model: str) -> tuple[str, Price] | None:
        """(the table entry used, its price), or None."""
        if model in self.prices:
            return model, self.prices[model]
        lower = {k.lower(): k for k in self.prices}
        if model.lower() in lower:
            key = lower[model.lower()]
            return key, self.prices[key]
        patterns = [k for k in self.prices if any(c in k for c in "*?[") and fnmatch.fnmatchcase(model.lower(),
                                                                                                  k.lower())]
        if patterns:
            key = max(patterns, key=len)
            return key, self.prices[key]
        return None


def parse_price_table(text: str, source: str) -> PriceTable:
    """A table from a file's text (JSON when `source` ends in .json, else YAML)."""
    try:
        data: Any = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"invalid price table: {exc}", file=source) from None
    if not isinstance(data, dict) or set(data) != {"models"} or not isinstance(data["models"], dict):
        raise ConfigError("expected a mapping with one key, models: {model name: {input: USD, output: USD}}",
                          file=source)
    prices = {}
    for name, entry in data["models"].items():
        key = f"models.{name}"
        if not isinstance(name, str) or not name:
            raise ConfigError(f"model names must be strings, got {name!r}", file=source, key=key)
        if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
            raise ConfigError(f"expected {{input: USD, output: USD}} per million tokens, got {entry!r:.80}",
                              file=source, key=key)
        values = []
        for side in ("input", "output"):
            v = entry[side]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{side}: expected a price >= 0 in USD per million tokens, got {v!r}", file=source,
                                  key=key)
            values.append(float(v))
        prices[name] = Price(*values)
    return PriceTable(prices, source, hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_price_table(path: str | Path) -> PriceTable:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("no such price table file", file=str(p))
    return parse_price_table(p.read_text(encoding="utf-8"), str(p))


@dataclass(frozen=True)
class RoleUsage:
    """Tokens one model spent in one role of a run or a judgement (of one task, when `task`)."""

    role: str  # candidate, grader, judge:<name>, patient, ...
    model: str
    prompt_tokens: int
    completion_tokens: int
    samples: int = 0  # samples (or requests) the tokens were counted over
    task: str = ""


def run_usage(record: Mapping[str, Any], samples: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[RoleUsage]:
    """Per task and model role, the tokens its samples record (score.metadata.tokens: role ->
    [prompt, completion], written for every generation request by harness.run.execution, or by the
    protocol itself (`rubric` counts its graders); counted whether or
    not the request cache served them, so it is the cost of the run from scratch). `record` is a
    run.json as a dict; `samples` task key -> sample id -> samples.jsonl entry. The model of role
    "candidate" is the record's model; any other role's is the task's aux_models entry."""
    out = []
    for key, entries in samples.items():
        task = (record.get("tasks") or {}).get(key) or {}
        aux = (task.get("extra") or {}).get("aux_models") or {}
        sums: dict[str, list[int]] = {}
        for entry in entries.values():
            for role, pair in ((entry.get("score") or {}).get("metadata") or {}).get("tokens", {}).items():
                acc = sums.setdefault(role, [0, 0, 0])
                acc[0] += int(pair[0])
                acc[1] += int(pair[1])
                acc[2] += 1
        for role, (p, c, n) in sorted(sums.items()):
            model = (record.get("model") or {}).get("name", "?") if role == "candidate" else (
                (aux.get(role) or {}).get("name", "?"))
            out.append(RoleUsage(role, str(model), p, c, n, key))
    return out


@dataclass(frozen=True)
class RoleCost:
    usage: RoleUsage
    price_entry: str | None  # the table entry used; None = no price for this model
    usd: float | None

    def to_json(self) -> dict[str, Any]:
        u = self.usage
        return {"task": u.task, "role": u.role, "model": u.model, "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens, "samples": u.samples, "price_entry": self.price_entry,
                "usd": self.usd}


@dataclass(frozen=True)
class CostReport:
    roles: tuple[RoleCost, ...]
    table_source: str
    table_sha256: str

    @property
    def total_usd(self) -> float | None:
        """The sum over roles; None when any role has no price (a partial sum would mislead)."""
        if any(r.usd is None for r in self.roles):
            return None
        return math.fsum(r.usd or 0.0 for r in self.roles)

    @property
    def unpriced(self) -> list[str]:
        return sorted({r.usage.model for r in self.roles if r.usd is None})

    def to_json(self) -> dict[str, Any]:
        return {"total_usd": self.total_usd, "unpriced_models": self.unpriced, "per_million_tokens": True,
                "price_table": {"source": self.table_source, "sha256": self.table_sha256},
                "roles": [r.to_json() for r in self.roles]}


def role_cost(usage: RoleUsage, table: PriceTable) -> RoleCost:
    found = table.lookup(usage.model)
    if found is None:
        return RoleCost(usage, None, None)
    entry, price = found
    usd = (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / PER_TOKENS
    return RoleCost(usage, entry, usd)


def cost_report(usages: Sequence[RoleUsage], table: PriceTable) -> CostReport:
    """The cost of each role's tokens under `table`."""
    for u in usages:
        if u.prompt_tokens < 0 or u.completion_tokens < 0:
            raise ValueError(f"negative token count for {u.role} ({u.model})")
    return CostReport(tuple(role_cost(u, table) for u in usages), table.source, table.sha256)
