"""Leakage check: does a training record overlap any harness task's test split?

Two tests, both as the literature runs them:
- Apollo: a shared substring of 64 characters (after lower-casing and collapsing white space);
- lm-eval's decontamination (lm_eval/decontamination/janitor.py): a shared 13-gram of words
  after lower-casing ASCII letters and deleting ASCII punctuation.
The test side is indexed once as sorted 64-bit hashes of every window (numpy), so a check costs
one hash per window of the training text. Python's str hash is salted per process, which is
fine: the index lives only as long as the process.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.types import Sample
from trainers.data.config import LeakageSpec

log = logging.getLogger(__name__)

_SPACE = re.compile(r"\s+")
# lm-eval's Janitor: ASCII upper -> lower, string.punctuation deleted, split on white space
_JANITOR_TABLE = str.maketrans(string.ascii_lowercase + string.ascii_uppercase, string.ascii_lowercase * 2,
                               string.punctuation)


def char_normalise(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def janitor_words(text: str) -> list[str]:
    return text.translate(_JANITOR_TABLE).split()


def _char_hashes(text: str, n: int) -> np.ndarray:
    t = char_normalise(text)
    count = len(t) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    return np.fromiter((hash(t[i:i + n]) for i in range(count)), dtype=np.int64, count=count)


def _ngram_hashes(text: str, n: int) -> np.ndarray:
    words = janitor_words(text)
    count = len(words) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    return np.fromiter((hash(" ".join(words[i:i + n])) for i in range(count)), dtype=np.int64, count=count)


def sample_texts(sample: Sample) -> list[str]:
    """Every text of a test item a model could have memorised: question, options, a text answer,
    and string metadata (PubMedQA's abstracts, reference notes)."""
    out = [sample.input] if isinstance(sample.input, str) else [m.content for m in sample.input]
    out.extend(sample.choices)
    if isinstance(sample.target, str):
        out.append(sample.target)
    for value in sample.metadata.values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(v for v in value if isinstance(v, str))
    return [t for t in out if t]


@dataclass(frozen=True)
class EvalItem:
    task: str
    sample_id: str


class _HashIndex:
    def __init__(self, hashes: list[np.ndarray], owners: list[int]):
        sizes = [len(h) for h in hashes]
        all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.int64)
        all_owners = np.repeat(np.asarray(owners, dtype=np.int32), sizes)
        order = np.argsort(all_hashes, kind="stable")
        self.hashes = all_hashes[order]
        self.owners = all_owners[order]

    def __len__(self) -> int:
        return len(self.hashes)

    def owners_of(self, query: np.ndarray, min_matches: int = 1) -> set[int]:
        """Test items sharing at least `min_matches` distinct windows with the query."""
        if len(query) == 0 or len(self.hashes) == 0:
            return set()
        query = np.unique(query)
        lo = np.searchsorted(self.hashes, query, side="left")
        hi = np.searchsorted(self.hashes, query, side="right")
        found = hi > lo
        if not found.any():
            return set()
        # every (window, item) pair once: a window can recur within one item
        owners = np.concatenate([np.unique(self.owners[a:b]) for a, b in zip(lo[found], hi[found], strict=True)])
        items, counts = np.unique(owners, return_counts=True)
        return set(items[counts >= min_matches].tolist())


@dataclass
class LeakageIndex:
    """The windows of every test item. `check(text)` names the test items a text overlaps."""

    items: list[EvalItem]
    chars: int
    ngram: int
    min_matches: int
    by_chars: _HashIndex
    by_ngram: _HashIndex
    tasks: dict[str, int] = field(default_factory=dict)  # task -> items indexed
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why no test data

    @classmethod
    def build(cls, samples: Iterable[tuple[str, Sample]], chars: int = 64, ngram: int = 13,
              min_matches: int = 1) -> LeakageIndex:
        items: list[EvalItem] = []
        char_h: list[np.ndarray] = []
        gram_h: list[np.ndarray] = []
        owners: list[int] = []
        tasks: dict[str, int] = {}
        for task, sample in samples:
            owner = len(items)
            items.append(EvalItem(task, sample.id))
            tasks[task] = tasks.get(task, 0) + 1
            for text in sample_texts(sample):
                char_h.append(_char_hashes(text, chars))
                gram_h.append(_ngram_hashes(text, ngram))
                owners.append(owner)
        return cls(items, chars, ngram, min_matches, _HashIndex(char_h, owners), _HashIndex(gram_h, owners), tasks)

    def check(self, text: str) -> dict[str, list[EvalItem]]:
        """{"chars": [...], "ngram": [...]}: the test items `text` overlaps, per test (sorted)."""
        out: dict[str, list[EvalItem]] = {}
        by_chars = self.by_chars.owners_of(_char_hashes(text, self.chars), self.min_matches)
        if by_chars:
            out["chars"] = [self.items[i] for i in sorted(by_chars)]
        by_ngram = self.by_ngram.owners_of(_ngram_hashes(text, self.ngram), self.min_matches)
        if by_ngram:
            out["ngram"] = [self.items[i] for i in sorted(by_ngram)]
        return out


def eval_samples(spec: LeakageSpec, data_dir: Path | None) -> tuple[list[tuple[str, Sample]], dict[str, str]]:
    """The eval split of every harness task (or of `spec.tasks`), loaded through the harness:
    local files when a data folder is given (source auto/local), else the bundled samples."""
    from harness.data.sources import load_split
    from harness.run.catalog import load_catalog

    catalog = load_catalog()
    names = spec.tasks if spec.tasks is not None else sorted(catalog.tasks)
    out: list[tuple[str, Sample]] = []
    skipped: dict[str, str] = {}
    for name in names:
        task = catalog.task(name)
        sources = task.splits[task.eval_split]
        kinds: Sequence[str]
        if spec.source == "auto":
            kinds = ("local", "bundled") if data_dir is not None else ("bundled",)
        else:
            kinds = (spec.source,)
        for kind in kinds:
            if getattr(sources, kind) is None:
                continue
            try:
                samples = load_split(task, task.eval_split, kind, data_dir)  # type: ignore[arg-type]
            except HarnessError as exc:
                skipped[name] = f"{kind}: {exc}"
                continue
            out.extend((name, s) for s in samples)
            skipped.pop(name, None)
            break
        else:
            skipped.setdefault(name, f"no {'/'.join(kinds)} source for split {task.eval_split!r}")
    if not out:
        raise HarnessError(f"leakage check: no test data could be loaded ({'; '.join(skipped.values())})")
    return out, skipped


def build_index(spec: LeakageSpec, data_dir: Path | None) -> LeakageIndex:
    samples, skipped = eval_samples(spec, data_dir)
    index = LeakageIndex.build(samples, spec.chars, spec.ngram, spec.min_matches)
    index.skipped = skipped
    log.info("leakage index: %d test items of %d tasks, %d char windows, %d n-grams",
             len(index.items), len(index.tasks), len(index.by_chars), len(index.by_ngram))
    return index
