"""Leaderboard as text: a terminal table, Markdown, CSV (one line per model and column) and JSON."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

from harness.scoring.intervals import format_value_ci
from leaderboard.cost import format_usd
from leaderboard.rankings import PROMPTED, Cell, Leaderboard

FORMATS = ("table", "md", "csv", "json")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_ci(value: float | None, low: float | None, high: float | None) -> str:
    return format_value_ci(value, low, high)


def _cell_text(cell: Cell | None, with_cost: bool) -> str:
    """A task cell: the main metric with its CI, then (when the board holds priced results) its
    cost beside it, "—" when unpriced."""
    if cell is None:
        return "-"
    text = _with_ci(cell.value, cell.ci_low, cell.ci_high)
    return f"{text} · {format_usd(cell.cost_usd)}" if with_cost else text


def _grid(lb: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and rows shared by the terminal table and Markdown; every header carries the
    protocol tag of the numbers below it."""
    header = ["model"]
    header += [f"avg {m} ({lb.rows[0].averages[m].n_tasks} tasks)" for m in lb.average_metrics if lb.rows]
    header += [f"{c.label} [{c.tag}]" + ("" if c.comparable else " (apart)") for c in lb.columns]
    header += [c.label for c in lb.extra_columns]
    rows = []
    for row in lb.rows:
        line = [row.label]
        line += [_with_ci(row.averages[m].value, row.averages[m].ci_low, row.averages[m].ci_high)
                 for m in lb.average_metrics]
        for c in lb.columns:
            cell = row.cells.get(c.key)
            text = _cell_text(cell, lb.has_costs)
            if cell is not None and cell.grader_agreement is not None:
                text += f" · grader agreement: {cell.grader_agreement}"
            line.append(text)
        for e in lb.extra_columns:
            res = row.extras.get(e.key)
            text = _with_ci(res.value, res.ci[0], res.ci[1]) if res else "-"
            if e.key in row.judge_agreement:
                text += f" · judge agreement: {row.judge_agreement[e.key]}"
            line.append(text)
        rows.append(line)
    return header, rows


def to_table(lb: Leaderboard) -> str:
    """Terminal table: models are columns (best first) and tasks rows, which stays narrow for
    the usual handful of models; each row names the protocol tag of its numbers."""
    if not lb.rows:
        return "(the store holds no results yet)"
    header = ["task", "protocol", "metric", *(f"#{i} {r.label}" for i, r in enumerate(lb.rows, 1))]
    body: list[list[str]] = []
    for m in lb.average_metrics:
        avgs = [r.averages[m] for r in lb.rows]
        body.append([f"macro avg ({avgs[0].n_tasks} tasks)", avgs[0].tag, m,
                     *(_with_ci(a.value, a.ci_low, a.ci_high) for a in avgs)])
    for c in lb.columns:
        cells = [r.cells.get(c.key) for r in lb.rows]
        body.append([c.label + ("" if c.comparable else " *"), c.tag, c.main_metric,
                     *(_cell_text(x, lb.has_costs) for x in cells)])
        if any(x is not None and x.grader_agreement is not None for x in cells):  # a rubric task
            body.append(["  grader agreement", "", "", *(
                (x.grader_agreement or "-") if x is not None else "-" for x in cells)])
    for e in lb.extra_columns:
        extras = [r.extras.get(e.key) for r in lb.rows]
        body.append([e.label, e.kind, e.name, *(_with_ci(x.value, x.ci[0], x.ci[1]) if x else "-" for x in extras)])
        if any(e.key in r.judge_agreement for r in lb.rows):  # a judge's result
            body.append(["  judge agreement", "", "", *(r.judge_agreement.get(e.key, "-") for r in lb.rows)])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body]
    if lb.apart_columns:
        out.append("* shown apart: not run by every model, or run with another task fingerprint; "
                   "not in the averages")
    if lb.has_costs:
        out.append("· $...: cost in USD of the task's recorded tokens (cost.json or --price-table); · —: unpriced")
    if any(c.regime != PROMPTED for c in lb.columns):
        out.append("sft+...: fine-tuned on the task's own train split (--protocol sft); averaged only with "
                   "other sft results")
    return "\n".join(out)


def to_markdown(lb: Leaderboard) -> str:
    if not lb.rows:
        return "_no results_"
    header, rows = _grid(lb)

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


CSV_FIELDS = ["model", "model_fingerprint", "column", "task", "task_key", "protocol", "n_shot",
              "task_fingerprint", "metric", "value", "ci_low", "ci_high", "n_scored", "n_unscored",
              "comparable", "run_id", "cost_usd", "human_agreement"]


def to_csv(lb: Leaderboard) -> str:
    """Long format: one line per model and task column (averages as column "macro_avg")."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in lb.rows:
        base = {"model": row.label, "model_fingerprint": row.model_fingerprint}
        for avg in row.averages.values():
            column = "macro_avg" if avg.regime == PROMPTED else f"macro_avg_{avg.regime}"
            writer.writerow({**base, "column": column, "task": f"{avg.n_tasks} tasks", "protocol": avg.tag,
                             "metric": avg.metric, "value": avg.value, "ci_low": avg.ci_low, "ci_high": avg.ci_high,
                             "comparable": True})
        for c in lb.columns:
            cell = row.cells.get(c.key)
            if cell is None:
                continue
            writer.writerow({
                **base, "column": c.key, "task": c.task, "task_key": c.task_key, "protocol": c.protocol,
                "n_shot": c.n_shot, "task_fingerprint": c.task_fingerprint, "metric": cell.metric,
                "value": cell.value, "ci_low": cell.ci_low, "ci_high": cell.ci_high, "n_scored": cell.n_scored,
                "n_unscored": cell.n_unscored, "comparable": c.comparable, "run_id": cell.run_id,
                "cost_usd": cell.cost_usd, "human_agreement": cell.grader_agreement,
            })
        for e in lb.extra_columns:
            res = row.extras.get(e.key)
            if res is None:
                continue
            writer.writerow({**base, "column": e.key, "task": e.kind, "protocol": e.kind,
                             "task_fingerprint": e.fingerprint, "metric": e.name, "value": res.value,
                             "ci_low": res.ci[0], "ci_high": res.ci[1], "n_scored": res.n,
                             "n_unscored": res.n_unscored, "comparable": False,
                             "human_agreement": row.judge_agreement.get(e.key)})
    return buf.getvalue()


def to_json_data(lb: Leaderboard) -> dict[str, Any]:
    data = asdict(lb)
    for col, src in zip(data["columns"], lb.columns, strict=True):
        col["tag"] = src.tag
    for row, src_row in zip(data["rows"], lb.rows, strict=True):
        row["extras"] = {k: v.model_dump(mode="json") for k, v in src_row.extras.items()}
    data["calibrations"] = [g.model_dump(mode="json") for g in lb.calibrations]
    return data


def to_json(lb: Leaderboard) -> str:
    return json.dumps(to_json_data(lb), indent=2, ensure_ascii=False, default=str)


def render(lb: Leaderboard, fmt: str) -> str:
    renderers = {"table": to_table, "md": to_markdown, "csv": to_csv, "json": to_json}
    return renderers[fmt](lb)
