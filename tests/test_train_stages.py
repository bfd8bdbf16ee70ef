"""Training on the real default model (SmolLM2-135M) with a few steps on the CPU: the loss
falls, the weights change, LoRA adapters are merged for scoring, training resumes from its last
checkpoint, and a recipe runs end to end with every stage scored and compared (slow)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="needs the `train` extra: pip install -e '.[train]'")

from harness.types import Message
from trainers.data.records import ChatRecord, PreferenceRecord, TextRecord

QA = [
    ("What causes gout?", "Gout is caused by uric acid crystals deposited in the joints."),
    ("What is hypertension?", "Hypertension is persistently raised arterial blood pressure."),
    ("Which vitamin deficiency causes scurvy?", "Scurvy is caused by a lack of vitamin C."),
    ("Which organ produces insulin?", "The pancreas produces insulin in its beta cells."),
]
PAIRS = [
    ("What causes gout?", "Uric acid crystals in the joints.", "Eating too much chocolate."),
    ("What is hypertension?", "Persistently raised arterial blood pressure.", "A kind of headache."),
    ("Which vitamin deficiency causes scurvy?", "Vitamin C deficiency.", "Vitamin D deficiency."),
    ("Which organ produces insulin?", "The pancreas.", "The spleen."),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models train several times faster on one thread when other jobs share the CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _chats() -> list[ChatRecord]:
    return [ChatRecord(f"qa{i}", "t", (Message("user", q), Message("assistant", a))) for i, (q, a) in enumerate(QA)]


def _pairs() -> list[PreferenceRecord]:
    return [PreferenceRecord(f"p{i}", "t", (Message("user", q),), c, r) for i, (q, c, r) in enumerate(PAIRS)]


def _run(kind: str, records: list[Any], base: Path, out: Path, callbacks: tuple[Any, ...] = (),
         **train: Any) -> Any:
    from trainers.configs import build_config
    from trainers.stages import STAGES, StageInput

    cfg = build_config(kind, out / "checkpoints", {"per_device_train_batch_size": 2, "save_steps": 100, **train})
    return STAGES.get(kind)(StageInput(kind, kind, base, out, cfg, records, callbacks=callbacks))


def _tensors(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    out: dict[str, Any] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _changed(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    import torch

    return [k for k in a if k in b and a[k].shape == b[k].shape and not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def base_weights(default_model_dir: Path) -> dict[str, Any]:
    return _tensors(default_model_dir)


def test_ift_lora_loss_falls_adapter_trains_and_merges(default_model_dir: Path, base_weights: dict[str, Any],
                                                       tmp_path: Path) -> None:
    res = _run("ift", _chats(), default_model_dir, tmp_path, method="lora", max_steps=6, learning_rate=1e-3)
    assert res.steps == 6 and len(res.losses) == 6
    assert res.loss_fell, res.losses
    assert res.trainable_params < res.total_params / 10  # only the adapters train
    adapter = _tensors(Path(res.adapter_dir))
    lora_b = [k for k in adapter if "lora_B" in k]
    assert lora_b and all(adapter[k].abs().sum() > 0 for k in lora_b)  # B starts at zero
    merged = _tensors(Path(res.model_dir))
    changed = _changed(base_weights, merged)
    assert any("q_proj" in k for k in changed) and not any("norm" in k for k in changed)
    assert json.loads((Path(res.model_dir) / "config.json").read_text())["rope_theta"] == 100000

    # merging with the base through peft: linear halves the change, TIES keeps its larger half
    from trainers.merge import MergeSpec, merge_adapter

    key = "model.layers.0.self_attn.q_proj.weight"
    delta = merged[key] - base_weights[key]
    half = _tensors(merge_adapter(default_model_dir, Path(res.adapter_dir), tmp_path / "linear",
                                  spec=MergeSpec(method="linear", weight=0.5)))
    assert (half[key] - base_weights[key] - delta / 2).abs().max() < 1e-5
    ties = _tensors(merge_adapter(default_model_dir, Path(res.adapter_dir), tmp_path / "ties",
                                  spec=MergeSpec(method="ties", density=0.5)))
    kept = (ties[key] - base_weights[key]).abs() > 1e-9
    assert abs(kept.float().mean().item() - 0.5) < 0.01


def test_cp_full_loss_falls_and_weights_change(default_model_dir: Path, base_weights: dict[str, Any],
                                               tmp_path: Path) -> None:
    texts = [TextRecord(f"t{i}", "t", f"Question: {q}\nAnswer: {a}") for i, (q, a) in enumerate(QA)]
    res = _run("cp", texts, default_model_dir, tmp_path, method="full", block_size=32, max_steps=6,
               learning_rate=1e-4)
    assert res.loss_fell, res.losses
    assert res.trainable_params == res.total_params and res.adapter_dir is None
    changed = _changed(base_weights, _tensors(Path(res.model_dir)))
    assert len(changed) > 100  # every layer moved


def test_dpo_lora_loss_falls(default_model_dir: Path, tmp_path: Path) -> None:
    res = _run("dpo", _pairs(), default_model_dir, tmp_path, method="lora", max_steps=6, learning_rate=5e-4)
    assert abs(res.losses[0][1] - 0.6931) < 1e-3  # log 2: the policy starts as its reference
    assert res.loss_fell and res.losses[-1][1] < 0.6, res.losses


def test_resume_from_last_checkpoint(default_model_dir: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    class Crash(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:
                raise KeyboardInterrupt

    train: dict[str, Any] = {"method": "lora", "max_steps": 4, "learning_rate": 1e-3, "save_steps": 2}
    with pytest.raises(KeyboardInterrupt):
        _run("ift", _chats(), default_model_dir, tmp_path, callbacks=(Crash(),), **train)
    assert [p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]
    res = _run("ift", _chats(), default_model_dir, tmp_path, **train)
    assert res.resumed_from == "checkpoint-2" and res.steps == 4
    assert [s for s, _ in res.losses] == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's log


def test_reward_model_learns_the_preference(default_model_dir: Path, tmp_path: Path) -> None:
    reward = _run("reward", _pairs() * 4, default_model_dir, tmp_path / "rm", method="lora", max_steps=12,
                  learning_rate=1e-3, heldout=4)
    losses = [loss for _, loss in reward.losses]
    assert reward.steps == 12 and abs(losses[0] - 0.693) < 0.15  # starts near log 2 (untrained head)
    assert sum(losses[-3:]) / 3 < 0.2  # the chosen answers now score above the rejected ones
    # the held-out pairs repeat training pairs here: held-in accuracy, so it must reach 1
    assert reward.metrics["heldout_pairs"] == 4.0 and reward.metrics["heldout_accuracy"] == 1.0
    head = _tensors(Path(reward.model_dir))
    assert head["score.weight"].shape[0] == 1  # a one-score head, merged with its adapter


@pytest.mark.slow
@pytest.mark.manual
def test_kto(default_model_dir: Path, tmp_path: Path) -> None:
    kto = _run("kto", _pairs(), default_model_dir, tmp_path / "kto", method="lora", max_steps=4, learning_rate=5e-4)
    assert kto.steps == 4 and abs(kto.losses[0][1] - 0.5) < 1e-3  # KTO starts at 0.5 (sigmoid of zero)


@pytest.mark.slow
@pytest.mark.manual
def test_recipe_end_to_end_scores_every_stage(shared_data: Path, tmp_path: Path) -> None:
    """A two-stage recipe (IFT then DPO) on shared data, each checkpoint scored on one bundled
    task and compared with the previous one; a rerun reuses the finished stages."""
    from harness.cli import main

    recipe = Path(__file__).parent / "fixtures" / "train_recipe_tiny.yaml"
    out = tmp_path / "run"
    argv = ["train", str(recipe), "--data-dir", str(shared_data), "--output", str(out), "--quiet"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["ift", "dpo"]
    assert report["base"]["eval"]["tasks"]["medqa|loglik|0shot"]["n"] == 6
    for stage in report["stages"]:
        assert stage["result"]["steps"] == 3
        assert stage["data"]["kept"] > 0 and "leakage" in stage["data"]
        cmp = stage["comparison"]["tasks"][0]
        assert cmp["n_pairs"] == 6 and cmp["test"] == "mcnemar-exact" and cmp["verdict"]
        assert (out / stage["name"] / "compare.txt").read_text().startswith("base: ")
        assert not (out / stage["name"] / "checkpoints").exists()
    assert report["stages"][0]["data"]["leakage"]["dropped"] >= 1  # the planted MedQA test question
    assert report["final_model"] == str(out / "dpo" / "model")
    shutil.rmtree(out / "dpo" / "eval")
    (out / "report.json").unlink()
    assert main(argv) == 0  # resumes: no retraining, the missing evaluation is redone
    again = json.loads((out / "report.json").read_text())
    assert again["stages"][1]["result"] == report["stages"][1]["result"]
    assert again["stages"][1]["eval"] == report["stages"][1]["eval"]
