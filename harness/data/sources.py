"""Read a task split from one of its sources: bundled samples, local files, the HF hub, or a pinned
file at a URL (downloaded and verified by harness.data.remote, then read as a local file)."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from harness.data.adapters import ADAPTERS
from harness.data.remote import cache_path, fetch
from harness.data.spec import HubSource, IdFilter, LocalSource, SplitSources, TaskSpec, UrlSource
from harness.errors import ConfigError, HarnessError
from harness.types import Sample

log = logging.getLogger(__name__)

# "hub" reads a split's `hub` source, or its `url` source where it has no hub source (both remote)
SourceKind = Literal["bundled", "local", "hub", "url"]


def tasks_dir() -> Path:
    """The installed `tasks` package folder (works for editable and regular installs)."""
    import tasks

    return Path(tasks.__file__).parent


# Data files are read as `utf-8-sig` (a leading byte-order mark is dropped, as editors on Windows
# write one) and in universal-newline mode (CRLF line ends become LF), so no field keeps a
# "\ufeff" or a trailing "\r".
ENCODING = "utf-8-sig"


def _json_error(exc: json.JSONDecodeError) -> str:
    """The whole message: `exc.msg` alone can end mid-phrase ("Unterminated string starting at")."""
    return f"{exc.msg}: column {exc.colno}"


def _iter_records(path: Path, reader: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Yield (1-based line/record number, record)."""
    if reader == "jsonl":
        with path.open(encoding=ENCODING) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise HarnessError(f"{path}:{lineno}: invalid JSON: {_json_error(exc)}") from None
    elif reader == "json":
        try:
            data = json.loads(path.read_text(encoding=ENCODING))
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{path}:{exc.lineno}: invalid JSON: {_json_error(exc)}") from None
        if isinstance(data, dict):
            for n, (key, value) in enumerate(data.items(), 1):
                yield n, {"_key": key, **value}
        else:
            yield from enumerate(data, 1)
    elif reader == "csv":
        with path.open(encoding=ENCODING, newline="") as f:
            for lineno, row in enumerate(csv.reader(f), 1):
                yield lineno, {"_row": row}
    elif reader == "csv_header":
        with path.open(encoding=ENCODING, newline="") as f:
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
    with path.open(encoding=ENCODING) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
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


@dataclass
class SplitData:
    """A split as read: its samples, the file they came from, and the exact duplicate records found
    (pairs [first line, repeated line]); with `deduplicated` the repeats were dropped."""

    samples: list[Sample]
    where: str
    duplicates: list[list[int]] = field(default_factory=list)
    deduplicated: bool = False
    # a `url` source: its URL and the digests the file was verified with (VerifiedFile.record)
    remote: dict[str, Any] | None = None

    def record_extra(self) -> dict[str, Any]:
        """What a task's record says about the split: its duplicates (when there are any) and, for a
        file read from a URL, the URL and the sha256 it was verified with."""
        out: dict[str, Any] = {}
        if self.duplicates:
            out.update(duplicates=self.duplicates, duplicates_scored="once" if self.deduplicated else "both")
        if self.remote is not None:
            out["remote"] = self.remote
        return out


def describe_duplicates(pairs: list[list[int]]) -> str:
    """"lines 2 = 7, 4 = 9" (the first ten pairs)."""
    shown = ", ".join(f"{a} = {b}" for a, b in pairs[:10])
    return f"lines {shown}" + (f" and {len(pairs) - 10} more" if len(pairs) > 10 else "")


def _adapt(
    records: Iterator[tuple[int, Mapping[str, Any]]], record: str, options: Mapping[str, Any],
    where: str, dedup: bool = False,
) -> SplitData:
    """Adapt every record. Exact duplicate records (same content) are found by content; they are
    kept (with a unique id) unless `dedup`."""
    adapter = ADAPTERS.get(record)
    out: list[Sample] = []
    first_line: dict[str, int] = {}
    duplicates: list[list[int]] = []
    ids: set[str] = set()
    for index, (num, rec) in enumerate(records):
        content = json.dumps(rec, sort_keys=True, ensure_ascii=False, default=str)
        original = first_line.setdefault(content, num)
        repeat = original != num
        try:
            sample = adapter(rec, index, options)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise HarnessError(f"{where}: record {num}: {what} (adapter {record!r})") from None
        if sample is None:
            continue
        if repeat:
            duplicates.append([original, num])
            if dedup:
                continue
            if sample.id in ids:  # an id derived from the record's fields: keep ids unique
                sample = replace(sample, id=f"{sample.id}-line{num}")
        ids.add(sample.id)
        out.append(sample)
    return SplitData(out, where, duplicates, dedup and bool(duplicates))


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


def load_local(src: LocalSource, data_dir: Path, dedup: bool = False) -> list[Sample]:
    return read_local(src, data_dir, dedup).samples


def read_local(src: LocalSource, data_dir: Path, dedup: bool = False) -> SplitData:
    path = data_dir / src.path
    if not path.is_file():
        raise HarnessError(f"data file not found: {path} (check --data-dir)")
    data = _adapt(_iter_records(path, src.reader), src.record, src.options, str(path), dedup)
    data.samples = _apply_filter(data.samples, src.ids)
    return data


def load_hub(src: HubSource, dedup: bool = False) -> list[Sample]:
    return read_hub(src, dedup).samples


def read_hub(src: HubSource, dedup: bool = False) -> SplitData:
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
    data = _adapt(records, src.record, src.options, f"{src.path}[{src.split}]", dedup)
    data.samples = _apply_filter(data.samples, src.ids)
    return data


def read_url(src: UrlSource, dedup: bool = False, *, context: str, hint: str,
             allow_unpinned: bool | None = None) -> SplitData:
    """The pinned file at `src.url`, from the data cache (downloaded and verified first when needed),
    read with the same readers as a local file; the record carries the URL and its sha256."""
    file = fetch(src, context=context, hint=hint, allow_unpinned=allow_unpinned)
    data = _adapt(_iter_records(file.path, src.reader), src.record, src.options, src.url, dedup)
    data.samples = _apply_filter(data.samples, src.ids)
    data.remote = file.record()
    return data


def _url_hint(src: UrlSource, local: LocalSource | None) -> str:
    """How to get the file without the harness downloading it (one line)."""
    manual = f"download it by hand (curl -fL -o FILE {src.url})"
    if local is not None:
        return f"{manual} and pass --data-dir DIR with it at DIR/{local.path}, or save it as {cache_path(src.url)}"
    return f"{manual} and save it as {cache_path(src.url)}"


def _read_remote(spec: TaskSpec, split: str, sources: SplitSources, source: SourceKind, dedup: bool,
                 allow_unpinned: bool | None) -> SplitData:
    """`hub`: the split's hub source, else its url source; `url`: its url source."""
    if source == "hub" and sources.hub is not None:
        return read_hub(sources.hub, dedup)
    if sources.url is None:
        wanted = "hub or url" if source == "hub" else "url"
        raise HarnessError(f"task {spec.task!r} has no {wanted} source for split {split!r} "
                           "(use --data-dir DIR, or --data-source bundled for its bundled sample)")
    context = f"task {spec.task!r} ({spec.source_file}: splits.{split}.url)"
    return read_url(sources.url, dedup, context=context, hint=_url_hint(sources.url, sources.local),
                    allow_unpinned=allow_unpinned)


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


def load_split(spec: TaskSpec, split: str, source: SourceKind, data_dir: Path | None, *,
               dedup: bool = False, allow_unpinned: bool | None = None) -> list[Sample]:
    """The split's samples (see read_split)."""
    return read_split(spec, split, source, data_dir, dedup=dedup, allow_unpinned=allow_unpinned).samples


def read_split(spec: TaskSpec, split: str, source: SourceKind, data_dir: Path | None, *,
               dedup: bool = False, allow_unpinned: bool | None = None) -> SplitData:
    """The split's samples and what was found reading them. Exact duplicate records are warned
    about, naming their lines; they are both scored unless `dedup` (each scored once).
    `allow_unpinned`: read a `url` source that has no pin (default: $MEDLLM_HARNESS_ALLOW_UNPINNED)."""
    sources = spec.splits.get(split)
    if sources is None:
        raise ConfigError(f"task {spec.task!r} has no split {split!r}", file=spec.source_file)
    if source == "bundled":
        if sources.bundled is None:
            raise HarnessError(f"task {spec.task!r} ships no bundled samples for split {split!r}")
        where = str(tasks_dir() / "samples" / sources.bundled)
        data = SplitData(load_bundled(sources.bundled), where)
    elif source == "local":
        if sources.local is None:
            raise HarnessError(f"task {spec.task!r} has no local source for split {split!r}")
        if data_dir is None:
            raise HarnessError("local data needs --data-dir")
        data = read_local(sources.local, data_dir, dedup)
    else:
        data = _read_remote(spec, split, sources, source, dedup, allow_unpinned)
    if not data.samples:
        raise HarnessError(f"task {spec.task!r}: split {split!r} ({source}) holds no samples: {data.where}")
    seen: set[str] = set()
    for s in data.samples:
        if s.id in seen:
            raise HarnessError(f"task {spec.task!r}: duplicate sample id {s.id!r} in {split!r}")
        seen.add(s.id)
    if data.duplicates:
        action = ("each scored once (--dedup)" if data.deduplicated
                  else "both are scored (pass --dedup to score each once)")
        log.warning("task %s, split %s: %d exact duplicate record(s) in %s: %s; %s", spec.task, split,
                    len(data.duplicates), data.where, describe_duplicates(data.duplicates), action)
    return data
