"""Read a task split from one of its sources: bundled samples, local files, or the HF hub."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from harness.data.adapters import ADAPTERS
from harness.data.spec import HubSource, IdFilter, LocalSource, TaskSpec
from harness.errors import ConfigError, HarnessError
from harness.types import Sample

log = logging.getLogger(__name__)

SourceKind = Literal["bundled", "local", "hub"]


def tasks_dir() -> Path:
    """The installed `tasks` package folder (works for editable and regular installs)."""
    import tasks

    return Path(tasks.__file__).parent


def _iter_records(path: Path, reader: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Yield (1-based line/record number, record)."""
    if reader == "jsonl":
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise HarnessError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
    elif reader == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if isinstance(data, dict):
            for n, (key, value) in enumerate(data.items(), 1):
                yield n, {"_key": key, **value}
        else:
            yield from enumerate(data, 1)
    elif reader == "csv":
        with path.open(encoding="utf-8", newline="") as f:
            for lineno, row in enumerate(csv.reader(f), 1):
                yield lineno, {"_row": row}
    elif reader == "csv_header":
        with path.open(encoding="utf-8", newline="") as f:
            table = csv.DictReader(f)
            for record in table:
                yield table.line_num, record
    elif reader == "conll":
        yield from _iter_conll(path)
    else:  # pragma: no cover - the schema forbids other readers
        raise ValueError(reader)


def _iter_conll(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """CoNLL-style TSV (token<TAB>tag, blank line between sentences): one record per
    sentence, {"tokens": [...], "tags": [...]}, numbered by the sentence's first line."""
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    yield start, {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise HarnessError(f"{path}:{lineno}: expected token<TAB>tag, got {line[:60]!r}")
            if not tokens:
                start = lineno
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        yield start, {"tokens": tokens, "tags": tags}


def _adapt(
    records: Iterator[tuple[int, Mapping[str, Any]]], record: str, options: Mapping[str, Any],
    where: str,
) -> list[Sample]:
    adapter = ADAPTERS.get(record)
    out = []
    for index, (num, rec) in enumerate(records):
        try:
            sample = adapter(rec, index, options)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise HarnessError(f"{where}: record {num}: {what} (adapter {record!r})") from None
        if sample is not None:
            out.append(sample)
    return out


def _load_ids(flt: IdFilter) -> set[str]:
    path = tasks_dir() / "data" / flt.file
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(x) for x in (data.keys() if isinstance(data, dict) else data)}


def _apply_filter(samples: list[Sample], flt: IdFilter | None) -> list[Sample]:
    if flt is None:
        return samples
    ids = _load_ids(flt)
    keep = flt.mode == "include"
    return [s for s in samples if (str(s.metadata.get(flt.key)) in ids) == keep]


def load_local(src: LocalSource, data_dir: Path) -> list[Sample]:
    path = data_dir / src.path
    if not path.is_file():
        raise HarnessError(f"data file not found: {path} (check --data-dir)")
    samples = _adapt(_iter_records(path, src.reader), src.record, src.options, str(path))
    return _apply_filter(samples, src.ids)


def load_hub(src: HubSource) -> list[Sample]:
    """Load through `datasets` at the pinned revision. With HF_HUB_OFFLINE=1 only the local
    datasets cache (or a local folder given as `path`) is used."""
    import datasets

    try:
        ds = datasets.load_dataset(src.path, src.name, revision=src.revision, split=src.split)
    except Exception as exc:  # datasets raises many types; the message is what matters
        raise HarnessError(
            f"could not load hub dataset {src.path}"
            f"{'/' + src.name if src.name else ''}@{src.revision[:12]} split {src.split!r}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    records = ((i + 1, rec) for i, rec in enumerate(ds))
    samples = _adapt(records, src.record, src.options, f"{src.path}[{src.split}]")
    return _apply_filter(samples, src.ids)


def load_bundled(name: str) -> list[Sample]:
    path = tasks_dir() / "samples" / name
    if not path.is_file():
        raise HarnessError(f"bundled sample file missing from the package: {path}")
    out = []
    for lineno, rec in _iter_records(path, "jsonl"):
        try:
            out.append(Sample.from_json(rec))
        except (KeyError, TypeError) as exc:
            raise HarnessError(f"{path}:{lineno}: bad sample: {exc}") from None
    return out


def load_split(spec: TaskSpec, split: str, source: SourceKind, data_dir: Path | None) -> list[Sample]:
    sources = spec.splits.get(split)
    if sources is None:
        raise ConfigError(f"task {spec.task!r} has no split {split!r}", file=spec.source_file)
    if source == "bundled":
        if sources.bundled is None:
            raise HarnessError(f"task {spec.task!r} ships no bundled samples for split {split!r}")
        samples = load_bundled(sources.bundled)
    elif source == "local":
        if sources.local is None:
            raise HarnessError(f"task {spec.task!r} has no local source for split {split!r}")
        if data_dir is None:
            raise HarnessError("local data needs --data-dir")
        samples = load_local(sources.local, data_dir)
    else:
        if sources.hub is None:
            raise HarnessError(f"task {spec.task!r} has no hub source for split {split!r} "
                               "(use --data-dir DIR, or --data-source bundled for its bundled sample)")
        samples = load_hub(sources.hub)
    if not samples:
        raise HarnessError(f"task {spec.task!r}: split {split!r} ({source}) holds no samples")
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise HarnessError(f"task {spec.task!r}: duplicate sample id {s.id!r} in {split!r}")
        seen.add(s.id)
    return samples
