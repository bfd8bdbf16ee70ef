"""Plain-text tables of run records for the terminal."""

from __future__ import annotations

from typing import Any

from harness.run.records import RunRecord
from harness.scoring.intervals import format_value_ci


def _fmt_metric(m: dict[str, Any]) -> str:
    low, high = m.get("ci") or (None, None)
    return format_value_ci(m.get("value"), low, high)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def format_record(record: RunRecord) -> str:
    head = (
        f"run {record.run_id} ({record.status}) model={record.model.name} "
        f"backend={record.model.backend} fingerprint={record.model.fingerprint[:12]}"
    )
    rows = []
    for res in record.tasks.values():
        for name, m in res.metrics.items():
            rows.append([
                res.task, res.protocol, str(res.n_shot), name, _fmt_metric(m),
                str(m.get("n_scored", "")), str(m.get("n_unscored", "")), res.data_source,
            ])
    for group, g in record.groups.items():
        for name, m in g["metrics"].items():
            rows.append([f"{group} (micro avg)", "", "", name, _fmt_metric(m),
                         str(m.get("n_scored", "")), str(m.get("n_unscored", "")), ""])
    header = ["task", "protocol", "shots", "metric", "value [95% CI]", "n", "unscored", "data"]
    parts = [head, _table(rows, header) if rows else "(no task finished yet)"]
    for key, res in record.tasks.items():
        sft = res.extra.get("sft")
        if isinstance(sft, dict) and "heldin_loss" in sft:
            loss = sft["heldin_loss"]
            parts.append(
                f"{key}: fine-tuned ({sft['method']}, {sft['steps']} steps, {sft['train_examples']} train examples, "
                f"{sft['dropped_leaked']} dropped as leaked, data {sft['train_data_fingerprint'][:12]}, recipe "
                f"{sft['recipe_hash'][:12]}{', reused' if sft.get('reused_checkpoint') else ''}); held-in loss "
                f"{loss['before']:.3f} -> {loss['after']:.3f}; checkpoint {sft['checkpoint']}")
    if record.cache:
        parts.append(f"cache: {record.cache.get('hits', 0)} hits, {record.cache.get('misses', 0)} misses")
    return "\n".join(parts)
