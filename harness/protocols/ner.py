"""Named-entity recognition as generation (NCBI-disease, BC5CDR).

- Adapter `conll_ner`: one CoNLL sentence (tokens + BIO tags) -> a Sample whose input is the
  tokens joined by single spaces; gold entities become character spans [start, end, type, text].
  The task's entity types come from the adapter option `entity_types` and travel in each
  sample's metadata, so a new NER set needs only YAML.
- Protocol `ner`: a chat asking for a JSON list of {"text", "type"} (few-shot exemplars as
  earlier turns); the reply's first JSON list is mapped back onto the sentence. No list in the
  reply -> unscored.
- Metrics: entity-level micro precision / recall / F1, strict (same span and type) and lenient
  (overlapping span, same type, one-to-one), with a seeded percentile bootstrap over sentences.

The span logic is written here because seqeval (a test-only dependency) scores token tag
sequences, not character spans found in free text; tests check our numbers against it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.data.adapters import ADAPTERS
from harness.protocols.base import PROTOCOLS, PromptContext, Protocol, select_fewshot
from harness.protocols.formats import FORMATS, PromptFormat
from harness.scoring.intervals import MetricValue, bootstrap_stat
from harness.scoring.metrics import METRICS
from harness.types import (
    GenerationConfig,
    GenerationRequest,
    GenerationResult,
    Message,
    Request,
    RequestKind,
    Sample,
    Score,
)

Span = tuple[int, int, str]  # start, end (exclusive), entity type
Mode = Literal["strict", "lenient"]
MODES: tuple[Mode, ...] = ("strict", "lenient")

_TAG = re.compile(r"(B|I)-(\S+)")


# --- gold: BIO tags -> character spans ---------------------------------------------------


def bio_token_spans(tags: Sequence[str]) -> list[Span]:
    """Token spans [start, end) of the entities in BIO `tags`, read as conlleval does: an I- tag
    that does not continue an entity of its type starts a new one. Hand-written so that each
    malformed tag is named (seqeval's get_entities warns and guesses)."""
    spans: list[Span] = []
    start, kind = -1, ""
    for k, tag in enumerate(tags):
        if tag == "O":
            match = None
        else:
            match = _TAG.fullmatch(tag)
            if match is None:
                raise ValueError(f"tag {tag!r} of token {k + 1} is not O, B-<type> or I-<type>")
        if kind and (match is None or match[1] == "B" or match[2] != kind):
            spans.append((start, k, kind))
            kind = ""
        if match is not None and not kind:
            start, kind = k, match[2]
    if kind:
        spans.append((start, len(tags), kind))
    return spans


def join_tokens(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The tokens joined by single spaces, and each token's [start, end) character offsets."""
    offsets: list[tuple[int, int]] = []
    pos = 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return " ".join(tokens), offsets


def tags_to_entities(tokens: Sequence[str], tags: Sequence[str]) -> list[list[Any]]:
    """[start, end, type, text] character spans of the entities in one tagged sentence."""
    text, offsets = join_tokens(tokens)
    out: list[list[Any]] = []
    for a, b, kind in bio_token_spans(tags):
        start, end = offsets[a][0], offsets[b - 1][1]
        out.append([start, end, kind, text[start:end]])
    return out


def entities_json(entities: Sequence[Sequence[Any]]) -> str:
    """The answer a perfect model gives: what exemplars show and what `target` holds."""
    return json.dumps([{"text": e[3], "type": e[2]} for e in entities], ensure_ascii=False)


@ADAPTERS.register("conll_ner")
def conll_ner(rec: Mapping[str, Any], i: int, opts: Mapping[str, Any]) -> Sample:
    """One CoNLL sentence {"tokens", "tags"} -> Sample. Options: `entity_types` (required, the
    task's types; a tag of another type is an error) and `id_prefix`."""
    types = opts.get("entity_types")
    if not types or not all(isinstance(t, str) for t in types):
        raise ValueError("adapter option entity_types (a list of type names) is required")
    tokens, tags = list(rec["tokens"]), list(rec["tags"])
    if len(tokens) != len(tags) or not tokens:
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    if any(not tok or tok != tok.strip() for tok in tokens):
        raise ValueError("empty token, or a token with surrounding whitespace")
    entities = tags_to_entities(tokens, tags)
    unknown = sorted({e[2] for e in entities} - set(types))
    if unknown:
        raise ValueError(f"entity types {unknown} are not in entity_types {list(types)}")
    text, offsets = join_tokens(tokens)
    return Sample(
        id=f"{opts.get('id_prefix', 'ner')}-{i:05d}",
        input=text,
        target=entities_json(entities),
        metadata={
            "tokens": tokens, "tags": tags, "offsets": [list(o) for o in offsets],
            "entities": entities, "entity_types": list(types),
        },
    )


# --- the model's reply -> predicted spans --------------------------------------------------


def parse_entity_list(reply: str) -> list[Any] | None:
    """The first JSON array in `reply` (bare, fenced or inside prose) whose items are all
    objects; else the first array that parses at all; None when there is none."""
    decoder = json.JSONDecoder()
    first: list[Any] | None = None
    for match in re.finditer(r"\[", reply):
        try:
            value, _ = decoder.raw_decode(reply, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, list):
            if all(isinstance(x, dict) for x in value):
                return value
            if first is None:
                first = value
    return first


def _occurrences(text: str, mention: str, bounds: tuple[set[int], set[int]] | None) -> list[tuple[int, int]]:
    """Where `mention` occurs, in order of preference: exact then case-insensitive matches on
    token boundaries (so "all" finds "ALL", not the inside of "small"), then exact and
    case-insensitive matches anywhere; each tier left to right."""
    exact, folded = ([(m.start(), m.end()) for m in re.finditer(re.escape(mention), text, flags)]
                     for flags in (0, re.IGNORECASE))
    if bounds is None:
        tiers = [exact, folded]
    else:
        aligned = [[h for h in hits if h[0] in bounds[0] and h[1] in bounds[1]] for hits in (exact, folded)]
        tiers = [*aligned, exact, folded]
    return list(dict.fromkeys(h for tier in tiers for h in tier))


@dataclass(frozen=True)
class Prediction:
    """One item of the reply. status: ok (mapped to `span`), unknown_type, invalid (not an
    object with a non-empty text), hallucinated (text not in the sentence) or repeated (more
    mentions than occurrences). Everything but ok is a false positive without a span."""

    text: str | None
    type: str | None
    status: str
    span: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "type": self.type, "status": self.status,
                "span": list(self.span) if self.span else None}


def map_predictions(sample: Sample, items: Sequence[Any]) -> list[Prediction]:
    """Map reply items onto the sentence (results in reply order). Type names match
    case-insensitively. Repeated mentions of a type take successive occurrences. Gold entities
    are flat (BIO cannot nest them), so longer mentions are placed first and a mention prefers
    an occurrence that overlaps no span placed before it: "sulfamethoxazole" then finds the
    standalone drug, not the tail of an already listed "trimethoprim - sulfamethoxazole"."""
    text = str(sample.input)
    types = {t.casefold(): t for t in sample.metadata["entity_types"]}
    offsets = sample.metadata.get("offsets")
    bounds = ({int(o[0]) for o in offsets}, {int(o[1]) for o in offsets}) if offsets else None
    out: list[Prediction | None] = [None] * len(items)
    typed: list[tuple[int, str, str]] = []
    for k, item in enumerate(items):
        raw_text = item.get("text") if isinstance(item, dict) else None
        raw_type = item.get("type") if isinstance(item, dict) else None
        mention = raw_text.strip() if isinstance(raw_text, str) else ""
        kind = types.get(raw_type.strip().casefold()) if isinstance(raw_type, str) else None
        shown_type = raw_type if isinstance(raw_type, str) else None
        if not mention:
            out[k] = Prediction(raw_text if isinstance(raw_text, str) else None, shown_type, "invalid")
        elif kind is None:
            out[k] = Prediction(mention, shown_type, "unknown_type")
        else:
            typed.append((k, mention, kind))
    placed: set[tuple[int, int, str]] = set()
    for k, mention, kind in sorted(typed, key=lambda t: -len(t[1])):  # stable: reply order within a length
        hits = _occurrences(text, mention, bounds)
        free = [h for h in hits if (*h, kind) not in placed]
        free.sort(key=lambda h: any(a < h[1] and h[0] < b for a, b, _ in placed))  # stable
        if free:
            placed.add((*free[0], kind))
            out[k] = Prediction(mention, kind, "ok", free[0])
        else:
            out[k] = Prediction(mention, kind, "repeated" if hits else "hallucinated")
    return [p for p in out if p is not None]


# --- matching and counts -------------------------------------------------------------------


def _max_overlap_matches(gold: Sequence[Span], pred: Sequence[Span]) -> int:
    """Largest one-to-one pairing of overlapping spans (a maximum bipartite matching, so one
    prediction spanning two gold entities cannot steal the only match of another)."""
    if not gold or not pred:
        return 0
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    overlap = np.array([[g[0] < p[1] and p[0] < g[1] for p in pred] for g in gold], dtype=float)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return int(overlap[rows, cols].sum())


def match_counts(
    gold: Sequence[Span], pred: Sequence[Span], types: Sequence[str],
    unmapped: Mapping[str, int] | None = None,
) -> dict[str, dict[str, list[int]]]:
    """Per mode and type, [tp, fp, fn]. `pred` holds mapped predictions (one per span and
    type); `unmapped` counts typed predictions without a span (false positives)."""
    unmapped = unmapped or {}
    out: dict[str, dict[str, list[int]]] = {m: {} for m in MODES}
    for kind in types:
        g = [s for s in gold if s[2] == kind]
        p = [s for s in pred if s[2] == kind]
        extra = unmapped.get(kind, 0)
        for mode in MODES:
            tp = len(set(g) & set(p)) if mode == "strict" else _max_overlap_matches(g, p)
            out[mode][kind] = [tp, len(p) - tp + extra, len(g) - tp]
    return out


def sentence_f1(counts: Mapping[str, Sequence[int]], untyped_fp: int) -> float:
    tp = sum(c[0] for c in counts.values())
    fp = sum(c[1] for c in counts.values()) + untyped_fp
    fn = sum(c[2] for c in counts.values())
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def score_reply(sample: Sample, reply: str) -> Score:
    """Score one reply against the sample's gold entities."""
    items = parse_entity_list(reply)
    if items is None:
        return Score(None, explanation="no JSON list found in the reply", metadata={"output": reply})
    types: list[str] = list(sample.metadata["entity_types"])
    gold: list[Span] = [(int(e[0]), int(e[1]), str(e[2])) for e in sample.metadata["entities"]]
    preds = map_predictions(sample, items)
    mapped = [(p.span[0], p.span[1], p.type) for p in preds if p.span is not None and p.type]
    unmapped: dict[str, int] = {}
    for p in preds:
        if p.status in ("hallucinated", "repeated") and p.type:
            unmapped[p.type] = unmapped.get(p.type, 0) + 1
    untyped = sum(p.status in ("invalid", "unknown_type") for p in preds)
    counts = match_counts(gold, mapped, types, unmapped)
    statuses = [p.status for p in preds]
    return Score(
        value=sentence_f1(counts["strict"], untyped),
        answer=json.dumps([{"text": p.text, "type": p.type} for p in preds if p.span], ensure_ascii=False),
        metadata={
            "output": reply,
            "parsed": items,
            "predictions": [p.to_json() for p in preds],
            "gold": [list(e) for e in sample.metadata["entities"]],
            "hallucinated": statuses.count("hallucinated"),
            "repeated": statuses.count("repeated"),
            "unknown_type": statuses.count("unknown_type"),
            "invalid": statuses.count("invalid"),
            "counts": {**counts, "untyped_fp": untyped},
        },
    )


# --- prompt format and protocol ------------------------------------------------------------


class NERFormat(PromptFormat):
    def text(self, sample: Sample) -> str:
        return f"Sentence: {sample.input}"


NER_FORMAT = NERFormat("ner", lettered=False)

DEFAULT_INSTRUCTION = (
    "Find every {types} mention in the sentence. Answer with a JSON list of objects "
    '{"text": ..., "type": ...}, one per mention, in order: "text" copied exactly from the '
    'sentence, "type" one of: {type_list}. Answer [] if there is none.'
)


def _types_phrase(types: Sequence[str]) -> str:
    names = [t.lower() for t in types]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class NERProtocol(Protocol):
    name = "ner"
    kind = RequestKind.GENERATE
    metrics = (
        "ner_f1_strict", "ner_precision_strict", "ner_recall_strict",
        "ner_f1_lenient", "ner_precision_lenient", "ner_recall_lenient",
    )

    def prompt(self, sample: Sample, ctx: PromptContext) -> str:
        """One user turn: the instruction and the sentence."""
        types = list(sample.metadata["entity_types"])
        template = ctx.options.instruction or DEFAULT_INSTRUCTION
        # str.replace, not str.format: the instruction itself shows JSON braces.
        instruction = template.replace("{types}", _types_phrase(types)).replace("{type_list}", ", ".join(types))
        return f"{instruction}\n\n{ctx.format.text(sample)}"

    def messages(self, sample: Sample, ctx: PromptContext) -> tuple[Message, ...]:
        """Exemplars are earlier turns answered with their gold JSON, not text inside one
        message: on the same 8 BC5CDR sentences (3-shot) the default model answered 0 with a
        JSON list that way (it wrote bare objects) and 7 as chat turns."""
        out = [Message("system", ctx.options.system)] if ctx.options.system else []
        for shot in select_fewshot(sample, ctx):
            out += [Message("user", self.prompt(shot, ctx)),
                    Message("assistant", entities_json(shot.metadata["entities"]))]
        out.append(Message("user", self.prompt(sample, ctx)))
        return tuple(out)

    def requests(self, sample: Sample, ctx: PromptContext) -> list[Request]:
        # A reply never needs a next "Sentence:"; stopping there cuts imitated exemplars short.
        config = GenerationConfig(max_tokens=ctx.options.max_tokens, temperature=0.0, stop=("\nSentence:",))
        return [GenerationRequest(messages=self.messages(sample, ctx), config=config)]

    def score(self, sample: Sample, results: Sequence[Any], ctx: PromptContext) -> Score:
        (result,) = results
        assert isinstance(result, GenerationResult)
        return score_reply(sample, result.text)


NER_PROTOCOL = NERProtocol()


# --- corpus metrics ------------------------------------------------------------------------

Stat = Literal["precision", "recall", "f1"]


def _prf(tp: Any, fp: Any, fn: Any, stat: Stat) -> Any:
    """Vectorised P / R / F1 (0 where undefined, as seqeval's zero_division default)."""
    import numpy as np

    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    num = 2 * tp if stat == "f1" else tp
    den = {"precision": tp + fp, "recall": tp + fn, "f1": 2 * tp + fp + fn}[stat]
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


@dataclass
class NERMetric:
    """Entity-level micro precision, recall or F1 over all scored sentences."""

    name: str
    mode: Mode
    stat: Stat
    higher_is_better: bool = True

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue:
        import numpy as np

        scored = [s for s in scores if s.value is not None]
        n_unscored = len(scores) - len(scored)
        if not scored:
            return MetricValue(self.name, None, None, None, 0, n_unscored, "none")
        per_type = [s.metadata["counts"][self.mode] for s in scored]
        types = sorted({t for c in per_type for t in c})
        counts = np.array([[c.get(t, [0, 0, 0]) for t in types] for c in per_type], dtype=float)
        counts = counts.reshape(len(scored), len(types), 3)
        untyped = np.array([s.metadata["counts"].get("untyped_fp", 0) for s in scored], dtype=float)
        tp, fn = counts[:, :, 0].sum(axis=1), counts[:, :, 2].sum(axis=1)
        fp = counts[:, :, 1].sum(axis=1) + untyped
        value = float(_prf(tp.sum(), fp.sum(), fn.sum(), self.stat))
        low, high, method = self._ci(tp, fp, fn, value)
        details: dict[str, Any] = {
            "mode": self.mode,
            "micro": {"tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())},
            "untyped_fp": int(untyped.sum()),
            "per_type": {},
        }
        for k, t in enumerate(types):
            t_tp, t_fp, t_fn = (int(x) for x in counts[:, k, :].sum(axis=0))
            details["per_type"][t] = {
                **{s: float(_prf(t_tp, t_fp, t_fn, s)) for s in ("precision", "recall", "f1")},
                "tp": t_tp, "fp": t_fp, "fn": t_fn, "support": t_tp + t_fn,
            }
        for key in ("hallucinated", "repeated", "unknown_type", "invalid"):
            details[key] = sum(int(s.metadata.get(key, 0)) for s in scored)
        return MetricValue(self.name, value, low, high, len(scored), n_unscored, method, details)

    def _ci(self, tp: Any, fp: Any, fn: Any, value: float) -> tuple[float, float, str]:
        """Seeded percentile bootstrap over sentences: each resample's micro statistic is
        recomputed from its summed counts (vectorised by scipy over resamples)."""
        if len(tp) < 2:
            return value, value, "degenerate"

        def statistic(a: Any, b: Any, c: Any, axis: int = -1) -> Any:
            return _prf(a.sum(axis=axis), b.sum(axis=axis), c.sum(axis=axis), self.stat)

        low, high = bootstrap_stat((tp, fp, fn), statistic, paired=True, vectorized=True, batch=250)
        return low, high, "bootstrap"


NER_F1_STRICT = NERMetric("ner_f1_strict", "strict", "f1")
NER_PRECISION_STRICT = NERMetric("ner_precision_strict", "strict", "precision")
NER_RECALL_STRICT = NERMetric("ner_recall_strict", "strict", "recall")
NER_F1_LENIENT = NERMetric("ner_f1_lenient", "lenient", "f1")
NER_PRECISION_LENIENT = NERMetric("ner_precision_lenient", "lenient", "precision")
NER_RECALL_LENIENT = NERMetric("ner_recall_lenient", "lenient", "recall")

# Registered where they are defined (the registries import family modules on first lookup).
PROTOCOLS.add("ner", NER_PROTOCOL)
FORMATS.add("ner", NER_FORMAT)
METRICS.add("ner_f1_strict", NER_F1_STRICT)
METRICS.add("ner_precision_strict", NER_PRECISION_STRICT)
METRICS.add("ner_recall_strict", NER_RECALL_STRICT)
METRICS.add("ner_f1_lenient", NER_F1_LENIENT)
METRICS.add("ner_precision_lenient", NER_PRECISION_LENIENT)
METRICS.add("ner_recall_lenient", NER_RECALL_LENIENT)
