"""Juries (judges.jury): per-judge scores and failures, jury mean, Krippendorff's alpha,
leave-one-judge-out Kendall's tau and same-family flags, on scores worked out by hand."""

from __future__ import annotations

import math

import pytest

from judges.jury import JudgeScores, combine, krippendorff_alpha, model_families, same_family

A = JudgeScores("A", {("x", "i1"): 1.0, ("x", "i2"): 0.8, ("y", "i1"): 0.6, ("y", "i2"): 0.4,
                      ("z", "i1"): 0.2, ("z", "i2"): 0.0}, model="openai:gpt-4o-mini")
B = JudgeScores("B", {("x", "i1"): 0.9, ("x", "i2"): 0.9, ("y", "i1"): 0.5, ("y", "i2"): None,
                      ("z", "i1"): 0.1, ("z", "i2"): 0.3}, model="hf:HuggingFaceTB/SmolLM2-360M-Instruct")
C = JudgeScores("C", {("x", "i1"): 0.0, ("x", "i2"): 0.2, ("y", "i1"): 0.5, ("y", "i2"): 0.5,
                      ("z", "i1"): 1.0}, model="qwen2.5-1.5b-instruct-q4_k_m.gguf")  # reversed; never saw z/i2
CANDIDATES = {"x": "HuggingFaceTB/SmolLM2-135M-Instruct", "y": "Qwen/Qwen2.5-0.5B-Instruct",
              "z": "meta-llama/Llama-3.2-1B-Instruct"}
TAU_ONE_PAIR_TIED = -2 / math.sqrt(3 * 2)  # tau-b: 0 concordant, 2 discordant, one tie on one side


def test_jury_by_hand() -> None:
    report = combine([A, B, C], CANDIDATES)
    # item means: x (1 + .9 + 0)/3, (.8 + .9 + .2)/3; y (.6 + .5 + .5)/3, (.4 + .5)/2 (B failed);
    # z (.2 + .1 + 1)/3, (0 + .3)/2 (C never saw it)
    assert report.item_means[("y", "i2")] == pytest.approx(0.45)
    assert report.item_means[("z", "i2")] == pytest.approx(0.15)
    assert report.jury["x"].value == pytest.approx(1.9 / 3)
    assert report.jury["y"].value == pytest.approx((1.6 / 3 + 0.45) / 2)
    assert report.jury["z"].value == pytest.approx((1.3 / 3 + 0.15) / 2)
    # per judge, failures counted (not dropped silently), missing keys apart
    assert report.per_judge["B"]["y"].value == pytest.approx(0.5)
    assert report.per_judge["B"]["y"].n_unscored == 1
    assert report.failures["B"] == {"x": 0, "y": 1, "z": 0}
    assert report.failure_total("A") == 0 and report.failure_total("B") == 1
    assert report.missing == {"A": 0, "B": 0, "C": 1}
    # leave one out: without A (B, C): x .5, y .5, z (.55 + .3)/2 = .425 -> x = y > z: concordant
    # pairs (x,z), (y,z), (x,y) tied on one side -> tau-b = 2 / sqrt(3 * 2)
    assert report.leave_one_out_tau["A"] == pytest.approx(2 / math.sqrt(6))
    # without C (A, B): x .9, y (.55 + .4)/2, z (.15 + .15)/2: same order as the full jury
    assert report.leave_one_out_tau["C"] == pytest.approx(1.0)
    # without B (A, C): x .5, y (.55 + .45)/2 = .5, z (.6 + 0)/2 = .3 -> as without A
    assert report.leave_one_out_tau["B"] == pytest.approx(2 / math.sqrt(6))
    assert report.alpha is not None and report.alpha < 0.2  # C disagrees with A and B
    flags = {(f.judge, f.candidate, f.families) for f in report.family_flags}
    assert flags == {("B", "x", ("smollm",)), ("C", "y", ("qwen",))}
    md = report.markdown()
    assert "(1 failed)" in md and "Krippendorff" in md


def test_a_reversed_judge_lowers_rank_stability() -> None:
    full = combine([A, B, JudgeScores("C", {**C.scores, ("z", "i2"): 1.0})])
    # full jury: x .633, y .492, z .433; without A: x .5, y .5, z .6 (z first)
    assert full.leave_one_out_tau["A"] == pytest.approx(TAU_ONE_PAIR_TIED)
    assert full.leave_one_out_tau["C"] == pytest.approx(1.0)


def test_agreeing_judges() -> None:
    same = {k: v for k, v in A.scores.items()}
    report = combine([A, JudgeScores("A2", same)])
    assert report.alpha == pytest.approx(1.0)
    assert report.leave_one_out_tau == {"A": pytest.approx(1.0), "A2": pytest.approx(1.0)}
    single = combine([A])
    assert single.leave_one_out_tau == {"A": None} and single.alpha is None


def test_every_judge_failed_on_an_item() -> None:
    j1 = JudgeScores("j1", {("x", "i1"): None, ("x", "i2"): 1.0, ("y", "i1"): 0.0})
    j2 = JudgeScores("j2", {("x", "i1"): None, ("x", "i2"): 0.0, ("y", "i1"): 0.0})
    report = combine([j1, j2], alpha_level="nominal")
    assert report.item_means[("x", "i1")] is None
    assert report.jury["x"].n_unscored == 1 and report.jury["x"].value == pytest.approx(0.5)


def test_nominal_alpha_matches_a_hand_value() -> None:
    # two raters, four units: (1,1), (0,0), (1,0), (0,0) -> nominal alpha 0.533 (Krippendorff
    # coincidence matrix: o11 = 2, o00 = 4, o01 = o10 = 1; n = 8; De = 2 * 5 * 3 / (8 * 7))
    alpha = krippendorff_alpha([[1, 0, 1, 0], [1, 0, 0, 0]], "nominal")
    expected = 1 - (2 / 8) / (2 * 5 * 3 / (8 * 7))
    assert alpha == pytest.approx(expected)


@pytest.mark.parametrize("name, families", [
    ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", {"smollm"}),
    ("meta-llama/Llama-3.2-1B-Instruct", {"llama"}),
    ("epfl-llm/meditron-7b", {"llama"}),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", {"deepseek", "qwen"}),
    ("openai:gpt-4.1-2025-04-14", {"gpt"}),
    ("o3-mini", {"gpt"}),
    ("BioMistral/BioMistral-7B", {"mistral"}),
    ("google/medgemma-4b-it", {"gemma"}),
    ("microsoft/Phi-3-mini-4k-instruct", {"phi"}),
    ("/models/qwen2.5-0.5b-instruct-q4_k_m.gguf", {"qwen"}),
    ("acme-clinic-7b", {"acme"}),
])
def test_model_families(name: str, families: set[str]) -> None:
    assert model_families(name) == families


def test_same_family() -> None:
    assert same_family("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-0.5b") == ("qwen",)
    assert same_family("gpt-4o", "meta-llama/Llama-3.1-8B") == ()
    assert same_family("openai:gpt-4o", "phi-2") == ()
