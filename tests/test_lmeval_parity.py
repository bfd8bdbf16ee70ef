"""Parity with lm-eval 0.4.13: on the first 40 questions of MedQA, MedMCQA and
PubMedQA, our `loglik` protocol and lm-eval's BUILT-IN tasks (run through its own `hf` model,
on the same local data) must pick the same option for every question, give the same accuracy,
and agree on every per-choice log-likelihood within 1e-3.

Slow: both sides load the default model and score 120 questions. The full test sets (1,773
questions, all predictions identical) are benchmarks/mcqa_vs_lmeval.py's job, not CI's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
DATASETS = ("medqa", "medmcqa", "pubmedqa")
LIMIT = 40
BATCH_SIZE = 8
LL_TOLERANCE = 1e-3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA_DIR / "MANIFEST.md").is_file(),
        reason=f"real data not found at {DATA_DIR} (the shared/ data checkout is needed)",
    ),
]


def _load_helper() -> Any:
    """tests/lmeval_local.py, imported by path (works whatever pytest's import mode)."""
    name = "_medllm_lmeval_local"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("lmeval_local.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _lm_loglik(resp: Any) -> float:
    """One choice's filtered response: (loglik, is_greedy), possibly nested or stringified."""
    while isinstance(resp, (list, tuple)) and resp and isinstance(resp[0], (list, tuple)):
        resp = resp[0]
    if isinstance(resp, (list, tuple)):
        return float(resp[0])
    if isinstance(resp, str):  # "(-1.23, False)"
        return float(resp.strip("()[] ").split(",")[0])
    return float(resp)


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'lm-eval[hf]==0.4.13')")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from harness.backends.models import default_model_dir
    from harness.run.config import RunConfig
    from harness.run.runner import Runner

    helper = _load_helper()
    base = tmp_path_factory.mktemp("lmeval_parity")
    local = helper.write_local_tasks(DATA_DIR, base / "lmeval", DATASETS, LIMIT)
    helper.check_prompts(local, n=LIMIT)  # every prompt and continuation, before any scoring
    model_dir = default_model_dir()

    # Ours first (its record is the reference for which samples were scored).
    out = base / "run"
    config = RunConfig(
        tasks=DATASETS, protocol="loglik", limit=LIMIT, data_source="local", data_dir=DATA_DIR,
        output=out, cache=None, batch_size=BATCH_SIZE,
    )
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    record = Runner(config).run()
    timings["ours"] = time.monotonic() - t0
    ours: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in DATASETS}
    for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        task = entry["task_key"].split("|", 1)[0]
        ours[task][entry["sample_id"]] = entry
    our_acc = {}
    for key, result in record.tasks.items():
        our_acc[key.split("|", 1)[0]] = result.metrics["accuracy"]["value"]

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # lm-eval's hf defaults to cuda
    t0 = time.monotonic()
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32,device={device}",
        tasks=local.task_names, task_manager=TaskManager(include_path=str(local.folder)),
        batch_size=BATCH_SIZE, log_samples=True,
    )
    assert results is not None
    timings["lm-eval"] = time.monotonic() - t0
    print(f"wall time: ours {timings['ours']:.1f} s, lm-eval {timings['lm-eval']:.1f} s")
    return {"local": local, "ours": ours, "our_acc": our_acc, "lm": results}


@pytest.mark.parametrize("dataset", DATASETS)
def test_lmeval_parity(parity_runs: dict[str, Any], dataset: str) -> None:
    local = parity_runs["local"]
    lm_task = local.tasks[dataset]
    samples = local.samples[dataset]
    assert len(samples) == LIMIT

    logged = sorted(parity_runs["lm"]["samples"][lm_task], key=lambda e: int(e["doc_id"]))
    assert [int(e["doc_id"]) for e in logged] == list(range(LIMIT)), "lm-eval scored other docs"
    ours = parity_runs["ours"][dataset]
    assert sorted(ours) == sorted(s.id for s in samples), "we scored other samples"

    lm_acc = parity_runs["lm"]["results"][lm_task]["acc,none"]
    disagreements: list[str] = []
    max_diff, worst = 0.0, ""
    lm_correct = our_correct = 0
    for entry, sample in zip(logged, samples, strict=True):
        assert entry["doc"]["id"] == sample.id, f"doc {entry['doc_id']} is not {sample.id}"
        lm_ll = [_lm_loglik(r) for r in entry["filtered_resps"]]
        score = ours[sample.id]["score"]
        our_ll = [float(x) for x in score["metadata"]["logprobs"]]
        assert len(lm_ll) == len(our_ll) == len(sample.choices), sample.id
        lm_pred, our_pred = _argmax(lm_ll), int(score["metadata"]["pred_index"])
        lm_correct += lm_pred == sample.target
        our_correct += int(score["value"] == 1.0)
        if lm_pred != our_pred:
            disagreements.append(f"{sample.id}: lm-eval {lm_pred} {lm_ll} vs ours {our_pred} {our_ll}")
        for k, (a, b) in enumerate(zip(lm_ll, our_ll, strict=True)):
            if abs(a - b) > max_diff:
                max_diff, worst = abs(a - b), f"{sample.id} choice {k}: lm-eval {a} ours {b}"

    print(f"{dataset}: {LIMIT} questions, accuracy lm-eval {lm_acc:.3f} ours "
          f"{parity_runs['our_acc'][dataset]:.3f}, {len(disagreements)} disagreements, "
          f"max |delta loglik| {max_diff:.2e} ({worst})")
    assert not disagreements, (
        f"{dataset}: {len(disagreements)}/{LIMIT} predictions differ:\n" + "\n".join(disagreements[:10])
    )
    assert lm_acc == pytest.approx(lm_correct / LIMIT), "lm-eval's acc is not its own argmax"
    assert our_correct == lm_correct, f"{dataset}: accuracy ours {our_correct} vs lm-eval {lm_correct}"
    assert parity_runs["our_acc"][dataset] == pytest.approx(lm_acc), (
        f"{dataset}: accuracy ours {parity_runs['our_acc'][dataset]} vs lm-eval {lm_acc}"
    )
    assert max_diff <= LL_TOLERANCE, (
        f"{dataset}: per-choice log-likelihoods differ by up to {max_diff:.2e} (> {LL_TOLERANCE}); "
        f"worst: {worst}"
    )


def test_bridge_gives_lm_evals_own_answers(parity_runs: dict[str, Any], tmp_path: Path) -> None:
    """lm-eval's medqa task run through our lm_eval: bridge (our hf backend) predicts the same
    option for every question as lm-eval's own hf model."""
    from harness.run.config import RunConfig
    from harness.run.runner import Runner

    local = parity_runs["local"]
    lm_task = local.tasks["medqa"]
    config = RunConfig(tasks=(f"lm_eval:{lm_task}",), lmeval_include=local.folder, output=tmp_path / "bridge",
                       cache=None, batch_size=BATCH_SIZE)
    record = Runner(config).run()
    bridged = {}
    for line in (tmp_path / "bridge" / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        lls = [r["none"][0] for r in entry["score"]["metadata"]["filtered_resps"]]
        bridged[int(entry["sample_id"].rsplit("-", 1)[1])] = _argmax(lls)
    logged = {int(e["doc_id"]): _argmax([_lm_loglik(r) for r in e["filtered_resps"]])
              for e in parity_runs["lm"]["samples"][lm_task]}
    assert sorted(bridged) == sorted(logged) and len(bridged) == LIMIT
    differ = [d for d in logged if logged[d] != bridged[d]]
    assert not differ, f"{len(differ)} questions differ: {differ[:10]}"
    (res,) = record.tasks.values()
    assert res.metrics["acc"]["value"] == pytest.approx(parity_runs["lm"]["results"][lm_task]["acc,none"])
    assert res.extra["lm_eval_version"] == "0.4.13"
