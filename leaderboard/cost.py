"""Per-task cost of a run for the results store: from the run's cost.json (`harness run
--price-table FILE` writes it) or, for a run without one, from its samples' recorded tokens
priced with a price table (`harness leaderboard import --price-table FILE`).

A task's cost is the sum over its model roles (candidate, grader, judges, ...). A task none of
whose samples record tokens has no cost, and a task with a role whose model the table does not
price has none either: unpriced is None (shown "—"), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.folder import RunFolder
from harness.schema import read_json
from harness.scoring.cost import PriceTable, cost_report, run_usage

COST_FILE = "cost.json"


def _read_cost_file(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("roles"), list):
        raise HarnessError(f"{path}: field roles: expected a list (the file `harness run --price-table` writes)")
    for k, role in enumerate(data["roles"]):
        if not isinstance(role, dict) or not isinstance(role.get("task"), str):
            raise HarnessError(f"{path}: field roles.{k}.task: expected a task key")
        usd = role.get("usd")
        if usd is not None and (isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd)
                                or usd < 0):
            raise HarnessError(f"{path}: field roles.{k}.usd: expected null or a cost >= 0, got {usd!r}")
    return data


def _per_task(report: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """task key -> {"usd": total or None, "roles": [...], "unpriced_models": [...], ...}."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for role in report["roles"]:
        by_task.setdefault(role["task"], []).append(role)
    out = {}
    for task, roles in by_task.items():
        unpriced = sorted({str(r.get("model")) for r in roles if r.get("usd") is None})
        usd = None if unpriced else math.fsum(float(r["usd"]) for r in roles)
        out[task] = {"usd": usd, "unpriced_models": unpriced, "roles": roles, "source": source,
                     "price_table": report.get("price_table")}
    return out


def task_costs(folder: Path, record: Mapping[str, Any], table: PriceTable | None = None) -> dict[str, dict[str, Any]]:
    """Per task key of the run in `folder`: its cost entry (see _per_task). From FOLDER/cost.json
    when there is one, else from the samples' tokens priced with `table`; {} without either."""
    path = folder / COST_FILE
    if path.is_file():
        return _per_task(_read_cost_file(path), str(path))
    if table is None:
        return {}
    report = cost_report(run_usage(record, RunFolder(folder).read_samples()), table).to_json()
    return _per_task(report, f"price table {table.source}")




def format_usd(usd: float | None) -> str:
    """"$0.0123", "$175.40", "$3.1e-06"; "—" for an unpriced task (never "$0")."""
    if usd is None:
        return "—"
    if usd == 0:
        return "$0.00"
    if usd >= 1:
        return f"${usd:,.2f}"
    if usd >= 0.0001:
        return f"${usd:.4f}"
    return f"${usd:.1e}"


__all__ = ["COST_FILE", "format_usd", "task_costs"]
