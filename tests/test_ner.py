"""NER tasks: the CoNLL adapter, the reply parser and span mapping, strict / lenient entity
scoring (checked against seqeval on the real dev sets), the protocol through the runner, and
one run on the real default model."""

import json
import random
import re
import time
from pathlib import Path

import numpy as np
import pytest

from harness.data.sources import load_local
from harness.data.spec import LocalSource
from harness.errors import HarnessError
from harness.protocols.ner import (
    NER_F1_LENIENT,
    NER_F1_STRICT,
    NER_PRECISION_LENIENT,
    NER_PRECISION_STRICT,
    NER_RECALL_LENIENT,
    NER_RECALL_STRICT,
    bio_token_spans,
    conll_ner,
    match_counts,
    score_reply,
    sentence_f1,
    tags_to_entities,
)
from harness.scoring.intervals import BOOTSTRAP_RESAMPLES, CONFIDENCE
from harness.scoring.metrics import METRICS
from harness.types import Score
from tests.conftest import ScriptedBackend

# The registry lines that harness/formats.py and harness/data/adapters.py carry (lazy, as for
# the text-generation tasks); added here only if this checkout does not have them yet.

FIXTURES = Path(__file__).parent / "fixtures"
REPLY_CASES = json.loads((FIXTURES / "ner_reply_cases.json").read_text())
MATCH_CASES = json.loads((FIXTURES / "ner_match_cases.json").read_text())
STRICT = (NER_PRECISION_STRICT, NER_RECALL_STRICT, NER_F1_STRICT)
LENIENT = (NER_PRECISION_LENIENT, NER_RECALL_LENIENT, NER_F1_LENIENT)


def sample_of(name):
    sent = REPLY_CASES["sentences"][name]
    return conll_ner({"tokens": sent["tokens"], "tags": sent["tags"]}, 0, {"entity_types": sent["types"]})


def counts_score(gold, pred, types, unmapped=None):
    """A Score as the protocol stores it, from spans (the seqeval comparison skips the reply)."""
    counts = match_counts(gold, pred, types, unmapped)
    return Score(sentence_f1(counts["strict"], 0), metadata={"counts": {**counts, "untyped_fp": 0}})


# --- adapter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MATCH_CASES["bio"], ids=lambda c: c["name"])
def test_bio_token_spans(case):
    assert bio_token_spans(case["tags"]) == [tuple(s) for s in case["spans"]]


@pytest.mark.parametrize("case", MATCH_CASES["bio_errors"], ids=lambda c: c["message"])
def test_bio_token_spans_names_the_bad_tag(case):
    with pytest.raises(ValueError, match=case["message"]):
        bio_token_spans(case["tags"])


@pytest.mark.parametrize("name,types", [("ncbi_disease", ["Disease"]), ("bc5cdr", ["Chemical", "Disease"])])
def test_adapter_offsets_on_the_real_dev_sets(shared_data, name, types):
    src = LocalSource(path=f"ner/{name}/devel.tsv", reader="conll", record="conll_ner",
                      options={"entity_types": types, "id_prefix": name})
    samples = load_local(src, shared_data)
    assert samples[0].id == f"{name}-00000" and samples[12].id == f"{name}-00012"
    n_entities = 0
    for s in samples:
        meta = s.metadata
        assert s.input == " ".join(meta["tokens"])
        assert [s.input[a:b] for a, b in meta["offsets"]] == meta["tokens"]
        for (a, b, kind), ent in zip(bio_token_spans(meta["tags"]), meta["entities"], strict=True):
            start, end = meta["offsets"][a][0], meta["offsets"][b - 1][1]
            assert ent == [start, end, kind, " ".join(meta["tokens"][a:b])] == [start, end, kind, s.input[start:end]]
        assert json.loads(s.target) == [{"text": e[3], "type": e[2]} for e in meta["entities"]]
        n_entities += len(meta["entities"])
    b_tags = sum(t.startswith("B-") for s in samples for t in s.metadata["tags"])
    assert n_entities == b_tags > 700  # the gold files are clean IOB2: one B- per entity


def test_adapter_errors_name_file_and_line(tmp_path):
    good = "Aspirin\tB-Chemical\ncauses\tO\n\n"
    opts = {"entity_types": ["Chemical", "Disease"]}
    path = tmp_path / "bad_line.tsv"
    path.write_text(good + "ulcers\tB-Disease\nbadline\n")
    with pytest.raises(HarnessError, match=rf"{re.escape(str(path))}:5: expected token<TAB>tag"):
        load_local(LocalSource(path=path.name, reader="conll", record="conll_ner", options=opts), tmp_path)
    path = tmp_path / "bad_tag.tsv"
    path.write_text(good + "gastric\tB-Disease\nulcers\tE-Disease\n")
    with pytest.raises(HarnessError, match=rf"{re.escape(str(path))}: record 4: tag 'E-Disease' of token 2"):
        load_local(LocalSource(path=path.name, reader="conll", record="conll_ner", options=opts), tmp_path)
    path = tmp_path / "bad_type.tsv"
    path.write_text(good + "BRCA1\tB-Gene\n")
    with pytest.raises(HarnessError, match=r"record 4: entity types \['Gene'\] are not in entity_types"):
        load_local(LocalSource(path=path.name, reader="conll", record="conll_ner", options=opts), tmp_path)
    with pytest.raises(HarnessError, match=r"entity_types .* is required"):
        load_local(LocalSource(path="bad_type.tsv", reader="conll", record="conll_ner"), tmp_path)


# --- parser and span mapping -------------------------------------------------------------------


@pytest.mark.parametrize("case", REPLY_CASES["cases"], ids=lambda c: c["name"])
def test_reply_cases(case):
    score = score_reply(sample_of(case["sentence"]), case["reply"])
    assert score.metadata["output"] == case["reply"]
    if case["value"] is None:
        assert score.value is None and "no JSON list" in score.explanation
        return
    meta = score.metadata
    got = [[p["text"], p["type"], p["status"], p["span"]] for p in meta["predictions"]]
    assert got == case["predictions"]
    assert meta["counts"]["strict"] == case["strict"] and meta["counts"]["lenient"] == case["lenient"]
    assert meta["counts"]["untyped_fp"] == case["untyped_fp"]
    assert score.value == pytest.approx(case["value"])
    statuses = [p[2] for p in case["predictions"]]
    assert meta["hallucinated"] == statuses.count("hallucinated")
    assert meta["unknown_type"] == statuses.count("unknown_type")
    assert meta["gold"] == sample_of(case["sentence"]).metadata["entities"]


@pytest.mark.parametrize("name,types", [("ncbi_disease", ["Disease"]), ("bc5cdr", ["Chemical", "Disease"])])
def test_gold_answer_round_trips(shared_data, name, types):
    """The exact gold JSON scores 1 on a sentence unless the same string is an entity at one
    occurrence and not at another (e.g. the gene APC and the disease APC), which text alone
    cannot tell apart."""
    src = LocalSource(path=f"ner/{name}/devel.tsv", reader="conll", record="conll_ner",
                      options={"entity_types": types})
    samples = load_local(src, shared_data)
    scores = [score_reply(s, s.target) for s in samples]
    imperfect = [s for s, sc in zip(samples, scores, strict=True) if sc.value != 1.0]
    assert len(imperfect) <= len(samples) // 1000
    for s in imperfect:
        texts = [e[3] for e in s.metadata["entities"]]
        assert any(s.input.count(t) > texts.count(t) for t in texts)
    assert NER_F1_LENIENT.aggregate(scores).value > 0.999


# --- matching and metrics ----------------------------------------------------------------------


@pytest.mark.parametrize("case", MATCH_CASES["match"], ids=lambda c: c["name"])
def test_match_cases(case):
    got = match_counts([tuple(g) for g in case["gold"]], [tuple(p) for p in case["pred"]], case["types"],
                       case.get("unmapped"))
    assert got == {"strict": case["strict"], "lenient": case["lenient"]}


def test_micro_aggregate_by_hand():
    scores = [counts_score([tuple(g) for g in c["gold"]], [tuple(p) for p in c["pred"]], ["D"], c.get("unmapped"))
              for c in MATCH_CASES["match"] if c["types"] == ["D"]]
    for mode, metrics in (("strict", STRICT), ("lenient", LENIENT)):
        want = MATCH_CASES["aggregate"][mode]
        for metric, stat in zip(metrics, ("precision", "recall", "f1"), strict=True):
            value = metric.aggregate(scores)
            assert value.value == pytest.approx(want[stat])
            assert value.details["micro"] == {k: want[k] for k in ("tp", "fp", "fn")}
            assert value.details["per_type"]["D"][stat] == pytest.approx(want[stat])


def test_unscored_and_untyped_counted():
    sample = sample_of("brca")
    replies = ["[{\"text\": \"breast cancer\", \"type\": \"Disease\"}, {\"text\": \"BRCA1\", \"type\": \"Gene\"}]",
               "no idea", "[]"]
    value = NER_F1_STRICT.aggregate([score_reply(sample, r) for r in replies])
    assert (value.n_scored, value.n_unscored) == (2, 1)
    # tp 1; fp 1 (the Gene); fn 2 + 3
    assert value.details["micro"] == {"tp": 1, "fp": 1, "fn": 5} and value.details["untyped_fp"] == 1
    assert value.details["unknown_type"] == 1
    assert value.value == pytest.approx(2 / (2 + 1 + 5))
    none = NER_F1_STRICT.aggregate([score_reply(sample, "no idea")])
    assert none.value is None and (none.n_scored, none.n_unscored) == (0, 1)


def test_metrics_are_registered():
    for metric in (*STRICT, *LENIENT):
        assert METRICS.get(metric.name) is metric and metric.higher_is_better


# --- against seqeval on the real dev sets ------------------------------------------------------


def _entities(tags):
    return bio_token_spans(tags)


def _set(tags, a, b, kind):
    tags[a] = f"B-{kind}"
    for k in range(a + 1, b):
        tags[k] = f"I-{kind}"


def perturb(tags, rng, how, types):
    """Seeded predicted tags: each gold entity is kept, dropped, shifted by one token or
    retyped; spurious entities land on O tokens; `orphan` turns B- into I-."""
    out = list(tags)
    for a, b, kind in _entities(tags):
        move = rng.choice(how)
        if move == "drop":
            out[a:b] = ["O"] * (b - a)
        elif move == "type" and len(types) > 1:
            _set(out, a, b, rng.choice([t for t in types if t != kind]))
        elif move == "shift":
            grow_right = b < len(out) and out[b] == "O"
            grow_left = a > 0 and out[a - 1] == "O"
            options = [o for o, ok in (("right+", grow_right), ("left+", grow_left),
                                       ("right-", b - a > 1), ("left-", b - a > 1)) if ok]
            if options:
                side = rng.choice(options)
                na, nb = {"right+": (a, b + 1), "left+": (a - 1, b), "right-": (a, b - 1), "left-": (a + 1, b)}[side]
                out[a:b] = ["O"] * (b - a)
                _set(out, na, nb, kind)
        elif move == "orphan":
            out[a] = f"I-{kind}"
    if "spurious" in how:
        free = [k for k in range(len(out)) if out[k] == "O" and (k + 1 == len(out) or not out[k + 1].startswith("I-"))]
        for k in rng.sample(free, min(len(free), rng.choice([0, 0, 1]))):
            out[k] = f"B-{rng.choice(types)}"
    return out


def iob2_valid(tags):
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return False
        prev = tag
    return True


def _ours(sentences, predicted, types):
    scores = []
    for s, pred_tags in zip(sentences, predicted, strict=True):
        gold = [tuple(e[:3]) for e in s.metadata["entities"]]
        pred = [tuple(e[:3]) for e in tags_to_entities(s.metadata["tokens"], pred_tags)]
        scores.append(counts_score(gold, pred, types))
    return scores


SCENARIOS = [
    ("keep", ("keep",)),
    ("drop", ("keep", "keep", "drop")),
    ("shift", ("keep", "shift")),
    ("type", ("keep", "type")),
    ("spurious", ("keep", "spurious")),
    ("mixed", ("keep", "keep", "drop", "shift", "type", "spurious")),
]


@pytest.mark.parametrize("name,types", [("ncbi_disease", ["Disease"]), ("bc5cdr", ["Chemical", "Disease"])])
def test_strict_scores_equal_seqeval(shared_data, name, types):
    import warnings

    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    src = LocalSource(path=f"ner/{name}/devel.tsv", reader="conll", record="conll_ner",
                      options={"entity_types": types})
    sentences = load_local(src, shared_data)[:2000]  # BC5CDR's devel has 4,581; 2,000 keep it quick
    # NCBI has one type; a second type lets "type" and "spurious" moves mislabel there too.
    pred_types = [*types, "Chemical"] if types == ["Disease"] else types
    gold_tags = [list(s.metadata["tags"]) for s in sentences]
    for seed, (scenario, how) in enumerate(SCENARIOS):
        rng = random.Random(f"{name}:{seed}")
        predicted = [perturb(t, rng, how, pred_types) for t in gold_tags]
        assert all(iob2_valid(t) for t in predicted)
        if scenario != "keep":
            assert predicted != gold_tags
        scores = _ours(sentences, predicted, pred_types)
        ours = [m.aggregate(scores).value for m in STRICT]
        details = NER_F1_STRICT.aggregate(scores).details["per_type"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns on 0/0, which it (and we) call 0
            for kw in ({}, {"mode": "strict", "scheme": IOB2}):
                theirs = [fn(gold_tags, predicted, **kw) for fn in (precision_score, recall_score, f1_score)]
                assert ours == pytest.approx(theirs, abs=1e-12), (scenario, kw)
                report = classification_report(gold_tags, predicted, output_dict=True, **kw)
                for kind in {*pred_types} & set(report):
                    row = report[kind]
                    mine = details[kind]
                    assert [mine["precision"], mine["recall"], mine["f1"], mine["support"]] == pytest.approx(
                        [row["precision"], row["recall"], row["f1-score"], row["support"]], abs=1e-12), (scenario, kind)
                for kind in set(details) - set(report):  # types absent from both gold and predictions
                    assert details[kind]["tp"] == details[kind]["fp"] == details[kind]["fn"] == 0


def test_orphan_i_tags_follow_conlleval_not_strict_iob2(shared_data):
    """An I- tag without a B- starts an entity for us and for seqeval's default (conlleval)
    mode; seqeval's strict IOB2 mode drops such entities, so there the numbers differ."""
    import warnings

    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    src = LocalSource(path="ner/bc5cdr/devel.tsv", reader="conll", record="conll_ner",
                      options={"entity_types": ["Chemical", "Disease"]})
    sentences = load_local(src, shared_data)[:1500]
    gold_tags = [list(s.metadata["tags"]) for s in sentences]
    rng = random.Random("orphan")
    predicted = [perturb(t, rng, ("keep", "keep", "orphan"), ["Chemical", "Disease"]) for t in gold_tags]
    assert sum(not iob2_valid(t) for t in predicted) > 100
    scores = _ours(sentences, predicted, ["Chemical", "Disease"])
    ours = [m.aggregate(scores).value for m in STRICT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = [fn(gold_tags, predicted) for fn in (precision_score, recall_score, f1_score)]
        strict = [fn(gold_tags, predicted, mode="strict", scheme=IOB2) for fn in (precision_score, recall_score,
                                                                                    f1_score)]
    assert ours == pytest.approx(default, abs=1e-12)
    assert ours[1] > strict[1] + 0.1  # strict IOB2 loses every orphaned entity from recall


# --- bootstrap ------------------------------------------------------------------------------------


def test_bootstrap_ci_resamples_sentences_and_recomputes_micro(shared_data):
    src = LocalSource(path="ner/ncbi_disease/devel.tsv", reader="conll", record="conll_ner",
                      options={"entity_types": ["Disease"]})
    sentences = load_local(src, shared_data)
    rng = random.Random("ci")
    predicted = [perturb(list(s.metadata["tags"]), rng, ("keep", "drop", "shift", "spurious"), ["Disease"])
                 for s in sentences]
    scores = _ours(sentences, predicted, ["Disease"])
    started = time.monotonic()
    value = NER_F1_STRICT.aggregate(scores)
    assert time.monotonic() - started < 5
    assert value.ci_method == "bootstrap" and value.ci_low < value.value < value.ci_high
    assert NER_F1_STRICT.aggregate(scores) == value  # seeded
    # An independent bootstrap of the same statistic (micro F1 from summed counts) agrees to
    # within Monte Carlo error; the mean of per-sentence F1 would not.
    counts = np.array([s.metadata["counts"]["strict"]["Disease"] for s in scores], dtype=float)
    weights = np.random.default_rng(99).multinomial(len(scores), [1 / len(scores)] * len(scores),
                                                    size=BOOTSTRAP_RESAMPLES)
    tp, fp, fn = (weights @ counts).T
    f1 = 2 * tp / (2 * tp + fp + fn)
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(f1, [alpha, 1 - alpha])
    assert value.ci_low == pytest.approx(low, abs=0.01) and value.ci_high == pytest.approx(high, abs=0.01)
    mean_f1 = np.mean([s.value for s in scores])
    assert abs(mean_f1 - value.value) > 0.02
    one = NER_F1_STRICT.aggregate(scores[:1])
    assert one.ci_method == "degenerate" and one.ci_low == one.value == one.ci_high


# --- protocol through the runner, and the real model -------------------------------------------


def test_protocol_through_runner_with_scripted_backend(tmp_path):
    from harness.data.sources import load_bundled
    from harness.run.catalog import load_catalog
    from harness.run.config import RunConfig
    from harness.run.runner import Runner

    spec = load_catalog().task("ner_bc5cdr")
    gold = {s.input: s for s in load_bundled(spec.splits["test"].bundled)}
    victim = sorted(gold)[0]

    def reply(request):
        sentence = request.messages[-1].content.rsplit("\nSentence: ", 1)[1]
        if sentence == victim:
            return "I cannot help with that."
        return f"Sure:\n```json\n{gold[sentence].target}\n```"

    backend = ScriptedBackend(reply=reply)
    config = RunConfig(tasks=("ner_bc5cdr",), data_source="bundled", output=tmp_path / "run", num_fewshot=2)
    record = Runner(config, backend=backend).run()
    res = record.tasks["ner_bc5cdr|ner|2shot"]
    assert list(res.metrics) == ["ner_f1_strict", "ner_precision_strict", "ner_recall_strict",
                                 "ner_f1_lenient", "ner_precision_lenient", "ner_recall_lenient"]
    for m in res.metrics.values():
        assert (m["n_scored"], m["n_unscored"]) == (49, 1)
        assert m["value"] == 1.0 and m["details"]["hallucinated"] == 0
    per_type = res.metrics["ner_f1_strict"]["details"]["per_type"]
    assert set(per_type) == {"Chemical", "Disease"} and all(t["fp"] == t["fn"] == 0 for t in per_type.values())
    request = backend.generate_calls[0]
    assert request.config.max_tokens == 128 and request.config.temperature == 0.0
    roles = [m.role for m in request.messages]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert all(m.content.startswith("Find every chemical and disease mention in the sentence.")
               for m in request.messages if m.role == "user")
    train = {s.input: s for s in load_bundled(spec.splits["train"].bundled)}
    for question, answer in zip(request.messages[:-1:2], request.messages[1::2], strict=True):
        shot = train[question.content.rsplit("\nSentence: ", 1)[1]]
        assert answer.content == shot.target and json.loads(answer.content) == [
            {"text": e[3], "type": e[2]} for e in shot.metadata["entities"]]
    entries = [json.loads(x) for x in (tmp_path / "run/samples.jsonl").read_text().splitlines()]
    unscored = [e for e in entries if e["score"]["value"] is None]
    assert len(unscored) == 1 and unscored[0]["score"]["metadata"]["output"] == "I cannot help with that."


@pytest.mark.slow
def test_real_model_end_to_end(shared_data, tmp_path, capsys):
    from harness.cli import main
    from harness.run.records import read_record

    out = tmp_path / "run"
    code = main(["run", "--tasks", "ner_ncbi_disease", "--limit", "2", "--num-fewshot", "2",
                 "--data-dir", str(shared_data),
                 "--output", str(out), "--no-cache", "--quiet"])
    assert code == 0
    assert "ner_f1_strict" in capsys.readouterr().out
    record = read_record(out)
    res = record.tasks["ner_ncbi_disease|ner|2shot"]
    assert res.data_source == "local" and res.n_samples == 2
    for name in ("ner_f1_strict", "ner_recall_strict", "ner_f1_lenient"):
        m = res.metrics[name]
        assert m["n_scored"] + m["n_unscored"] == 2
        assert m["value"] is None or 0.0 <= m["value"] <= 1.0
    entries = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(entries) == 2 and all(e["score"]["metadata"]["output"] for e in entries)
