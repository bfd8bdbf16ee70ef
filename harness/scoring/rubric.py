"""HealthBench rubric scoring, as upstream does it (openai/simple-evals `healthbench_eval.py`).

Per example: the points of the met items (a met negative item subtracts) over the sum of the
positive points; None where there are no positive points (`calculate_score`). A rubric-item tag
(`axis:*`, `level:*`, `cluster:*`) is scored the same way over the items carrying it; an example
tag (`theme:*`, `physician_agreed_category:*`) takes the example's score. Task score: the mean of
the per-example scores, clipped to [0, 1] *after* averaging (upstream `_compute_clipped_stats`
clips the mean, not each example), with a seeded bootstrap of that clipped mean (upstream reports
its standard deviation over 1,000 resamples; we add the percentile interval). Each tag is
averaged over the examples that carry it.

Beyond upstream: a grader reply that did not parse leaves its item *ungraded* (`met=None`). Such
an example is unscored, or, with `partial=True`, scored on its graded items only; it is never
read as "not met". An optional length-adjusted score (HealthBench Professional) is reported
beside the plain one. A jury of graders scores an example by the mean of its graders' scores
(`jury_example`).

Pure: no I/O; stdlib, numpy, harness.errors only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.errors import HarnessError

BOOTSTRAP_ROUNDS = 1000  # upstream's number of resamples
CONFIDENCE = 0.95
THEME_PREFIX = "theme:"
AXIS_PREFIX = "axis:"

# HealthBench Professional's length adjustment: a penalty per 500 characters of response above
# 2,000. The constant 0.0147 is the one a public re-implementation (medicalsphere/HealthBench,
# README) quotes from Section 4.1 of the paper; we could not read the paper's text itself, so it
# is a parameter (LengthPenalty) and recorded with the score.
LENGTH_CENTER_CHARS = 2000
LENGTH_STEP_CHARS = 500
LENGTH_PENALTY_PER_STEP = 0.0147


@dataclass(frozen=True)
class RubricItem:
    """One criterion with signed points. `str()` is upstream's rendering for the grader."""

    criterion: str
    points: float
    tags: tuple[str, ...] = ()

    def __str__(self) -> str:
        points = int(self.points) if float(self.points).is_integer() else self.points
        return f"[{points}] {self.criterion}"

    def to_json(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "points": self.points, "tags": list(self.tags)}


def parse_rubric_items(data: Any, where: str) -> tuple[RubricItem, ...]:
    """Upstream's `rubrics` list (each {criterion, points, tags}) checked strictly; errors name
    `where` (e.g. "file.jsonl:12") and the item."""
    if not isinstance(data, list) or not data:
        raise HarnessError(f"{where}: rubrics: expected a non-empty list, got {data!r:.80}")
    items = []
    for k, raw in enumerate(data):
        at = f"{where}: rubrics[{k}]"
        if not isinstance(raw, Mapping):
            raise HarnessError(f"{at}: expected an object, got {raw!r:.80}")
        unknown = sorted(set(raw) - {"criterion", "points", "tags"})
        if unknown:
            raise HarnessError(f"{at}: unknown key(s) {', '.join(unknown)}")
        criterion, points, tags = raw.get("criterion"), raw.get("points"), raw.get("tags", [])
        if not isinstance(criterion, str) or not criterion.strip():
            raise HarnessError(f"{at}: criterion: expected a non-empty string, got {criterion!r:.80}")
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points):
            raise HarnessError(f"{at}: points: expected a number, got {points!r}")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise HarnessError(f"{at}: tags: expected a list of strings, got {tags!r:.80}")
        if len(set(tags)) != len(tags):
            raise HarnessError(f"{at}: tags: duplicate tag in {tags!r}")
        items.append(RubricItem(criterion, float(points), tuple(tags)))
    return tuple(items)


def points_score(items: Sequence[RubricItem], met: Sequence[bool]) -> float | None:
    """Upstream `calculate_score`: achieved points over the positive points; None without any."""
    if len(items) != len(met):
        raise ValueError(f"{len(items)} rubric items but {len(met)} grades")
    possible = math.fsum(i.points for i in items if i.points > 0)
    if possible == 0:
        return None
    return math.fsum(i.points for i, m in zip(items, met, strict=True) if m) / possible


@dataclass(frozen=True)
class ExampleScore:
    """One example's grades, scored. `score` None = unscored (`reason` says why); `tag_scores`
    holds every example tag and every rubric-item tag that has a positive item among the
    graded ones."""

    score: float | None
    tag_scores: Mapping[str, float]
    n_items: int
    n_ungraded: int
    reason: str | None = None
    example_tags: tuple[str, ...] = ()
    item_tags: tuple[str, ...] = ()  # every tag on the example's items, graded or not
    response_chars: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "tag_scores": dict(self.tag_scores), "n_items": self.n_items,
                "n_ungraded": self.n_ungraded, "reason": self.reason, "response_chars": self.response_chars}


def score_example(items: Sequence[RubricItem], met: Sequence[bool | None], example_tags: Sequence[str] = (), *,
                  partial: bool = False, response_chars: int | None = None) -> ExampleScore:
    """Score one graded example. `met[k]` is the grader's decision on item k, None = ungraded.
    Without `partial` an ungraded item leaves the example unscored; with it, the example is
    scored on its graded items (and unscored when none of those carries positive points)."""
    if len(items) != len(met):
        raise ValueError(f"{len(items)} rubric items but {len(met)} grades")
    if len(set(example_tags)) != len(example_tags):
        raise ValueError(f"duplicate example tag in {list(example_tags)!r}")
    n_ungraded = sum(m is None for m in met)
    item_tags = tuple(dict.fromkeys(t for i in items for t in i.tags))

    def result(score: float | None, tag_scores: Mapping[str, float], reason: str | None = None) -> ExampleScore:
        return ExampleScore(score, tag_scores, len(items), n_ungraded, reason, tuple(example_tags), item_tags,
                            response_chars)

    if n_ungraded and not partial:
        return result(None, {}, f"{n_ungraded} of {len(items)} rubric items ungraded")
    graded = [(i, m) for i, m in zip(items, met, strict=True) if m is not None]
    overall = points_score([i for i, _ in graded], [m for _, m in graded])
    if overall is None:
        return result(None, {}, "no graded item with positive points" if n_ungraded
                      else "no rubric item with positive points")
    tags: dict[str, float] = {t: overall for t in example_tags}
    for tag in dict.fromkeys(t for i, _ in graded for t in i.tags):
        carrying = [(i, m) for i, m in graded if tag in i.tags]
        value = points_score([i for i, _ in carrying], [m for _, m in carrying])
        if value is not None:  # upstream drops a tag without positive points
            tags[tag] = value
    return result(overall, tags)


def jury_example(graders: Mapping[str, ExampleScore], *, partial: bool = False) -> ExampleScore:
    """One example scored by a jury of graders (name -> that grader's ExampleScore of it): the mean
    of the graders' scores. Each grader's score is linear in its decisions over the same positive
    points, so with every item graded this is the score of the mean decision per item. Without
    `partial`, an example any grader left unscored is unscored (its reason names the grader);
    with it, the mean over the graders that scored it. A tag takes the mean of the graders that
    have a value for it. Counts (items, ungraded) are summed over graders: item decisions."""
    if not graders:
        raise ValueError("a jury needs at least one grader")
    first = next(iter(graders.values()))
    scored = {name: ex for name, ex in graders.items() if ex.score is not None}
    unscored = [f"{name}: {ex.reason or 'unscored'}" for name, ex in graders.items() if ex.score is None]

    def result(score: float | None, tag_scores: Mapping[str, float], reason: str | None) -> ExampleScore:
        return ExampleScore(score, tag_scores, sum(ex.n_items for ex in graders.values()),
                            sum(ex.n_ungraded for ex in graders.values()), reason, first.example_tags,
                            first.item_tags, first.response_chars)

    if not scored or (unscored and not partial):
        return result(None, {}, "; ".join(unscored))
    tags: dict[str, float] = {}
    for tag in dict.fromkeys(t for ex in scored.values() for t in ex.tag_scores):
        values = [ex.tag_scores[tag] for ex in scored.values() if tag in ex.tag_scores]
        tags[tag] = math.fsum(values) / len(values)
    score = math.fsum(ex.score for ex in scored.values() if ex.score is not None) / len(scored)
    return result(score, tags, None)


def tag_value(ex: ExampleScore, tag: str) -> tuple[bool, float | None]:
    """(applies, value) of an example for a tag it carries: (True, score); (True, None) when the
    example is unscored; (False, None) when it is scored but no graded item with the tag has
    positive points (upstream leaves such an example out of the tag's mean)."""
    if ex.score is None:
        return True, None
    value = ex.tag_scores.get(tag)
    return value is not None, value


@dataclass(frozen=True)
class ClippedMean:
    """The clipped mean of per-example values with its seeded bootstrap (clipped means of the
    resamples): percentile interval and standard deviation (upstream's `bootstrap_std`)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    bootstrap_std: float | None
    n_scored: int
    n_unscored: int
    unclipped: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci": [self.ci_low, self.ci_high], "bootstrap_std": self.bootstrap_std,
                "n_scored": self.n_scored, "n_unscored": self.n_unscored, "unclipped_mean": self.unclipped,
                "confidence": CONFIDENCE, "ci_method": "bootstrap-clipped-mean"}


def clipped_mean(values: Sequence[float | None], *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
                 confidence: float = CONFIDENCE) -> ClippedMean:
    """mean clipped to [0, 1]; bootstrap resamples the scored values with replacement (seeded)."""
    scored = np.array([v for v in values if v is not None], dtype=np.float64)
    n_unscored = len(values) - len(scored)
    if not len(scored):
        return ClippedMean(None, None, None, None, 0, n_unscored)
    raw = float(np.mean(scored))
    point = float(np.clip(raw, 0.0, 1.0))
    rng = np.random.default_rng(seed)
    means = np.empty(rounds)
    step = max(1, 2_000_000 // len(scored))  # bound memory: resample in blocks
    for start in range(0, rounds, step):
        stop = min(rounds, start + step)
        idx = rng.integers(0, len(scored), size=(stop - start, len(scored)))
        means[start:stop] = scored[idx].mean(axis=1)
    means = np.clip(means, 0.0, 1.0)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return ClippedMean(point, float(low), float(high), float(np.std(means)), len(scored), n_unscored, raw)


@dataclass(frozen=True)
class LengthPenalty:
    """score - per_step * (characters above `center`) / `step`; `stepwise` counts only whole steps."""

    center: int = LENGTH_CENTER_CHARS
    step: int = LENGTH_STEP_CHARS
    per_step: float = LENGTH_PENALTY_PER_STEP
    stepwise: bool = False

    def __call__(self, n_chars: int) -> float:
        over = max(0, n_chars - self.center) / self.step
        return self.per_step * (math.floor(over) if self.stepwise else over)

    def to_json(self) -> dict[str, Any]:
        return {"center_chars": self.center, "step_chars": self.step, "penalty_per_step": self.per_step,
                "stepwise": self.stepwise}


@dataclass(frozen=True)
class RubricSummary:
    overall: ClippedMean
    by_theme: dict[str, ClippedMean]  # theme name (without "theme:") -> score
    by_axis: dict[str, ClippedMean]  # axis name (without "axis:") -> score
    by_tag: dict[str, ClippedMean]  # every tag, full name
    n_examples: int
    n_items: int
    n_ungraded_items: int
    n_examples_with_ungraded: int
    partial: bool
    length_adjusted: ClippedMean | None = None
    length_penalty: LengthPenalty | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_json(),
            "by_theme": {k: v.to_json() for k, v in self.by_theme.items()},
            "by_axis": {k: v.to_json() for k, v in self.by_axis.items()},
            "by_tag": {k: v.to_json() for k, v in self.by_tag.items()},
            "n_examples": self.n_examples, "n_items": self.n_items, "n_ungraded_items": self.n_ungraded_items,
            "n_examples_with_ungraded": self.n_examples_with_ungraded, "partial": self.partial,
            "length_adjusted": self.length_adjusted.to_json() if self.length_adjusted else None,
            "length_penalty": self.length_penalty.to_json() if self.length_penalty else None,
        }


def summarize(examples: Sequence[ExampleScore], *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
              length_penalty: LengthPenalty | None = None, partial: bool = False) -> RubricSummary:
    """Task score and breakdowns. Each tag averages the examples it has a value for; an
    unscored example carrying the tag counts as unscored for it; a scored example whose items
    with the tag have no positive points has no value for it and is left out (as upstream)."""
    tags: dict[str, list[float | None]] = {}
    for ex in examples:
        for tag in dict.fromkeys((*ex.example_tags, *ex.item_tags)):
            applies, value = tag_value(ex, tag)
            if applies:
                tags.setdefault(tag, []).append(value)
    by_tag = {t: clipped_mean(v, rounds=rounds, seed=seed) for t, v in sorted(tags.items())}
    adjusted = None
    if length_penalty is not None:
        values: list[float | None] = []
        for ex in examples:
            if ex.score is not None and ex.response_chars is None:
                raise ValueError("a length-adjusted score needs every scored example's response length")
            values.append(None if ex.score is None else ex.score - length_penalty(ex.response_chars or 0))
        adjusted = clipped_mean(values, rounds=rounds, seed=seed)
    return RubricSummary(
        overall=clipped_mean([ex.score for ex in examples], rounds=rounds, seed=seed),
        by_theme={t.removeprefix(THEME_PREFIX): v for t, v in by_tag.items() if t.startswith(THEME_PREFIX)},
        by_axis={t.removeprefix(AXIS_PREFIX): v for t, v in by_tag.items() if t.startswith(AXIS_PREFIX)},
        by_tag=by_tag, n_examples=len(examples), n_items=sum(ex.n_items for ex in examples),
        n_ungraded_items=sum(ex.n_ungraded for ex in examples),
        n_examples_with_ungraded=sum(ex.n_ungraded > 0 for ex in examples), partial=partial,
        length_adjusted=adjusted, length_penalty=length_penalty,
        details={"bootstrap_rounds": rounds, "seed": seed},
    )
