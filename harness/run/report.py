"""Plain-text tables of run records for the terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.run.records import RunRecord, run_state
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
        f"run {record.run_id} ({run_state(record)}) model={record.model.name} "
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
    parts.extend(unscored_lines(record))
    for key, res in record.tasks.items():
        counted = res.extra.get("model_extractor")
        if isinstance(counted, dict):  # extractor: model, reported apart from the rule's answers
            fp = str(((res.extra.get("aux_models") or {}).get("extractor") or {}).get("fingerprint", ""))[:12]
            parts.append(f"{key}: the extractor model ({fp}) was asked about {counted.get('asked', 0)} answer(s) the "
                         f"rule was unsure of and decided {counted.get('decided', 0)}")
    if record.cache:
        parts.append(f"cache: {record.cache.get('hits', 0)} hits, {record.cache.get('misses', 0)} misses")
    return "\n".join(parts)


def unscored_lines(record: RunRecord) -> list[str]:
    """Per task, its unscored samples by reason ("40 unscored: request failed: HTTP 401: ..."), and
    prompts cut by --truncate; the first failed request's error line once for the run."""
    lines = []
    first_error = None
    for key, res in record.tasks.items():
        reasons = res.extra.get("unscored") or {}
        if reasons:
            lines.append(f"{key}: " + "; ".join(f"{n} unscored: {why}" for why, n in reasons.items()))
        if res.extra.get("truncated_prompts"):
            lines.append(f"{key}: {res.extra['truncated_prompts']} prompt(s) truncated ({res.extra.get('truncate')}) "
                         "to fit the model's context")
        first_error = first_error or res.extra.get("first_error")
    if first_error:
        lines.append(f"first error: {first_error}")
    return lines


def partial_lines(record: RunRecord, samples: Mapping[str, Mapping[str, dict[str, Any]]]) -> list[str]:
    """For a partial or killed run: the samples already scored of each task without a result yet
    (`samples`: RunFolder.read_samples())."""
    lines = []
    for key, entries in samples.items():
        if key in record.tasks:
            continue
        scored = sum(e["score"].get("value") is not None for e in entries.values())
        lines.append(f"{key}: not finished; {len(entries)} samples on disk ({scored} scored, "
                     f"{len(entries) - scored} unscored)")
    return lines


def failed_request_counts(record: RunRecord) -> dict[str, int]:
    """Task key -> samples unscored because a request failed (only tasks with some)."""
    return {key: int(res.extra["request_failed"]) for key, res in record.tasks.items()
            if res.extra.get("request_failed")}
