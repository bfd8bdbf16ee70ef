"""Is a test item in the train data? The guard of `--protocol sft`, run before any training.

It reuses the trainers' leakage check (trainers.data.leakage: Apollo's 64-character substrings
and lm-eval's 13-word n-grams, hashed and indexed) in the other direction: the task's train items
are indexed, and each test item asks which train item holds at least `min_coverage` of its
windows. Texts are the task's prompt text of the item (`format.text`: question and options, the
sentence, the abstract), not the instruction or JSON scaffolding every item shares. A test item
whose normalised text equals a train item's is in the train data whatever its length (texts
shorter than one window have no windows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.protocols.formats import PromptFormat
from harness.types import Sample
from trainers.task_sft.recipe import LeakageGuard

MAX_EXAMPLES = 20


@dataclass(frozen=True)
class Leak:
    test_id: str
    train_id: str
    how: str  # identical | chars | ngram

    def to_json(self) -> dict[str, str]:
        return {"test": self.test_id, "train": self.train_id, "how": self.how}


@dataclass
class LeakReport:
    n_test: int
    n_train: int
    leaks: list[Leak] = field(default_factory=list)

    @property
    def test_ids(self) -> list[str]:
        return list(dict.fromkeys(leak.test_id for leak in self.leaks))

    @property
    def train_ids(self) -> set[str]:
        return {leak.train_id for leak in self.leaks}

    def to_json(self, guard: LeakageGuard) -> dict[str, Any]:
        return {"test_items_checked": self.n_test, "train_items": self.n_train,
                "test_items_in_train": len(self.test_ids), "train_items_holding_them": len(self.train_ids),
                "examples": [leak.to_json() for leak in self.leaks[:MAX_EXAMPLES]],
                "guard": guard.model_dump(mode="json")}


def item_text(fmt: PromptFormat, sample: Sample) -> str:
    """The item's own text in the task's prompt (no instruction, no answer)."""
    try:
        return fmt.text(sample)
    except (NotImplementedError, TypeError, KeyError):
        from trainers.data.leakage import sample_texts

        return "\n".join(sample_texts(replace(sample, target=None)))


def _distinct_windows(text: str, guard: LeakageGuard) -> tuple[int, int]:
    from trainers.data.leakage import char_normalise, janitor_words

    chars = char_normalise(text)
    words = janitor_words(text)
    n_chars = len({chars[i:i + guard.chars] for i in range(len(chars) - guard.chars + 1)})
    n_grams = len({" ".join(words[i:i + guard.ngram]) for i in range(len(words) - guard.ngram + 1)})
    return n_chars, n_grams


def find_leaks(fmt: PromptFormat, train: Sequence[Sample], test: Sequence[Sample],
               guard: LeakageGuard) -> LeakReport:
    """Every (test item, train item) pair where the train item holds the test item."""
    from trainers.data.leakage import LeakageIndex, char_normalise

    texts = [(s.id, item_text(fmt, s)) for s in train]
    index = LeakageIndex.build((("train", Sample(s_id, text)) for s_id, text in texts), guard.chars, guard.ngram)
    identical: dict[str, list[str]] = {}
    for s_id, text in texts:
        identical.setdefault(char_normalise(text), []).append(s_id)
    report = LeakReport(len(test), len(train))
    for s in test:
        text = item_text(fmt, s)
        found = {t: "identical" for t in identical.get(char_normalise(text), [])}
        for how, n_windows in zip(("chars", "ngram"), _distinct_windows(text, guard), strict=True):
            if n_windows:
                need = max(1, math.ceil(guard.min_coverage * n_windows))
                for item in replace(index, min_matches=need).check(text).get(how, []):
                    found.setdefault(item.sample_id, how)
        report.leaks.extend(Leak(s.id, train_id, how) for train_id, how in found.items())
    return report
