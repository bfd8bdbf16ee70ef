"""`--protocol sft`: the recipe, the training examples (the task's own prompt), the leakage guard
and the refusals, all before any training (fast: the default model's tokenizer, no weights); then
one end-to-end run on the real default model with a small step budget (slow)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="needs the `train` extra: pip install -e '.[train]'")

from harness.cli import main
from harness.data.sources import load_split
from harness.errors import ConfigError, HarnessError
from harness.protocols.base import PROTOCOLS, PromptContext
from harness.protocols.formats import FORMATS
from harness.protocols.sft import SFTProtocol, is_sft, scoring_protocol
from harness.run.catalog import load_catalog
from harness.run.config import RunConfig
from harness.run.planning import plan_task
from harness.run.runner import Runner
from harness.types import Sample
from trainers.task_sft.examples import IGNORE_INDEX, build_examples, examples_fingerprint, tokenize_example
from trainers.task_sft.leakage import find_leaks
from trainers.task_sft.recipe import LeakageGuard, SFTRecipe, load_sft_recipe

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def tokenizer(default_model_dir: Path) -> Any:
    from trainers.stages.common import load_tokenizer

    return load_tokenizer(default_model_dir)


def _ctx(task: str, protocol: str | None = None) -> tuple[Any, PromptContext]:
    spec = CATALOG.task(task)
    name, options = spec.protocol(protocol)
    return PROTOCOLS.get(name), PromptContext(FORMATS.get(spec.format), options, language=spec.language)


# --- naming and recipe ---------------------------------------------------------------------

def test_protocol_names() -> None:
    assert is_sft("sft") and is_sft("sft+loglik") and not is_sft("loglik") and not is_sft(None)
    assert scoring_protocol("sft") is None and scoring_protocol("sft+ner") == "ner"
    for bad in ("sft+", "sft+sft", "sft+sft+loglik"):
        with pytest.raises(HarnessError, match="expected sft or sft"):
            scoring_protocol(bad)
    inner, ctx = _ctx("medqa")
    assert SFTProtocol(inner).label(ctx) == "sft+loglik"
    assert SFTProtocol(inner, {"recipe": "r"}).record_info(ctx) == {"sft": {"recipe": "r"}}


@pytest.mark.parametrize(("text", "match"), [
    ("method: lora\nmax_step: 10\n", r"r\.yaml: max_step: Extra inputs are not permitted"),
    ("method: prefix\n", r"r\.yaml: method: .*'lora', 'full' or 'qlora'.*got 'prefix'"),
    ("leakage: {on_leak: ignore}\n", r"leakage\.on_leak"),
    ("train: {max_steps: 5}\n", r"train\.max_steps: set max_steps at the top level"),
    ("train: {warmup_stepz: 5}\n", r"train\.warmup_stepz: unknown IFTConfig option .*warmup_steps"),
])
def test_recipe_errors_name_file_and_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_sft_recipe(path)


def test_recipe_fields_are_read(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("method: full\nmax_steps: 7\nlearning_rate: 1.0e-5\ntrain: {warmup_steps: 2}\n")
    recipe = load_sft_recipe(path)
    assert (recipe.method, recipe.max_steps, recipe.learning_rate) == ("full", 7, 1e-5)
    assert recipe.train == {"warmup_steps": 2}
    assert recipe.fingerprint() != SFTRecipe().fingerprint()
    assert recipe.fingerprint() == load_sft_recipe(path).fingerprint()


# --- training examples: the task's own prompt ------------------------------------------------

def test_loglik_example_is_the_scored_request_of_the_gold_choice(tokenizer: Any) -> None:
    protocol, ctx = _ctx("medmcqa")
    train = load_split(CATALOG.task("medmcqa"), "train", "bundled", None)
    (ex,) = build_examples(protocol, train[:1], ctx, "medmcqa")
    sample = train[0]
    assert isinstance(sample.target, int)
    gold = protocol.requests(sample, ctx)[sample.target]
    assert (ex.context, ex.continuation) == (gold.context, gold.continuation)
    assert ex.context.startswith(f"Question: {sample.input}\nChoices:\nA. ") and ex.context.endswith("Answer:")
    assert ex.continuation == f" {'ABCD'[sample.target]}"
    row = tokenize_example(ex, tokenizer)
    assert row is not None
    from harness.backends.tokenize import encode_pair

    context, continuation = encode_pair(tokenizer, gold.context, gold.continuation)
    assert row["input_ids"] == context + continuation  # exactly the tokens the backend scores
    assert [t for t in row["labels"] if t != IGNORE_INDEX] == continuation
    assert row["labels"][: len(context)] == [IGNORE_INDEX] * len(context)


def test_ner_example_is_the_chat_request_answered_with_the_gold_json(tokenizer: Any) -> None:
    protocol, ctx = _ctx("ner_ncbi_disease")
    train = load_split(CATALOG.task("ner_ncbi_disease"), "train", "bundled", None)
    sample = next(s for s in train if s.metadata["entities"])
    (ex,) = build_examples(protocol, [sample], ctx, "ner_ncbi_disease")
    (request,) = protocol.requests(sample, ctx)
    assert ex.messages[:-1] == request.messages
    assert ex.messages[-1].role == "assistant" and ex.messages[-1].content == sample.target
    assert json.loads(ex.messages[-1].content)[0]["text"] in str(sample.input)
    row = tokenize_example(ex, tokenizer)
    assert row is not None
    reply = tokenizer.decode([t for t in row["labels"] if t != IGNORE_INDEX])
    assert reply == f"{sample.target}<|im_end|>"  # the loss is on the reply and its end of turn only
    # the generation prompt the backend renders is the unlabelled head of the training example
    from harness.backends.tokenize import render_chat

    prompt = render_chat(tokenizer, [{"role": m.role, "content": m.content} for m in request.messages])
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert row["input_ids"][: len(head)] == head


def test_reasoning_protocols_cannot_be_trained_on() -> None:
    protocol, ctx = _ctx("medqa", "cot")
    sample = load_split(CATALOG.task("medqa"), "test", "bundled", None)[0]
    with pytest.raises(HarnessError, match="task 'medqa': protocol 'cot' cannot be fine-tuned on"):
        build_examples(protocol, [sample], ctx, "medqa")


def test_examples_fingerprint_follows_content_and_order() -> None:
    protocol, ctx = _ctx("medmcqa")
    train = load_split(CATALOG.task("medmcqa"), "train", "bundled", None)[:3]
    fp = examples_fingerprint(build_examples(protocol, train, ctx, "medmcqa"))
    assert fp == examples_fingerprint(build_examples(protocol, train, ctx, "medmcqa"))
    assert fp != examples_fingerprint(build_examples(protocol, train[::-1], ctx, "medmcqa"))


# --- the leakage guard -------------------------------------------------------------------------

def _mcqa(sid: str, question: str, choices: tuple[str, ...] = ("aspirin", "heparin", "warfarin", "insulin"),
          target: int = 0) -> Sample:
    return Sample(sid, question, choices, target)


VIGNETTE = ("A 45-year-old woman comes to the emergency department because of chest pain for 2 hours. Her "
            "temperature is 37.0°C, pulse is 90/min, respirations are 15/min, and oxygen saturation is 98% on "
            "room air. An ECG shows ST elevations in the inferior leads. Which of the following is the most "
            "appropriate next step in management?")


def test_find_leaks_identical_near_duplicate_and_stock_phrases() -> None:
    fmt = FORMATS.get("medqa")
    test = [_mcqa("t1", VIGNETTE), _mcqa("t2", "Which vitamin deficiency causes scurvy?", ("C", "D", "K", "A"))]
    other = ("A 70-year-old man is brought to the clinic because of a cough for 3 weeks. His temperature is "
             "38.1°C, pulse is 90/min, respirations are 15/min, and oxygen saturation is 98% on room air. A chest "
             "x-ray shows a cavitary lesion in the right upper lobe. Which of the following is the most likely "
             "diagnosis?")
    near = VIGNETTE.replace("45-year-old", "47-year-old").replace("2 hours", "3 hours")
    guard = LeakageGuard()
    assert find_leaks(fmt, [_mcqa("r1", other)], test, guard).leaks == []  # shares stock phrases only
    report = find_leaks(fmt, [_mcqa("r1", other), _mcqa("r2", near)], test, guard)
    assert [(x.test_id, x.train_id) for x in report.leaks] == [("t1", "r2")]
    short = find_leaks(fmt, [_mcqa("r3", "Which  vitamin deficiency causes SCURVY?", ("C", "D", "K", "A"))], test,
                       guard)
    assert [(x.test_id, x.train_id, x.how) for x in short.leaks] == [("t2", "r3", "identical")]  # < one window
    strict = find_leaks(fmt, [_mcqa("r1", other)], test, LeakageGuard(min_coverage=0.05))
    assert [x.test_id for x in strict.leaks] == ["t1"]  # the threshold is a setting


def _planted_task(tmp_path: Path, plant: bool) -> Path:
    """A task over local files: MedQA-style test items and train items (bundled MedMCQA train
    questions), with a copy of test item 2 planted in the train data when `plant`."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    test = load_split(CATALOG.task("medqa"), "test", "bundled", None)[:6]
    train = load_split(CATALOG.task("medmcqa"), "train", "bundled", None)
    rows = [s for s in train] + ([test[2]] if plant else [])

    def line(s: Sample) -> str:
        assert isinstance(s.target, int)
        return json.dumps({"question": s.input, "options": dict(zip("ABCD", s.choices, strict=True)),
                           "answer_idx": "ABCD"[s.target]}) + "\n"

    (data / "test.jsonl").write_text("".join(line(s) for s in test))
    (data / "train.jsonl").write_text("".join(line(s) for s in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "planted.yaml").write_text(
        "task: planted\nversion: 1\nformat: medqa\neval_split: test\n"
        "splits:\n"
        "  test: {local: {path: test.jsonl, reader: jsonl, record: medqa_options, options: {id_prefix: t}}}\n"
        "  train: {local: {path: train.jsonl, reader: jsonl, record: medqa_options, options: {id_prefix: tr}}}\n"
        "protocols: {loglik: {}, cot: {}}\ndefault_protocol: loglik\nmetrics: [accuracy]\n")
    return tasks


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_leakage_guard_fires_on_a_planted_test_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = _planted_task(tmp_path, plant=True)
    argv = ["run", "--tasks", "planted", "--protocol", "sft", "--include-tasks", str(tasks), "--data-dir",
            str(tmp_path / "data"), "--output", str(tmp_path / "run"), "--quiet", "--no-cache"]
    rc, err = _run(argv, capsys)
    assert rc == 2
    assert ("error: task 'planted': 1 test item(s) of split 'test' are in its train data "
            "(e.g. test t-00002 in train tr-00020, identical)") in err
    assert "on_leak: drop" in err
    assert not (tmp_path / "run").exists()  # refused before any training or run folder


def test_on_leak_drop_trains_without_the_planted_item(tmp_path: Path, default_model_dir: Path) -> None:
    from trainers.task_sft.flow import prepare_task

    tasks = _planted_task(tmp_path, plant=True)
    recipe = SFTRecipe(leakage=LeakageGuard(on_leak="drop"), max_train_examples=None)
    config = RunConfig(tasks=("planted",), protocol="sft", task_dirs=(tasks,), data_dir=tmp_path / "data",
                       output=tmp_path / "run", sft_recipe=recipe.model_dump(mode="json"))
    from trainers.stages.common import load_tokenizer

    task = prepare_task(config, load_catalog(config.task_dirs), "planted", None, "local", recipe,
                        load_tokenizer(default_model_dir), "base")
    assert task.dropped_leaked == 1 and task.n_train_items == 21 and len(task.rows) == 20
    assert "tr-00020" not in {e.id for e in task.examples}
    assert task.plan.key == "planted|sft+loglik|0shot"
    zero_shot = plan_task(CATALOG.task("medqa"), config.model_copy(update={"protocol": None}), "bundled")
    assert task.plan.fingerprint("s") != zero_shot.fingerprint("s")


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "mmlu_anatomy", "--protocol", "sft", "--data-source", "bundled"],
     "task 'mmlu_anatomy' has no train split (its splits: dev, test); --protocol sft fine-tunes"),
    (["--tasks", "medqa", "--protocol", "sft", "--data-source", "local"],
     "task 'medqa': cannot load its train split (local): local data needs --data-dir"),
    (["--tasks", "medmcqa", "--protocol", "sft+cot", "--data-source", "bundled"],
     "task 'medmcqa': protocol 'cot' cannot be fine-tuned on"),
    (["--tasks", "medmcqa", "--protocol", "sft", "--data-source", "bundled", "--num-fewshot", "2"],
     "--protocol sft scores the fine-tuned model zero-shot"),
    (["--tasks", "medmcqa", "--protocol", "sft", "--backend", "openai", "--data-source", "bundled"],
     "backend 'openai' cannot score them"),
    (["--tasks", "medmcqa", "--sft-recipe", "r.yaml"], "--sft-recipe needs --protocol sft"),
])
def test_refusals_come_before_any_training(argv: list[str], message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = _run(["run", *argv, "--output", str(tmp_path / "run"), "--quiet", "--no-cache"], capsys)
    assert rc == 2 and message in err, err
    assert not (tmp_path / "run").exists()


def test_medqa_train_split_reads_the_self_biorag_subset(shared_data: Path) -> None:
    spec = CATALOG.task("medqa")
    train = load_split(spec, "train", "local", shared_data)
    assert len(train) == 756  # the 4-option questions of the 802 (46 have 5 options)
    assert all(len(s.choices) == 4 and isinstance(s.target, int) for s in train)
    first = train[0]
    assert first.input.startswith("A 3-month-old baby died suddenly at night while asleep.")
    assert first.choices[first.target] == "Placing the infant in a supine position on a firm mattress while sleeping"
    report = find_leaks(FORMATS.get("medqa"), train, load_split(spec, "test", "local", shared_data), LeakageGuard())
    assert report.leaks == []  # shared vignette phrasing, but no test question is in the subset


# --- end to end: the real default model, a small step budget ----------------------------------

@pytest.fixture
def _one_thread() -> Iterator[None]:
    """Training a tiny model on a shared CPU is several times faster on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.usefixtures("_one_thread")
def test_sft_end_to_end_trains_scores_records_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("recipe: e2e\nmax_steps: 12\nlearning_rate: 1.0e-3\nbatch_size: 4\nloss_examples: 8\n")
    out = tmp_path / "run"
    argv = ["run", "--tasks", "medmcqa", "--protocol", "sft", "--sft-recipe", str(recipe_file), "--data-source",
            "bundled", "--limit", "8", "--output", str(out), "--quiet", "--no-cache"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished"
    result = record["tasks"]["medmcqa|sft+loglik|0shot"]
    assert result["protocol"] == "sft+loglik" and result["n_shot"] == 0 and result["split"] == "dev"
    assert result["metrics"]["accuracy"]["n_scored"] == 8
    sft = result["extra"]["sft"]
    recipe = load_sft_recipe(recipe_file)
    assert sft["recipe"] == recipe.model_dump(mode="json") and sft["recipe_hash"] == recipe.fingerprint()
    examples = [json.loads(line) for line in Path(sft["train_examples_file"]).read_text().splitlines()]
    assert len(examples) == sft["train_examples"] == 20 and sft["train_source"] == "bundled"
    from harness.types import stable_hash

    assert sft["train_data_fingerprint"] == stable_hash(examples)
    assert sft["leakage"]["test_items_checked"] == 50 and sft["leakage"]["test_items_in_train"] == 0
    checkpoint = Path(sft["checkpoint"])
    assert checkpoint.parent.parent == out / "sft" and list(checkpoint.glob("*.safetensors"))
    assert Path(sft["adapter"]).is_dir() and sft["method"] == "lora" and sft["steps"] == 12
    assert sft["trainable_params"] < sft["total_params"] / 10
    from harness.backends.fingerprint import folder_fingerprint

    assert sft["checkpoint_fingerprint"] == folder_fingerprint(checkpoint) != sft["base_model_fingerprint"]
    assert record["model"]["fingerprint"].startswith(sft["base_model_fingerprint"])  # the row is the base model
    # the tuned model's loss on held-in train items fell
    loss = sft["heldin_loss"]
    assert loss["examples"] == 8 and loss["after"] < loss["before"] * 0.8, loss
    assert set(sft["versions"]) == {"torch", "transformers", "peft", "trl"} and sft["seed"] == 1234
    assert "held-in loss" in printed and str(checkpoint) in printed
    # the task fingerprint keeps it apart from zero-shot results of the same task and data
    assert result["task_fingerprint"] != _zero_shot_fingerprint(tmp_path)

    # a run that died after training and part-way through scoring: no retraining, scoring resumes
    stage = checkpoint.parent / "stage.json"
    stamp = stage.stat().st_mtime_ns
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join(lines[:3]) + "\n")
    (out / "run.json").unlink()
    assert main(argv) == 0
    again = json.loads((out / "run.json").read_text())["tasks"]["medmcqa|sft+loglik|0shot"]
    assert again["extra"]["sft"]["reused_checkpoint"] is True and stage.stat().st_mtime_ns == stamp
    assert again["metrics"]["accuracy"] == result["metrics"]["accuracy"]


def _zero_shot_fingerprint(tmp_path: Path) -> str:
    from conftest import ScriptedBackend

    config = RunConfig(tasks=("medmcqa",), data_source="bundled", limit=8, output=tmp_path / "zero")
    record = Runner(config, backend=ScriptedBackend()).run()
    return record.tasks["medmcqa|loglik|0shot"].task_fingerprint
