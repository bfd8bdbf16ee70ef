"""Helpers shared by the command modules of `harness` (harness.cli.run, harness.cli.judge,
harness.cli.leaderboard). Light imports only: `harness --help` must not load torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.scoring.cost import PriceTable, RoleUsage


def parse_model_args(text: str | None) -> dict[str, Any]:
    """"dtype=float32,device=cpu" -> dict; numbers and booleans are converted; `extra.NAME=V`
    entries are collected into `extra_body` (sent with every request by the openai backend)."""
    out: dict[str, Any] = {}
    if not text:
        return out
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--model-args: expected key=value, got {item!r}")
        v: Any = value.strip()
        if v.lower() in ("true", "false"):
            v = v.lower() == "true"
        else:
            for convert in (int, float):
                try:
                    v = convert(v)
                    break
                except ValueError:
                    pass
        key = key.strip()
        if key.startswith("extra."):  # server-specific request fields, e.g. extra.repeat_penalty=1.0
            out.setdefault("extra_body", {})[key.removeprefix("extra.")] = v
        else:
            out[key] = v
    return out


def default_cache() -> Path:
    from harness.backends.models import cache_root

    return cache_root() / "requests.sqlite"


def progress_bar(desc: str, total: int, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="sample", file=sys.stderr,
                dynamic_ncols=True)


def backend_args(args: argparse.Namespace, text: str | None) -> dict[str, Any]:
    """--model-args-style text plus the conveniences for remote backends (--base-url, ...),
    which travel as backend arguments."""
    out = parse_model_args(text)
    for key in ("base_url", "api_key_env", "concurrency", "timeout"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return out


def split_list(text: str | None) -> tuple[str, ...]:
    """"a, b,,c" -> ("a", "b", "c")"""
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def store_arg(args: argparse.Namespace) -> str:
    """--store, or $HARNESS_STORE: the results store (a SQLite path or an SQLAlchemy URL)."""
    import os

    store: str | None = args.store or os.environ.get("HARNESS_STORE")
    if not store:
        raise HarnessError("name the results store: --store PATH_OR_URL (or set HARNESS_STORE)")
    return store


def price_table_arg(path: Path | None) -> PriceTable | None:
    """--price-table FILE, loaded and checked (an error names the file), or None."""
    if path is None:
        return None
    from harness.scoring.cost import load_price_table

    return load_price_table(path)


def write_cost(path: Path, usages: Sequence[RoleUsage], table: PriceTable, *, no_tokens: str) -> str:
    """Price `usages` with `table` (harness.scoring.cost.cost_report), write the report to `path`
    (cost.json) and return the line to print: "cost: $X -> PATH", or why there is no total
    (a model without a price, or `no_tokens` when nothing recorded tokens)."""
    import json

    from harness.scoring.cost import cost_report

    report = cost_report(usages, table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    total = "n/a (unpriced: " + ", ".join(report.unpriced) + ")" if report.total_usd is None else \
        f"${report.total_usd:.4f}"
    if not report.roles:
        total = f"n/a ({no_tokens})"
    return f"cost: {total} -> {path}"
