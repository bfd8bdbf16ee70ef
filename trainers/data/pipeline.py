"""A stage's data: read -> convert to the stage's record kind -> quality filter -> leakage check
-> PII masking -> de-duplication. Every step reports what it dropped or changed (counts and
record ids, never the text)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from trainers.data.config import DataSourceSpec, FilterSpec, LeakageSpec
from trainers.data.dedup import duplicates
from trainers.data.formatting import as_text_record
from trainers.data.leakage import LeakageIndex, build_index
from trainers.data.pii import PIIScrubber
from trainers.data.quality import quality_reason
from trainers.data.records import TrainRecord, full_text, map_strings, quality_text, record_kind
from trainers.data.sources import ReadContext, read_source

log = logging.getLogger(__name__)

# The record kind each stage kind trains on.
STAGE_RECORDS = {"cp": "text", "ift": "chat", "dpo": "preference", "kto": "preference", "reward": "preference"}
MAX_LEAK_EXAMPLES = 20


@dataclass
class DataReport:
    stage_kind: str
    read: dict[str, int] = field(default_factory=dict)  # per source label
    converted_to_text: int = 0
    quality_dropped: dict[str, int] = field(default_factory=dict)  # per reason
    leakage: dict[str, Any] = field(default_factory=dict)
    pii: dict[str, Any] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    kept: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_INDEXES: dict[tuple[str, str], LeakageIndex] = {}


def leakage_index(spec: LeakageSpec, data_dir: Path | None) -> LeakageIndex:
    """Built once per process and settings: it indexes every test split of the harness."""
    key = (spec.model_dump_json(), str(data_dir))
    if key not in _INDEXES:
        _INDEXES[key] = build_index(spec, data_dir)
    return _INDEXES[key]


def _source_label(spec: DataSourceSpec) -> str:
    return f"{spec.reader}:{spec.path or f'{spec.task}/{spec.split}'}"


def _convert(records: list[TrainRecord], stage_kind: str, label: str, report: DataReport) -> list[TrainRecord]:
    want = STAGE_RECORDS[stage_kind]
    out: list[TrainRecord] = []
    for rec in records:
        kind = record_kind(rec)
        if kind == want:
            out.append(rec)
        elif want == "text":
            out.append(as_text_record(rec))
            report.converted_to_text += 1
        else:
            raise HarnessError(f"source {label} gives {kind} records; a {stage_kind} stage trains on {want} records")
    return out


def check_leakage(records: Sequence[TrainRecord], index: LeakageIndex) -> tuple[list[TrainRecord], dict[str, Any]]:
    kept: list[TrainRecord] = []
    by_test: Counter[str] = Counter()
    by_task: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for rec in records:
        hits = index.check(full_text(rec))
        if not hits:
            kept.append(rec)
            continue
        for test in hits:
            by_test[test] += 1
        tasks = sorted({item.task for items in hits.values() for item in items})
        by_task.update(tasks)
        if len(examples) < MAX_LEAK_EXAMPLES:
            items = sorted({(i.task, i.sample_id) for found in hits.values() for i in found})
            examples.append({"record": rec.id, "tests": sorted(hits), "task": items[0][0], "sample": items[0][1],
                             "matches": [f"{t}/{sid}" for t, sid in items[:MAX_LEAK_EXAMPLES]]})
    report = {
        "dropped": len(records) - len(kept), "by_test": dict(by_test), "by_task": dict(by_task),
        "examples": examples, "tests": {"chars": index.chars, "ngram": index.ngram},
        "tasks_checked": dict(index.tasks), "tasks_skipped": dict(index.skipped),
    }
    return kept, report


def prepare_records(
    stage_kind: str, sources: Sequence[DataSourceSpec], filters: FilterSpec, data_dir: Path | None,
    recipe_dir: Path | None = None,
) -> tuple[list[TrainRecord], DataReport]:
    if stage_kind not in STAGE_RECORDS:
        raise HarnessError(f"unknown stage kind {stage_kind!r}")
    report = DataReport(stage_kind)
    ctx = ReadContext(data_dir, recipe_dir)
    records: list[TrainRecord] = []
    reasons: Counter[str] = Counter()
    for spec in sources:
        label = _source_label(spec)
        got = read_source(spec, ctx)
        report.read[label] = report.read.get(label, 0) + len(got)
        for rec in _convert(got, stage_kind, label, report):
            reason = None
            if filters.quality is not None and spec.quality:
                reason = quality_reason(quality_text(rec), filters.quality)
            if reason is None:
                records.append(rec)
            else:
                reasons[reason] += 1
    report.quality_dropped = dict(reasons)

    if filters.leakage.enabled and records:
        records, report.leakage = check_leakage(records, leakage_index(filters.leakage, data_dir))

    if filters.pii:
        scrub = PIIScrubber()
        masked = []
        for rec in records:
            masked.append(map_strings(rec, scrub))
            scrub.end_record()
        records = masked
        report.pii = {"masked": dict(scrub.counts), "records_changed": scrub.records_changed}

    if filters.dedup is not None and records:
        dropped = duplicates([full_text(r) for r in records], filters.dedup)
        report.duplicates = dict(Counter(kind for kind, _ in dropped.values()))
        records = [r for i, r in enumerate(records) if i not in dropped]

    report.kept = len(records)
    log.info("%s data: %d read, %d kept", stage_kind, sum(report.read.values()), report.kept)
    return records, report
